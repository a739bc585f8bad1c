"""One measurement reconstructed by the N processes of a group: rank 0 reads and writes.

Rank 0 runs the command as usual (reads the measurement, writes every output) through a
:class:`SlabDriver`, whose :meth:`~SlabDriver.run_method` stands in for
:func:`medrecon.methods.run_method`: it sends every rank its z-slab of the measurement
(:func:`split_measurement`), reconstructs its own slab, and gathers the volume. The other ranks
:func:`serve`: they wait for a job, reconstruct their slab, send it back, until rank 0 stops them.

An error raised by a job on any rank (bad settings, a refused resume, an interrupt agreed after a
sampler step) is shared when the ranks meet after the job and raised on every rank: a
:class:`~medrecon.errors.UserError` when it was one (the CLI prints one line), else a
``RuntimeError`` naming the rank. Rank 0 then stops the others, which leave with exit code 0:
the command's outcome is rank 0's (a launcher such as torchrun stops the rest of a group when one
process fails, and rank 0 must be left to report). An error between collectives on one rank
only (a crash) leaves the others waiting; the launcher then stops them.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch

from medrecon.config import make_settings, settings_dict
from medrecon.distributed.launch import ProcessGroup
from medrecon.distributed.slab import Slab
from medrecon.errors import Interrupted, UserError
from medrecon.io.measurements import Measurement
from medrecon.methods import DIFFUSION, LAST_INFO, check_method, run_method

# Arrays that hold one entry per slice when they have this many dimensions (else shared).
PER_SLICE_NDIM = {"mask": 3, "coil_maps": 4}
# Arrays only rank 0 needs (it writes the metrics).
ROOT_ONLY = ("reference",)


def split_measurement(m: Measurement, lo: int, hi: int) -> Measurement:
    """Slices ``[lo, hi)`` of ``m``: the data and the per-slice arrays cut, shared arrays kept,
    the reference dropped; geometry and attributes unchanged."""
    n = m.data.shape[0]
    arrays = {}
    for name, arr in m.arrays.items():
        if name in ROOT_ONLY:
            continue
        per_slice = PER_SLICE_NDIM.get(name) == arr.ndim and arr.shape[0] == n
        arrays[name] = np.ascontiguousarray(arr[lo:hi]) if per_slice else arr
    return Measurement(task=m.task, data=np.ascontiguousarray(m.data[lo:hi]), geometry=m.geometry,
                       arrays=arrays, attrs=m.attrs)


def _scatter_parts(group: ProcessGroup, slab: Slab, m: Optional[Measurement]) -> Measurement:
    import torch.distributed as dist

    parts = [split_measurement(m, lo, hi) for lo, hi in slab.bounds] if m is not None else None
    box: list[Any] = [None]
    t0 = time.perf_counter()
    dist.scatter_object_list(box, parts, src=0)
    slab.comm_seconds += time.perf_counter() - t0
    return box[0]


def _run_job(group: ProcessGroup, job: dict, part: Measurement, slab: Slab
             ) -> tuple[Optional[torch.Tensor], dict]:
    """This rank's share of one job; returns the gathered volume on rank 0 (None elsewhere) and
    rank 0's run details. Raises the UserError of any rank on every rank."""
    method = job["method"]
    error: Optional[tuple[str, str]] = None
    x, info, failure = None, {}, None
    t0 = time.perf_counter()
    try:
        settings = make_settings(method, job["settings"], task=part.task)
        LAST_INFO.clear()
        progress = job["progress"] if (method in DIFFUSION or group.is_root) else False
        x = run_method(part, method, settings, device=group.device, progress=progress,
                       backend=job["backend"], slab=slab)
    except Exception as exc:  # noqa: BLE001 - shared with every rank below, then raised
        failure = exc
        kind = ("interrupted" if isinstance(exc, Interrupted) else
                "user" if isinstance(exc, UserError) else "other")
        error = (kind, str(exc) if kind != "other" else
                 f"rank {slab.rank}: {type(exc).__name__}: {exc}")
    errors = slab.all_gather_object(error)
    first = next((e for e in errors if e), None)
    if first is not None:
        kind, message = first
        raise {"interrupted": Interrupted, "user": UserError}.get(kind, RuntimeError)(message) \
            from failure
    assert x is not None
    mine = {"rank": slab.rank, "slices": [slab.lo, slab.hi], "seconds": time.perf_counter() - t0,
            "comm_seconds": slab.comm_seconds, "device": str(group.device),
            **{k: LAST_INFO[k] for k in ("time_network", "time_physics") if k in LAST_INFO}}
    std = LAST_INFO.get("std")
    full = slab.gather(x.contiguous())
    full_std = slab.gather(std.contiguous()) if std is not None else None
    ranks = slab.all_gather_object(mine)
    if group.is_root:
        info = dict(LAST_INFO)
        info.update(std=full_std, ranks=ranks)
    return full, info


class SlabDriver:
    """Rank 0's side: :meth:`run_method` reconstructs a whole measurement with every rank."""

    def __init__(self, group: ProcessGroup) -> None:
        if not group.is_root:
            raise ValueError("the driver runs on rank 0")
        self.group = group
        self.busy = False

    def run_method(self, m: Measurement, method: str, settings: Optional[Any] = None,
                   device: Any = None, progress: bool = False, backend: str = "auto",
                   **_: Any) -> torch.Tensor:
        """As :func:`medrecon.methods.run_method` (``device`` is each rank's own); the result is
        the whole volume, and :data:`medrecon.methods.LAST_INFO` holds the gathered details."""
        check_method(m, method)
        n = int(m.data.shape[0])
        if n < self.group.world:
            raise UserError(f"{n} slices cannot be shared out over {self.group.world} processes; "
                            f"start at most {n}")
        if settings is not None and not isinstance(settings, dict):
            settings = settings_dict(settings)
        job = {"method": method, "settings": settings, "progress": bool(progress),
               "backend": backend, "n": n}
        self.busy = True
        slab = Slab(n, 0, self.group.world)
        slab.broadcast_object(job)
        part = _scatter_parts(self.group, slab, m)
        try:
            full, info = _run_job(self.group, job, part, slab)
        except (UserError, RuntimeError):
            self.busy = False                 # raised on every rank: all are between jobs
            raise
        self.busy = False
        LAST_INFO.clear()
        LAST_INFO.update(info)
        assert full is not None
        return full

    def close(self) -> None:
        """Release the other ranks (unless a job was cut off midway: they wait in a collective
        and the launcher stops them)."""
        if not self.busy:
            Slab(self.group.world, 0, self.group.world).broadcast_object({"stop": True})

    def __enter__(self) -> "SlabDriver":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()


def serve(group: ProcessGroup) -> int:
    """A rank > 0: reconstruct the slab of every job rank 0 sends until it stops us; returns 0
    (rank 0 reports the command's outcome)."""
    while True:
        job = Slab(group.world, group.rank, group.world).broadcast_object(None)
        if "stop" in job:
            return 0
        slab = Slab(job["n"], group.rank, group.world)
        part = _scatter_parts(group, slab, None)
        try:
            _run_job(group, job, part, slab)
        except (UserError, RuntimeError):
            continue                          # rank 0 reports it; wait for the next job or stop
