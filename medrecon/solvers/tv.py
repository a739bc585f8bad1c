"""Finite differences and the soft threshold used by total-variation priors.

``FiniteDifference(axes)`` maps a stack ``[Z, Y, X]`` to ``[Z, K, Y, X]`` (one channel per axis in
``axes``; axis 0 is z, the slice axis). The difference is forward, ``(D v)_k = v_{k+1} - v_k``:
- ``boundary="neumann"`` (default): the last difference is 0 (no coupling across the ends).
- ``boundary="circular"``: the last slice is coupled to the first, as in the published
  DiffusionMBIR code (kept for reproduction only; it is a boundary artefact).
With ``axes=(0,)`` this is the ``D_z`` of DiffusionMBIR; ``axes=(0, 1, 2)`` gives anisotropic 3D TV.

On a z-slab of a volume shared out over processes (``slab``, a distributed
:class:`~medrecon.distributed.slab.Slab`), the stack is this rank's slices ``[lo, hi)``: the
forward difference needs the next rank's first slice and the adjoint the previous rank's last
``g`` slice; each application exchanges that one halo slice. Every entry is computed with the
same floating-point operations as in one process, so the result is bitwise the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import torch

from medrecon.physics.operator import LinearOperator

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

BOUNDARIES = ("neumann", "circular")


class FiniteDifference(LinearOperator):
    """Forward differences along ``axes`` of a ``[Z, Y, X]`` stack; output ``[Z, len(axes), Y, X]``.

    Along z the number of slices is fixed (``n_slices``, this rank's slices with a ``slab``)
    because the operator couples slices.
    """

    def __init__(self, n_slices: int, image_shape: Sequence[int], axes: Sequence[int] = (0,),
                 boundary: str = "neumann", dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", slab: Optional["Slab"] = None) -> None:
        if boundary not in BOUNDARIES:
            raise ValueError(f"unknown boundary {boundary!r}; choose from {BOUNDARIES}")
        axes = tuple(int(a) for a in axes)
        if not axes or any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be distinct values from (0, 1, 2), got {axes}")
        y, x = image_shape
        super().__init__((n_slices, y, x), (n_slices, len(axes), y, x), dtype, dtype, device)
        self.axes, self.boundary = axes, boundary
        if slab is not None and slab.distributed and slab.count != n_slices:
            raise ValueError(f"{slab} holds {slab.count} slices, not {n_slices}")
        self.slab = slab if slab is not None and slab.distributed else None

    def _subset(self, sl: slice) -> LinearOperator:
        """In-plane differences act slice by slice (the same operator); a difference along z
        couples the slices, so it has no restriction to some of them."""
        if 0 in self.axes:
            raise ValueError("FiniteDifference along z couples the slices; it cannot act on a "
                             f"subset {sl!r} of them (build one for those slices instead)")
        return self

    def _diff(self, v: torch.Tensor, axis: int) -> torch.Tensor:
        if axis == 0 and self.slab is not None:
            return self._diff_z_slab(v)
        n = v.shape[axis]
        d = torch.empty_like(v)
        torch.sub(v.narrow(axis, 1, n - 1), v.narrow(axis, 0, n - 1), out=d.narrow(axis, 0, n - 1))
        last = d.narrow(axis, n - 1, 1)
        if self.boundary == "neumann":
            last.zero_()
        else:
            torch.sub(v.narrow(axis, 0, 1), v.narrow(axis, n - 1, 1), out=last)
        return d

    def _diff_adjoint(self, g: torch.Tensor, axis: int) -> torch.Tensor:
        # (D^T g)_k = g_{k-1} - g_k, with g_{-1} = g_{n-1} (circular) or g_{-1} = g_{n-1} = 0 (Neumann)
        if axis == 0 and self.slab is not None:
            return self._diff_z_adjoint_slab(g)
        n = g.shape[axis]
        out = -g
        out.narrow(axis, 1, n - 1).add_(g.narrow(axis, 0, n - 1))
        if self.boundary == "neumann":
            out.narrow(axis, n - 1, 1).zero_()
            if n > 1:
                out.narrow(axis, n - 1, 1).add_(g.narrow(axis, n - 2, 1))
        else:
            out.narrow(axis, 0, 1).add_(g.narrow(axis, n - 1, 1))
        return out

    def _diff_z_slab(self, v: torch.Tensor) -> torch.Tensor:
        """Forward z-difference of this rank's slices; the last one uses the next rank's first."""
        assert self.slab is not None
        m = v.shape[0]
        after = self.slab.from_next(v[:1], circular=self.boundary == "circular")
        d = torch.empty_like(v)
        torch.sub(v[1:], v[:m - 1], out=d[:m - 1])
        if after is None:                       # the volume's last slice, Neumann
            d[m - 1:].zero_()
        else:
            torch.sub(after, v[m - 1:], out=d[m - 1:])
        return d

    def _diff_z_adjoint_slab(self, g: torch.Tensor) -> torch.Tensor:
        """Adjoint z-difference of this rank's slices; the first one uses the previous rank's last."""
        assert self.slab is not None
        m = g.shape[0]
        before = self.slab.from_previous(g[m - 1:], circular=self.boundary == "circular")
        out = -g
        out[1:].add_(g[:m - 1])
        if before is not None:
            out[:1].add_(before)
        if self.boundary == "neumann" and self.slab.is_last:    # g_{n-1} counts as 0
            out[m - 1:].zero_()
            if m > 1:
                out[m - 1:].add_(g[m - 2:m - 1])
            elif before is not None:
                out[m - 1:].add_(before)
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._diff(x, a) for a in self.axes], dim=1)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = self._diff_adjoint(y[:, 0], self.axes[0])
        for k, a in enumerate(self.axes[1:], start=1):
            out = out + self._diff_adjoint(y[:, k], a)
        return out


def soft_threshold(v: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """``sign(v) max(|v| - t, 0)``; for complex ``v`` the magnitude is shrunk and the phase kept."""
    if v.is_complex():
        mag = v.abs()
        return v * (torch.clamp(mag - threshold, min=0) / mag.clamp_min(torch.finfo(mag.dtype).tiny))
    return torch.sign(v) * torch.clamp(v.abs() - threshold, min=0)


def tv_norm(d: FiniteDifference, x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV ``||D x||_1`` (a scalar tensor)."""
    return d.forward(x).abs().sum()
