"""Conjugate gradients for Hermitian positive (semi-)definite systems, real or complex, batched.

Solves ``M x = b`` where ``M`` is given as a function (e.g. ``x -> A^H A x + rho D^T D x``).
Inner products are ``Re <a, b> = Re sum(conj(a) b)`` (``torch.vdot``), which is what makes CG
correct on complex data; the published DiffusionMBIR code used ``r^T r`` without conjugation.

With ``batched=True`` the systems of the slices ``x[k]`` are independent (``M`` acts slice by
slice) and every slice gets its own step sizes; otherwise the whole tensor is one system.
When the tensor is one z-slab of a volume shared out over processes, ``reduce`` sums the partial
inner products over all of them (:meth:`medrecon.distributed.slab.Slab.sum`), so every rank
takes the same steps as a single process would (batched systems need no reduction).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch


Reduce = Callable[[torch.Tensor], torch.Tensor]


def _dot(a: torch.Tensor, b: torch.Tensor, batched: bool, reduce: Optional[Reduce] = None
         ) -> torch.Tensor:
    """``Re <a, b>``: a scalar (summed by ``reduce`` over processes), or one value per slice
    (shape [Z, 1, ..., 1]) when batched."""
    prod = (a.conj() * b).real if a.is_complex() else a * b
    if not batched:
        total = prod.sum(dtype=torch.float64)
        return (total if reduce is None else reduce(total)).to(prod.dtype)
    return prod.sum(dim=tuple(range(1, a.dim())), keepdim=True)


@torch.no_grad()
def conjugate_gradient(normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                       x0: Optional[torch.Tensor] = None, iterations: int = 20, tol: float = 0.0,
                       batched: bool = False, reduce: Optional[Reduce] = None) -> torch.Tensor:
    """Approximately solve ``normal(x) = rhs``, warm-started at ``x0`` (zeros when None).

    Stops after ``iterations`` steps or when ``||r|| <= tol ||rhs||`` (for every slice when batched).
    ``reduce``: sums a scalar over the processes sharing a volume (not used when batched).
    Returns a new tensor with the shape and dtype of ``rhs``.
    """
    if batched:
        reduce = None
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - normal(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rr = _dot(r, r, batched, reduce)
    threshold = (tol**2) * _dot(rhs, rhs, batched, reduce) if tol > 0 else torch.zeros_like(rr)
    tiny = torch.finfo(rr.dtype).tiny
    for _ in range(iterations):
        if bool((rr <= threshold).all()):
            break
        mp = normal(p)
        pmp = _dot(p, mp, batched, reduce)
        active = rr > threshold
        alpha = torch.where(active & (pmp > tiny), rr / pmp.clamp_min(tiny), torch.zeros_like(rr))
        x = x + alpha * p
        r = r - alpha * mp
        rr_new = _dot(r, r, batched, reduce)
        beta = torch.where(active, rr_new / rr.clamp_min(tiny), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    return x
