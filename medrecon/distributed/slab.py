"""A z-slab of a volume shared out over the processes of a ``torch.distributed`` group.

The ``n`` slices of a ``[Z, Y, X]`` volume are split into ``world`` contiguous slabs, as evenly
as possible (the first ``n % world`` ranks hold one slice more); rank ``r`` holds slices
``[lo, hi)``. The 2D prior and the slice-wise physics act on a slab alone; what couples slices
goes through a :class:`Slab`:

- :meth:`Slab.all_gather`: per-slice partial values of whole-volume scalars (CG inner products
  and norms, data residuals, power iteration norms), gathered in slice order and summed by
  :func:`medrecon.distributed.reduce.ordered_sum`, so no result depends on the number of ranks;
- :meth:`Slab.from_next` / :meth:`Slab.from_previous`: the one halo slice of ``D_z`` and of its
  adjoint, exchanged with the neighbouring rank at every application;
- :meth:`Slab.gather`, :meth:`Slab.broadcast_object`: results and small objects.

A :class:`Slab` with ``world == 1`` (:meth:`Slab.whole`) does no communication; solvers and
samplers take ``slab=None`` for the single-process path, which computes exactly what N ranks
compute together.
Time spent inside the collectives (including waiting for slower ranks) adds up in
:attr:`Slab.comm_seconds`. Tensors may live on the CPU (gloo) or CUDA (NCCL); complex tensors
travel as their real views.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch
import torch.distributed as dist


def slab_bounds(n: int, world: int) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` of ``world`` contiguous slabs of ``n`` slices, sizes differing by <= 1."""
    if world < 1 or n < world:
        raise ValueError(f"cannot split {n} slices over {world} processes (need 1 <= processes "
                         f"<= slices)")
    base, extra = divmod(n, world)
    bounds, lo = [], 0
    for r in range(world):
        hi = lo + base + (1 if r < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _real(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


class Slab:
    """Rank ``rank`` of ``world`` holding slices ``[lo, hi)`` of an ``n``-slice volume.

    ``group`` is the ``torch.distributed`` process group (None: the default group); it must be
    initialised when ``world > 1``.
    """

    def __init__(self, n: int, rank: int = 0, world: int = 1, group: Any = None) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside 0..{world - 1}")
        self.n, self.rank, self.world, self.group = int(n), int(rank), int(world), group
        self.bounds = slab_bounds(self.n, self.world)
        self.lo, self.hi = self.bounds[self.rank]
        self.comm_seconds = 0.0

    @classmethod
    def whole(cls, n: int) -> "Slab":
        """The single-process slab: all ``n`` slices, no communication."""
        return cls(n, 0, 1)

    @classmethod
    def of_group(cls, n: int, group: Any = None) -> "Slab":
        """This process's slab in an initialised process group."""
        return cls(n, dist.get_rank(group), dist.get_world_size(group), group)

    @property
    def count(self) -> int:
        """Slices held by this rank."""
        return self.hi - self.lo

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    @property
    def is_last(self) -> bool:
        return self.rank == self.world - 1

    def __repr__(self) -> str:
        return f"Slab(rank {self.rank}/{self.world}: slices [{self.lo}, {self.hi}) of {self.n})"

    def take(self, full: torch.Tensor, per_slice: int = 1) -> torch.Tensor:
        """This rank's rows of a whole-volume tensor whose dim 0 has ``per_slice`` rows per slice
        (a view)."""
        return full[self.lo * per_slice:self.hi * per_slice]

    def global_rows(self, local_rows: int) -> int:
        """Rows of the whole volume for a local tensor with ``local_rows`` rows (dim 0)."""
        if local_rows % self.count:
            raise ValueError(f"{local_rows} rows are not a whole number of rows per slice for "
                             f"{self.count} slices")
        return local_rows // self.count * self.n

    # -- collectives ------------------------------------------------------------------------
    def _timed(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.comm_seconds += time.perf_counter() - t0

    def tensor_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of ``t`` over all ranks (``t`` itself when ``world == 1``), in the
        backend's order: for tensors that need not be bit-exact across process counts, such as
        the gradients of an adapter. Scalars of the solvers use the ordered per-slice sums of
        :mod:`medrecon.distributed.reduce` instead."""
        if not self.distributed:
            return t
        out = t.clone()
        self._timed(dist.all_reduce, _real(out), op=dist.ReduceOp.SUM, group=self.group)
        return out

    def max_int(self, value: int) -> int:
        """The largest ``value`` over all ranks (used to agree on stopping)."""
        if not self.distributed:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=self._comm_device())
        self._timed(dist.all_reduce, t, op=dist.ReduceOp.MAX, group=self.group)
        return int(t.item())

    def _comm_device(self) -> torch.device:
        backend = dist.get_backend(self.group)
        if backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _exchange(self, send: torch.Tensor, to: Optional[int], source: Optional[int]
                  ) -> Optional[torch.Tensor]:
        send = send.contiguous()
        recv = torch.empty_like(send) if source is not None else None
        ops = []
        if to is not None:
            ops.append(dist.P2POp(dist.isend, _real(send), self._global_rank(to), self.group))
        if recv is not None:
            ops.append(dist.P2POp(dist.irecv, _real(recv), self._global_rank(source), self.group))
        if ops:
            def run() -> None:
                for req in dist.batch_isend_irecv(ops):
                    req.wait()
            self._timed(run)
        return recv

    def _global_rank(self, rank: int) -> int:
        return rank if self.group is None else dist.get_global_rank(self.group, rank)

    def from_next(self, first: torch.Tensor, circular: bool) -> Optional[torch.Tensor]:
        """Send this rank's first slice(s) ``first`` to the previous rank and return the next
        rank's (the slice after ``hi``); None on the last rank unless ``circular`` (then rank 0's
        first slice). Every rank must call it (a collective)."""
        if not self.distributed:
            return first.clone() if circular else None
        prev = self.rank - 1 if self.rank > 0 else (self.world - 1 if circular else None)
        nxt = self.rank + 1 if self.rank < self.world - 1 else (0 if circular else None)
        return self._exchange(first, prev, nxt)

    def from_previous(self, last: torch.Tensor, circular: bool) -> Optional[torch.Tensor]:
        """Send this rank's last slice(s) ``last`` to the next rank and return the previous
        rank's (the slice before ``lo``); None on rank 0 unless ``circular`` (then the last
        rank's last slice). A collective."""
        if not self.distributed:
            return last.clone() if circular else None
        nxt = self.rank + 1 if self.rank < self.world - 1 else (0 if circular else None)
        prev = self.rank - 1 if self.rank > 0 else (self.world - 1 if circular else None)
        return self._exchange(last, nxt, prev)

    def _padded(self, t: torch.Tensor, rows: int) -> torch.Tensor:
        if t.shape[0] == rows:
            return t.contiguous()
        pad = torch.zeros((rows - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
        return torch.cat([t, pad]).contiguous()

    def _rows(self, t: torch.Tensor) -> tuple[int, list[int]]:
        per = t.shape[0] // self.count
        if per * self.count != t.shape[0]:
            raise ValueError(f"a slab tensor must have a whole number of rows per slice, got "
                             f"{t.shape[0]} rows for {self.count} slices")
        return per, [(hi - lo) * per for lo, hi in self.bounds]

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """The whole-volume tensor (dim 0 concatenated in rank order) on every rank."""
        if not self.distributed:
            return t
        _, rows = self._rows(t)
        width = max(rows)
        parts = [torch.empty((width, *t.shape[1:]), dtype=t.dtype, device=t.device)
                 for _ in range(self.world)]
        self._timed(dist.all_gather, [_real(p) for p in parts], _real(self._padded(t, width)),
                    group=self.group)
        return torch.cat([p[:r] for p, r in zip(parts, rows)])

    def gather(self, t: torch.Tensor, root: int = 0) -> Optional[torch.Tensor]:
        """The whole-volume tensor on rank ``root`` (None elsewhere). A collective."""
        if not self.distributed:
            return t
        _, rows = self._rows(t)
        width = max(rows)
        mine = self._padded(t, width)
        parts = ([torch.empty_like(mine) for _ in range(self.world)]
                 if self.rank == root else None)
        self._timed(dist.gather, _real(mine), [_real(p) for p in parts] if parts else None,
                    dst=self._global_rank(root), group=self.group)
        if parts is None:
            return None
        return torch.cat([p[:r] for p, r in zip(parts, rows)])

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """``obj`` of rank ``root`` on every rank (pickled: small objects only)."""
        if not self.distributed:
            return obj
        box = [obj]
        self._timed(dist.broadcast_object_list, box, src=self._global_rank(root),
                    group=self.group)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (pickled: small objects only)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        self._timed(dist.all_gather_object, out, obj, group=self.group)
        return out
