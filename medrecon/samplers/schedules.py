"""Noise schedules and the VE <-> VP change of variables (ALGORITHMS.md section 6).

One sigma-conditioned denoiser ``D(x, sigma)`` serves both families. With
``sigma = sqrt((1 - abar) / abar)``:

    x_ve  = x_vp / sqrt(abar)                 (abar = 1 / (1 + sigma^2))
    eps   = (x_ve - D(x_ve, sigma)) / sigma   = -sigma * score(x_ve, sigma)
    x0hat = D(x_ve, sigma) = x_ve + sigma^2 score = x_ve - sigma * eps      (Tweedie)

Schedules are float64 on the CPU (they are a handful of numbers); samplers convert each value to
a Python float when they use it, so CPU and CUDA runs use identical step sizes.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

# The published VP (DDPM) schedule used by DDS: linear betas 1e-4 .. 0.02 over T = 1000 steps.
VP_BETA_START = 1e-4
VP_BETA_END = 0.02
VP_TIMESTEPS = 1000


def vp_alpha_bars(beta_start: float = VP_BETA_START, beta_end: float = VP_BETA_END,
                  timesteps: int = VP_TIMESTEPS) -> torch.Tensor:
    """``abar_t = prod_{s <= t} (1 - beta_s)`` for linear betas, float64 ``[timesteps]``."""
    if not 0 < beta_start <= beta_end < 1 or timesteps < 2:
        raise ValueError(f"bad VP schedule: beta {beta_start}..{beta_end}, {timesteps} steps")
    betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def sigma_from_alpha_bar(alpha_bar: torch.Tensor | float) -> torch.Tensor | float:
    """VE noise level ``sqrt((1 - abar) / abar)`` of a VP marginal ``abar``."""
    if isinstance(alpha_bar, torch.Tensor):
        return torch.sqrt((1.0 - alpha_bar) / alpha_bar)
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


def alpha_bar_from_sigma(sigma: torch.Tensor | float) -> torch.Tensor | float:
    """VP ``abar = 1 / (1 + sigma^2)`` of a VE noise level ``sigma``."""
    return 1.0 / (1.0 + sigma**2)


def vp_to_ve(x_vp: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """``x_ve = x_vp / sqrt(abar)``."""
    return x_vp / math.sqrt(alpha_bar)


def ve_to_vp(x_ve: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x_vp = sqrt(abar) x_ve = x_ve / sqrt(1 + sigma^2)``."""
    return x_ve / math.sqrt(1.0 + sigma * sigma)


def eps_from_denoised(x_ve: torch.Tensor, x0: torch.Tensor, sigma: float) -> torch.Tensor:
    """VP epsilon ``(x_ve - x0_hat) / sigma`` from the denoiser output."""
    return (x_ve - x0) / sigma


def score_from_denoised(x_ve: torch.Tensor, x0: torch.Tensor, sigma: float) -> torch.Tensor:
    """VE score ``(x0_hat - x_ve) / sigma^2`` from the denoiser output."""
    return (x0 - x_ve) / (sigma * sigma)


def ddim_timesteps(steps: int, timesteps: int = VP_TIMESTEPS, t_max: int | None = None) -> list[int]:
    """Descending DDIM timesteps: the published ``range(0, T, T // steps)`` reversed.

    For ``steps = 50, T = 1000``: 980, 960, ..., 20, 0. With ``t_max`` (a cap, e.g. from the
    prior's largest trained sigma) the ``steps`` timesteps are spread evenly on ``[0, t_top]``
    with ``t_top = min(t_max, (steps - 1) * (T // steps))`` (identical to the published list
    when the cap does not bite).
    """
    if steps < 1:
        raise ValueError(f"DDIM needs at least one step, got {steps}")
    skip = timesteps // steps
    if skip < 1:
        raise ValueError(f"{steps} DDIM steps exceed the {timesteps} timesteps of the schedule")
    top = (steps - 1) * skip
    if t_max is not None and t_max < top:
        top = int(t_max)
        if steps > top + 1:
            raise ValueError(f"{steps} DDIM steps do not fit below timestep {top} "
                             "(the prior's sigma_max caps the schedule); use fewer steps")
        if steps == 1:
            return [top]
        return [int(round(top - i * top / (steps - 1))) for i in range(steps)]
    return [top - i * skip for i in range(steps)]


def largest_timestep_below(alpha_bars: torch.Tensor, sigma_max: float) -> int:
    """Largest ``t`` with ``sigma(abar_t) <= sigma_max`` (sigma grows with t)."""
    sig = sigma_from_alpha_bar(alpha_bars)
    ok = torch.nonzero(sig <= sigma_max).flatten()
    if ok.numel() == 0:
        raise ValueError(f"no timestep of the VP schedule has sigma <= {sigma_max}")
    return int(ok.max())


def geometric_sigmas(sigma_min: float, sigma_max: float, n: int) -> list[float]:
    """``n`` noise levels ``sigma_max (sigma_min / sigma_max)^(i / (n - 1))``, descending.

    This is score_sde's VE discretisation ``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` on
    ``n`` evenly spaced t from 1 to 0.
    """
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    if n < 1:
        raise ValueError(f"need at least one noise level, got {n}")
    if n == 1:
        return [float(sigma_max)]
    ratio = math.log(sigma_min / sigma_max)
    return [float(sigma_max * math.exp(ratio * i / (n - 1))) for i in range(n)]


def clip_sigma_range(sigma_min: float, sigma_max: float, prior_min: float, prior_max: float
                     ) -> tuple[float, float]:
    """The requested ``[sigma_min, sigma_max]`` intersected with what the prior was trained on."""
    lo, hi = max(float(sigma_min), float(prior_min)), min(float(sigma_max), float(prior_max))
    if not 0 < lo <= hi:
        raise ValueError(f"sigma range [{sigma_min}, {sigma_max}] does not overlap the prior's "
                         f"[{prior_min}, {prior_max}]")
    return lo, hi


def as_floats(values: Sequence[float] | torch.Tensor) -> list[float]:
    """Python floats (exact float64 values) of a schedule."""
    if isinstance(values, torch.Tensor):
        return [float(v) for v in values.to(torch.float64).tolist()]
    return [float(v) for v in values]
