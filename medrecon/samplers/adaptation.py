"""Adapting the prior to the measurement while DDS samples (``--set adapt=true``; issue 24).

After DDIP3D (Chung & Ye, ECCV 2024): one :class:`~medrecon.prior.adapt.LoraDenoiser` (LoRA on the
convolutions plus bias offsets, base weights frozen) is shared by the whole volume. Before the
network call of DDIM step ``i`` with noise level ``sigma_i >= adapt_until_sigma``, it takes
``adapt_steps`` AdamW steps; each draws ``adapt_slices`` distinct slices of the volume (seeded) and
lowers

    L = sum_k ||A_k x0_k - y_k||^2 / (K ||y||^2 / Z)  +  adapt_tv * mean_k TV(x0_k) / pixels

where ``x0_k = D_theta(x_k, sigma_i)`` is the adapted network's Tweedie estimate of slice ``k``
of the current sample (after ``adapt_cg`` differentiable CG iterations on ``A^H A x = A^H y``,
started at it), ``K`` the number of chosen slices, ``Z`` the number of slices and ``||y||^2 / Z``
the mean data energy per slice (so the residual term is the relative residual, independent of the
data's scale). TV is the mean absolute finite difference of the real and imaginary parts. The DDS
step then uses the adapted network.

Distributed (``slab``): every rank draws the same slices (the generator is in the adapter, seeded
alike), computes the terms of the chosen slices it holds, and the gradients are summed over the
ranks before AdamW's step, so all ranks hold the same adapter, that of one process up to float32
summation order.

The adapter's tensors, AdamW's moments and the slice generator live in the sampler state under
``adapt.*`` (:meth:`Adaptation.state`); a resumed run continues bit for bit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional

import torch

from medrecon.physics.operator import LinearOperator
from medrecon.prior.adapt import STATE_PREFIX, LoraDenoiser
from medrecon.prior.denoiser import Denoiser
from medrecon.samplers.prior_calls import from_prior_batch
from medrecon.samplers.state import Tensors

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab
    from medrecon.samplers.config import DdsConfig


def _slice_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-slice real inner products ``Re <a_k, b_k>`` ``[K, 1, 1]`` of ``[K, ...]`` stacks."""
    prod = (a.conj() * b).real if a.is_complex() else a * b
    return prod.reshape(prod.shape[0], -1).sum(1).reshape(-1, *([1] * (a.dim() - 1)))


def differentiable_cg(normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                      x: torch.Tensor, iterations: int) -> torch.Tensor:
    """``iterations`` CG steps on ``normal(x) = rhs`` per slice of ``[K, Y, X]``, from ``x``,
    built from differentiable operations (autograd runs through them)."""
    r = rhs - normal(x)
    p, rs = r, _slice_dot(r, r)
    for _ in range(iterations):
        ap = normal(p)
        alpha = rs / _slice_dot(p, ap).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = _slice_dot(r, r)
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return x


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute finite difference (along Y and X) of ``[K, Y, X]``, per slice ``[K]``
    (real and imaginary parts of a complex stack added)."""
    parts = (x.real, x.imag) if x.is_complex() else (x,)
    out = torch.zeros(x.shape[0], dtype=parts[0].dtype, device=x.device)
    for v in parts:
        out = out + (v[:, 1:, :] - v[:, :-1, :]).abs().mean((1, 2)) + \
            (v[:, :, 1:] - v[:, :, :-1]).abs().mean((1, 2))
    return out


class Adaptation:
    """The adapter of one DDS run and its optimisation (module docstring).

    Args:
        cfg: the run's :class:`~medrecon.samplers.config.DdsConfig` (``adapt_*`` fields).
        op, y: this process's operator and data (prior units).
        denoiser: the base prior (left unchanged).
        seed: the run's seed (seeds the adapter and the slice choice).
        y_norm: ``||y||`` of the whole volume.
        cplx: the complex dtype of the volume, None for real volumes.
        slab: this process's z-slab (None: one process).
    """

    def __init__(self, cfg: "DdsConfig", op: LinearOperator, y: torch.Tensor, denoiser: Denoiser,
                 seed: int, y_norm: float, cplx: Optional[torch.dtype],
                 slab: Optional["Slab"] = None) -> None:
        self.cfg, self.op, self.y, self.cplx = cfg, op, y, cplx
        self.slab = slab if slab is not None and slab.distributed else None
        self.n = self.slab.n if self.slab is not None else int(y.shape[0])
        self.lo = self.slab.lo if self.slab is not None else 0
        self.count = int(y.shape[0])
        self.adapter = LoraDenoiser(denoiser, cfg.adapt_rank, cfg.adapt_lr, seed=seed)
        self.adapter.to(op.device)
        self.k = min(cfg.adapt_slices, self.n)
        self.energy = max(float(y_norm) ** 2, 1e-30) / self.n * self.k   # K ||y||^2 / Z
        with torch.no_grad():
            self.aty = op.adjoint(y) if cfg.adapt_cg > 0 else None
        self.optimizer_steps = 0
        self.images_forward = 0       # this process's images through the network with gradient
        self.seconds = 0.0
        self.losses: list[float] = []  # last loss (this process's share) of every adapted step

    @property
    def denoiser(self) -> LoraDenoiser:
        """The adapted network the sampler evaluates."""
        return self.adapter

    def initial_state(self) -> Tensors:
        return self.adapter.state_tensors()

    def state(self) -> Tensors:
        """The adapter's part of the sampler state (``adapt.*``)."""
        return self.adapter.state_tensors()

    def _rows(self, local: list[int]) -> list[int]:
        per = 2 if self.cplx is not None else 1
        return [per * k + j for k in local for j in range(per)]

    def _loss(self, x_batch: torch.Tensor, sigma: float, local: list[int]) -> torch.Tensor:
        rows = x_batch[self._rows(local)].unsqueeze(1).detach()
        s = torch.full((rows.shape[0],), float(sigma), dtype=rows.dtype, device=rows.device)
        x0 = from_prior_batch(self.adapter.denoise(rows, s)[:, 0], self.cplx).to(self.op.in_dtype)
        self.images_forward += rows.shape[0]
        if self.op.in_shape[0] is None:             # slice-independent: one call on the stack
            ops = [(self.op, list(range(len(local))), local)]
        else:
            ops = [(self.op.subset(slice(k, k + 1)), [j], [k]) for j, k in enumerate(local)]
        total = x0.new_zeros((), dtype=torch.float32 if not x0.is_complex() else x0.real.dtype)
        for op, mine, idx in ops:
            x = x0[mine]
            if self.aty is not None:
                x = differentiable_cg(op.normal, self.aty[idx], x, self.cfg.adapt_cg)
            r = op.forward(x) - self.y[idx]
            total = total + _slice_dot(r, r).sum() / self.energy
            if self.cfg.adapt_tv > 0:
                total = total + self.cfg.adapt_tv * total_variation(x).sum() / self.k
        return total

    def step(self, t: Tensors, sigma: float) -> Tensors:
        """Restore the adapter from the state ``t``, adapt it at ``sigma`` on ``t["x"]`` (when
        ``sigma >= adapt_until_sigma``); returns ``t`` without the adapter's tensors."""
        mine = {k: v for k, v in t.items() if k.startswith(STATE_PREFIX)}
        rest = {k: v for k, v in t.items() if not k.startswith(STATE_PREFIX)}
        if mine:
            self.adapter.load_state_tensors(mine)
        if sigma < self.cfg.adapt_until_sigma:
            return rest
        start = time.perf_counter()
        reduce = self.slab.tensor_sum if self.slab is not None else None
        value = 0.0
        with torch.enable_grad():
            for _ in range(self.cfg.adapt_steps):
                chosen = torch.randperm(self.n, generator=self.adapter.generator)[:self.k]
                local = sorted(int(c) - self.lo for c in chosen
                               if self.lo <= int(c) < self.lo + self.count)
                loss = self._loss(rest["x"], sigma, local) if local else None
                self.adapter.optimizer_step(loss, reduce)
                value = float(loss.detach()) if loss is not None else 0.0
                self.optimizer_steps += 1
        self.losses.append(value)
        self.seconds += time.perf_counter() - start
        return rest

    def info(self, n_local: int) -> dict:
        """What the adaptation cost and did (per this process)."""
        per_slice = self.images_forward / max(1, n_local * (2 if self.cplx is not None else 1))
        return {"adapt_optimizer_steps": self.optimizer_steps,
                "adapt_images_forward": self.images_forward,
                "adapt_passes_per_slice": 2.0 * per_slice,      # forward + backward
                "adapt_loss_first": self.losses[0] if self.losses else None,
                "adapt_loss_last": self.losses[-1] if self.losses else None,
                "time_adapt": self.seconds}
