"""Conjugate gradients for Hermitian positive (semi-)definite systems, real or complex, batched.

Solves ``M x = b`` where ``M`` is given as a function (e.g. ``x -> A^H A x + rho D^T D x``).
Inner products are ``Re <a, b> = Re sum(conj(a) b)`` (``torch.vdot``), which is what makes CG
correct on complex data; the published DiffusionMBIR code used ``r^T r`` without conjugation.

With ``batched=True`` the systems of the slices ``x[k]`` are independent (``M`` acts slice by
slice) and every slice gets its own step sizes; otherwise the whole tensor is one system.
The inner products of one system are ordered reductions
(:func:`medrecon.distributed.reduce.volume_inner`): per-slice float64 partial values summed in
slice order. When the tensor is one z-slab of a volume shared out over processes (``slab``), the
partial values of every rank are gathered first, so every rank takes exactly the steps a single
process takes (batched systems need no communication).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import torch

from medrecon.distributed.reduce import volume_inner

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab


def _dot(a: torch.Tensor, b: torch.Tensor, batched: bool, slab: Optional["Slab"] = None
         ) -> torch.Tensor:
    """``Re <a, b>``: a scalar of the whole volume (an ordered reduction over ``slab``), or one
    value per slice (shape [Z, 1, ..., 1]) when batched."""
    if not batched:
        return volume_inner(a, b, slab).to(a.real.dtype)
    prod = (a.conj() * b).real if a.is_complex() else a * b
    return prod.sum(dim=tuple(range(1, a.dim())), keepdim=True)


@torch.no_grad()
def conjugate_gradient(normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                       x0: Optional[torch.Tensor] = None, iterations: int = 20, tol: float = 0.0,
                       batched: bool = False, slab: Optional["Slab"] = None) -> torch.Tensor:
    """Approximately solve ``normal(x) = rhs``, warm-started at ``x0`` (zeros when None).

    Stops after ``iterations`` steps or when ``||r|| <= tol ||rhs||`` (for every slice when batched).
    ``slab``: this process's z-slab when the volume is shared out over processes (not used when
    batched).
    Returns a new tensor with the shape and dtype of ``rhs``.
    """
    if batched:
        slab = None
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - normal(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rr = _dot(r, r, batched, slab)
    threshold = (tol**2) * _dot(rhs, rhs, batched, slab) if tol > 0 else torch.zeros_like(rr)
    tiny = torch.finfo(rr.dtype).tiny
    for _ in range(iterations):
        if bool((rr <= threshold).all()):
            break
        mp = normal(p)
        pmp = _dot(p, mp, batched, slab)
        active = rr > threshold
        alpha = torch.where(active & (pmp > tiny), rr / pmp.clamp_min(tiny), torch.zeros_like(rr))
        x = x + alpha * p
        r = r - alpha * mp
        rr_new = _dot(r, r, batched, slab)
        beta = torch.where(active, rr_new / rr.clamp_min(tiny), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    return x
