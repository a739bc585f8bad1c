"""The lambda/rho convention of medrecon's ADMM-TV(z) inside the diffusion samplers.

The ADMM problem is ``min_x ||y - A x||^2 / 2 + lambda ||D_z x||_1`` with the penalty ``rho``
in the x-update ``(A^H A + rho D_z^T D_z) x = A^H y + rho D_z^T (z - u)``. Scaling ``A`` by ``c``
scales the data term by ``c^2``; the same reconstruction needs ``lambda`` and ``rho`` scaled by
``c^2`` too. medrecon's operators have exact adjoints and physical units (CT: line integrals in
mm, so ``||A||^2`` grows with the number of views, the image size and the pixel size; MRI:
orthonormal FFT and coil maps with ``sum |S|^2 = 1``, so ``||A|| = 1``). Hence the convention:

    lambda = lambda_rel * ||A||^2,    rho = rho_rel * ||A||^2,    gamma = gamma_rel / ||A||^2

with ``||A||`` the per-slice operator norm (largest singular value, power iteration:
:func:`medrecon.physics.operator.operator_norm`) and images in the prior's units (its [0, 1]
window). ``lambda_rel`` and ``rho_rel`` are then independent of the number of views, the pixel
size and the detector spacing. For parallel-beam CT with unit pixels ``||A||^2 ~ 0.97-1.0 x
n_views x image width`` (measured: 1986 for 8 views at 256x256, 993 at 128x128).

The published values. DiffusionMBIR/DDS use ``A^T_pub = pi / (2 N_views) A^T`` (an unfiltered
backprojection, not the adjoint) with unit-pixel line integrals on 256x256 slices in [0, 1].
Their x-update ``(A^T_pub A + rho_pub D^T D) x = A^T_pub y + ...`` divided by
``pi / (2 N_views)`` is the exact-adjoint update with ``rho = rho_pub 2 N_views / pi``; the soft
threshold ``lambda_pub / rho_pub`` is then kept by ``lambda = lambda_pub 2 N_views / pi``. So

    lambda_rel = lambda_pub * 2 N_views / (pi ||A_256||^2),   rho_rel likewise,

which for 8 views (``||A_256||^2 = 1986.2``) gives lambda_rel = 1.026e-4, rho_rel = 0.02564, and
for the DDS 120-view limited-angle setting (``||A_256||^2 = 30173``, lambda_pub = 0.4)
lambda_rel = 1.013e-3, rho_rel = 0.02532. The DiffusionMBIR MRI values (orthonormal FFT,
``||A|| = 1``) carry over unchanged: lambda_rel = 0.005, rho_rel = 0.01.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from medrecon.errors import UserError
from medrecon.physics.operator import LinearOperator, operator_norm

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

# ||A||^2 of the published CT geometry: parallel beam, 256x256 unit pixels, 363 detector bins
# of unit width, measured with medrecon's ASTRA "linear" projector (operator_norm, 50 iterations).
PUBLISHED_CT_NORM_SQ = {8: 1986.24, 4: 1011.67, 2: 511.21, 120: 30172.65, 90: 23392.56}


def published_to_relative(lam_pub: float, rho_pub: float, n_views: int,
                          op_norm_sq_published: Optional[float] = None) -> tuple[float, float]:
    """``(lambda_rel, rho_rel)`` equivalent to published CT values (adjoint scaled by
    ``pi / (2 N_views)``) for ``n_views`` views at 256x256 (see the module docstring)."""
    norm_sq = op_norm_sq_published or PUBLISHED_CT_NORM_SQ.get(int(n_views))
    if norm_sq is None:
        raise UserError(f"no measured ||A||^2 for the published geometry with {n_views} views; "
                        "pass op_norm_sq_published")
    factor = 2.0 * n_views / (math.pi * norm_sq)
    return lam_pub * factor, rho_pub * factor


@dataclass(frozen=True)
class AdmmWeights:
    """Absolute ADMM weights for one operator (prior units) and the ``||A||^2`` they came from.

    ``gamma`` is the proximal step of ``(I + gamma A^H A) x = x0_hat + gamma A^H y`` (None: off).
    """

    lam: float
    rho: float
    gamma: Optional[float]
    op_norm_sq: float


def operator_norm_sq(op: LinearOperator, slab: Optional["Slab"] = None) -> float:
    """``||A||^2`` per slice by power iteration (deterministic: fixed seed, 50 iterations); over
    the whole volume of a slab-distributed operator with a fixed number of slices."""
    return float(operator_norm(op, n_slices=1, iterations=50, seed=0, slab=slab)) ** 2


def absolute_weights(op: LinearOperator, lam_rel: float, rho_rel: float,
                     gamma_rel: Optional[float] = None, op_norm_sq: Optional[float] = None,
                     slab: Optional["Slab"] = None) -> AdmmWeights:
    """``lambda = lam_rel ||A||^2``, ``rho = rho_rel ||A||^2``, ``gamma = gamma_rel / ||A||^2``.

    ``op_norm_sq`` skips the power iteration when already known; ``gamma_rel`` None or 0: no
    proximal term (``gamma = None``).
    """
    if lam_rel < 0 or rho_rel <= 0:
        raise UserError(f"need lam_rel >= 0 and rho_rel > 0, got {lam_rel}, {rho_rel}")
    if gamma_rel is not None and gamma_rel < 0:
        raise UserError(f"gamma_rel must be >= 0 (0 or None: off), got {gamma_rel}")
    norm_sq = operator_norm_sq(op, slab) if op_norm_sq is None else float(op_norm_sq)
    if not norm_sq > 0:
        raise UserError(f"the operator's norm is {norm_sq}: it maps everything to zero")
    gamma = gamma_rel / norm_sq if gamma_rel else None
    return AdmmWeights(lam_rel * norm_sq, rho_rel * norm_sq, gamma, norm_sq)
