"""Classical reconstructions on medrecon's operators: SIRT, CGLS, ADMM-TV, zero-filled, SENSE.

All take an operator ``A`` (:class:`~medrecon.physics.operator.LinearOperator`) and data ``y``
shaped ``(Z, *A.out_shape[1:])`` and return an image stack ``(Z, *A.in_shape[1:])``.
FBP lives in :mod:`medrecon.solvers.fbp` because it needs the CT geometry.

Distributed over z-slabs (``slab``: a :class:`~medrecon.distributed.slab.Slab`), ``A`` and ``y``
are this rank's slices; CGLS and ADMM-TV sum their inner products over all slices in slice order
(:mod:`medrecon.distributed.reduce`) and exchange the halo slices of ``D_z``; SIRT, SENSE
(per-slice CG) and the zero-filled image need no communication.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from medrecon.progress import tqdm

from medrecon.distributed.reduce import volume_norm_sq
from medrecon.errors import UserError
from medrecon.physics.operator import LinearOperator, operator_norm
from medrecon.solvers.admm import AdmmTV
from medrecon.solvers.cg import conjugate_gradient
from medrecon.solvers.tv import FiniteDifference

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab


def _n_slices(op: LinearOperator, y: torch.Tensor) -> int:
    return int(y.shape[0])


@torch.no_grad()
def sirt(op: LinearOperator, y: torch.Tensor, iterations: int = 100, x0: Optional[torch.Tensor] = None,
         nonnegative: bool = True, progress: bool = False) -> torch.Tensor:
    """SIRT: ``x <- x + C A^T R (y - A x)`` with ``R = 1 / (A 1)``, ``C = 1 / (A^T 1)`` (real data).

    With ``nonnegative`` the iterate is clipped at 0 after each step (attenuation is >= 0).
    """
    if y.is_complex():
        raise ValueError("SIRT is for real (CT) data; use sense or cgls for complex data")
    ones_img = torch.ones((_n_slices(op, y), *op.in_shape[1:]), dtype=op.in_dtype, device=op.device)
    row = op.forward(ones_img)
    col = op.adjoint(torch.ones_like(y))
    r_inv = torch.where(row > 1e-8, 1.0 / row.clamp_min(1e-8), torch.zeros_like(row))
    c_inv = torch.where(col > 1e-8, 1.0 / col.clamp_min(1e-8), torch.zeros_like(col))
    x = torch.zeros_like(ones_img) if x0 is None else x0.clone()
    for _ in tqdm(range(iterations), desc="SIRT", disable=not progress, leave=False):
        x = x + c_inv * op.adjoint(r_inv * (y - op.forward(x)))
        if nonnegative:
            x.clamp_(min=0)
    return x


@torch.no_grad()
def cgls(op: LinearOperator, y: torch.Tensor, iterations: int = 20, x0: Optional[torch.Tensor] = None,
         progress: bool = False, slab: Optional["Slab"] = None) -> torch.Tensor:
    """CGLS: conjugate gradients on the least-squares problem ``min ||A x - y||^2`` (real or complex).

    Early stopping (``iterations``) is the regularisation.
    """
    def norm_sq(v: torch.Tensor) -> float:
        return float(volume_norm_sq(v, slab).float())

    x = torch.zeros((_n_slices(op, y), *op.in_shape[1:]), dtype=op.in_dtype, device=op.device) \
        if x0 is None else x0.clone()
    r = y - op.forward(x)
    s = op.adjoint(r)
    p = s.clone()
    gamma = norm_sq(s)
    for _ in tqdm(range(iterations), desc="CGLS", disable=not progress, leave=False):
        if gamma == 0.0:
            break
        q = op.forward(p)
        qq = norm_sq(q)
        if qq == 0.0:
            break
        alpha = gamma / qq
        x = x + alpha * p
        r = r - alpha * q
        s = op.adjoint(r)
        gamma_new = norm_sq(s)
        p = s + (gamma_new / gamma) * p
        gamma = gamma_new
    return x


def admm_tv(op: LinearOperator, y: torch.Tensor, lam: float, rho: float, iterations: int = 50,
            cg_iterations: int = 5, tv_axes: Sequence[int] = (0,), boundary: str = "neumann",
            x0: Optional[torch.Tensor] = None, progress: bool = False,
            nonnegative: bool = False, slab: Optional["Slab"] = None) -> torch.Tensor:
    """ADMM-TV: ``min ||y - A x||^2 / 2 + lambda ||D x||_1`` with ``D`` along ``tv_axes``
    (``(0,)``: z only, as DiffusionMBIR; ``(0, 1, 2)``: anisotropic 3D), optionally with ``x >= 0``.

    Starts from ``x0`` (CGLS-like zero start when None).
    """
    n = _n_slices(op, y)
    diff = FiniteDifference(n, op.in_shape[1:], tv_axes, boundary, op.in_dtype, op.device, slab)
    solver = AdmmTV(op, y, diff, lam, rho, cg_iterations, nonnegative, slab=slab)
    start = torch.zeros((n, *op.in_shape[1:]), dtype=op.in_dtype, device=op.device) if x0 is None else x0
    return solver.run(start, iterations, progress)


@torch.no_grad()
def zero_filled(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """``A^H y``: for SENSE the coil-combined zero-filled image."""
    return op.adjoint(y)


@torch.no_grad()
def sense(op: LinearOperator, y: torch.Tensor, iterations: int = 30, l2: float = 0.0,
          x0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SENSE by CG on ``(A^H A + l2 I) x = A^H y``, each slice its own system (batched CG)."""
    aty = op.adjoint(y)
    normal = (lambda v: op.normal(v) + l2 * v) if l2 > 0 else op.normal
    return conjugate_gradient(normal, aty, x0=x0, iterations=iterations, batched=True)


def first_slice_norm_sq(op: LinearOperator, slab: Optional["Slab"] = None) -> float:
    """``||A||^2`` of one slice (power iteration), the scale of ADMM-TV's relative weights: of
    any slice for a slice-independent operator (``in_shape[0]`` None), else of the volume's
    first slice (computed on rank 0 and shared when distributed)."""
    if op.in_shape[0] is None:
        return operator_norm(op) ** 2
    if slab is None or not slab.distributed:
        return operator_norm(op.subset(slice(0, 1))) ** 2
    value = operator_norm(op.subset(slice(0, 1))) ** 2 if slab.is_first else None
    return float(slab.broadcast_object(value))


def tv_reconstruction(op: LinearOperator, y: torch.Tensor, s: Any, progress: bool = False,
                      slab: Optional["Slab"] = None) -> torch.Tensor:
    """ADMM-TV of working-unit data ``y`` with :class:`~medrecon.config.TVSettings` ``s``
    (``lam = s.lam_rel ||A||^2``, ``rho = s.rho_rel ||A||^2`` with the one-slice norm)."""
    norm2 = first_slice_norm_sq(op, slab)
    axes = {"z": (0,), "3d": (0, 1, 2)}.get(s.axes)
    if axes is None:
        raise UserError(f"tv: axes must be 'z' or '3d', got {s.axes!r}")
    return admm_tv(op, y, lam=s.lam_rel * norm2, rho=s.rho_rel * norm2, iterations=s.iterations,
                   cg_iterations=s.cg_iterations, tv_axes=axes, boundary=s.boundary,
                   progress=progress, nonnegative=s.nonnegative, slab=slab)
