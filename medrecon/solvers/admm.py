"""ADMM for  min_x  ||y - A x||^2 / 2 + lambda ||D x||_1  (scaled form, penalty rho > 0).

One iteration (ALGORITHMS.md section 1):

    x <- CG solve of (A^H A + rho D^T D) x = A^H y + rho D^T (z - u),  warm-started at x
    z <- soft_threshold(D x + u, lambda / rho)
    u <- u + D x - z

With ``nonnegative=True`` (real images, e.g. attenuation) the constraint x >= 0 is a second
split ``w = x`` with scaled dual ``v``: the x-update gains ``+ rho x`` on the left and
``+ rho (w - v)`` on the right, then ``w <- max(x + v, 0)`` and ``v <- v + x - w``.

:class:`AdmmTV` keeps ``A^H y`` and the split variables ``(z, u)`` in an :class:`AdmmState`, so a
diffusion sampler can run one iteration per diffusion step on its running estimate while the
state is shared across steps ("variable sharing"), and a classical solver simply loops.

On a z-slab of a volume shared out over processes (``slab``), ``x``, ``z``, ``u`` (and ``w``,
``v``) are this rank's slices, ``diff`` exchanges the halo slices, and CG's inner products and the
objective are ordered reductions over all slices (:mod:`medrecon.distributed.reduce`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
from medrecon.progress import tqdm

from medrecon.distributed.reduce import ordered_sum, slice_norm_sq, slice_sums
from medrecon.physics.operator import LinearOperator
from medrecon.solvers.cg import conjugate_gradient
from medrecon.solvers.tv import FiniteDifference, soft_threshold

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab


@dataclass
class AdmmState:
    """Split variable ``z = D x`` and scaled dual ``u`` (shaped like ``D x``); with the
    non-negativity constraint also ``w = x`` and its dual ``v`` (shaped like ``x``)."""

    z: torch.Tensor
    u: torch.Tensor
    w: Optional[torch.Tensor] = None
    v: Optional[torch.Tensor] = None


class AdmmTV:
    """ADMM-TV for a linear operator ``op`` and data ``y``, with difference operator ``diff``."""

    def __init__(self, op: LinearOperator, y: torch.Tensor, diff: FiniteDifference, lam: float,
                 rho: float, cg_iterations: int = 5, nonnegative: bool = False,
                 slab: Optional["Slab"] = None) -> None:
        if lam < 0 or rho <= 0:
            raise ValueError(f"ADMM-TV needs lambda >= 0 and rho > 0, got lambda={lam}, rho={rho}")
        if cg_iterations < 1:
            raise ValueError(f"cg_iterations must be >= 1, got {cg_iterations}")
        self.op, self.y, self.diff = op, y, diff
        if nonnegative and op.in_dtype.is_complex:
            raise ValueError("the non-negativity constraint needs a real image")
        self.lam, self.rho, self.cg_iterations = float(lam), float(rho), int(cg_iterations)
        self.nonnegative = bool(nonnegative)
        self.slab = slab if slab is not None and slab.distributed else None
        with torch.no_grad():
            self.aty = op.adjoint(y)

    def init_state(self, x: torch.Tensor) -> AdmmState:
        """State with ``z = D x`` and ``u = 0``."""
        with torch.no_grad():
            z = self.diff.forward(x)
        if self.nonnegative:
            return AdmmState(z=z, u=torch.zeros_like(z), w=x.clamp(min=0), v=torch.zeros_like(x))
        return AdmmState(z=z, u=torch.zeros_like(z))

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        out = self.op.normal(x) + self.rho * self.diff.normal(x)
        return out + self.rho * x if self.nonnegative else out

    @torch.no_grad()
    def step(self, x: torch.Tensor, state: AdmmState, cg_iterations: Optional[int] = None
             ) -> tuple[torch.Tensor, AdmmState]:
        """One ADMM iteration started from ``x``; returns the new ``x`` and state."""
        rhs = self.aty + self.rho * self.diff.adjoint(state.z - state.u)
        if self.nonnegative:
            rhs = rhs + self.rho * (state.w - state.v)
        x = conjugate_gradient(self._normal, rhs, x0=x, iterations=cg_iterations or self.cg_iterations,
                               slab=self.slab)
        dx = self.diff.forward(x)
        z = soft_threshold(dx + state.u, self.lam / self.rho)
        u = state.u + dx - z
        if not self.nonnegative:
            return x, AdmmState(z=z, u=u)
        w = (x + state.v).clamp(min=0)
        return x, AdmmState(z=z, u=u, w=w, v=state.v + x - w)

    @torch.no_grad()
    def objective(self, x: torch.Tensor) -> float:
        """``||y - A x||^2 / 2 + lambda ||D x||_1``."""
        r = self.op.forward(x) - self.y
        per_slice = torch.stack([slice_norm_sq(r), slice_sums(self.diff.forward(x).abs())], dim=1)
        terms = ordered_sum(per_slice, self.slab)
        return 0.5 * float(terms[0]) + self.lam * float(terms[1])

    def run(self, x0: torch.Tensor, iterations: int, progress: bool = False) -> torch.Tensor:
        """``iterations`` ADMM iterations from ``x0`` (state initialised from ``x0``); with the
        non-negativity constraint the feasible split variable ``w`` is returned."""
        x, state = x0, self.init_state(x0)
        for _ in tqdm(range(iterations), desc="ADMM-TV", disable=not progress, leave=False):
            x, state = self.step(x, state)
        return state.w if self.nonnegative else x


# -- extension used by the diffusion samplers (medrecon.samplers.dds) ---------------------------
@torch.no_grad()
def proximal_step(admm: AdmmTV, x: torch.Tensor, state: AdmmState, anchor: torch.Tensor,
                  weight: float, cg_iterations: Optional[int] = None
                  ) -> tuple[torch.Tensor, AdmmState]:
    """One ADMM iteration whose x-update also pulls towards ``anchor`` (noisy-data DDS):

        (A^H A + rho D^T D + weight I) x = A^H y + rho D^T (z - u) + weight * anchor

    i.e. ``min ||y - A x||^2 / 2 + weight ||x - anchor||^2 / 2 + lambda ||D x||_1``
    (``weight = 1 / gamma`` of ``(I + gamma A^H A) x = anchor + gamma A^H y``); warm-started at
    ``x``. ``weight = 0`` is :meth:`AdmmTV.step`.
    """
    if weight < 0:
        raise ValueError(f"proximal weight must be >= 0, got {weight}")
    if admm.nonnegative:
        raise ValueError("proximal_step does not support the non-negativity split")
    rhs = admm.aty + admm.rho * admm.diff.adjoint(state.z - state.u) + weight * anchor
    x = conjugate_gradient(lambda v: admm._normal(v) + weight * v, rhs, x0=x,
                           iterations=cg_iterations or admm.cg_iterations, slab=admm.slab)
    dx = admm.diff.forward(x)
    z = soft_threshold(dx + state.u, admm.lam / admm.rho)
    return x, AdmmState(z=z, u=state.u + dx - z)
