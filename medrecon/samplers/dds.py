"""DDS, the decomposed diffusion sampler (Chung et al., ICLR 2024; ALGORITHMS.md section 3).

Written in VE variables, which is the published VP DDIM exactly (section 6): with
``sigma_t = sqrt((1 - abar_t) / abar_t)`` on the published VP schedule and ``x = x_vp / sqrt(abar)``,
each of the ``steps`` DDIM steps (timesteps 980, 960, ..., 0 for 50 steps) does

    x0_hat = D(x, sigma_t)                           Tweedie estimate (one network evaluation)
    eps    = (x - x0_hat) / sigma_t
    x0'    = data consistency started at x0_hat:
             tv_z: one ADMM-TV(z) iteration, CG warm-started at x0_hat (z, u kept across steps)
             else: per-slice CG on A^H A x = A^H y warm-started at x0_hat ("2D DDS")
             with gamma: the proximal form (I + gamma A^H A) x = x0_hat + gamma A^H y (+ TV-z);
             noisy data (noise_sigma > 0, gamma_rel = 0): gamma = (anchor_std / noise_sigma)^2
    x      = x0' + sigma_t' (eta z + sqrt(1 - eta^2) eps),     z ~ N(0, I)

and the step after timestep 0 goes to the clean image (``sigma = 0``). The start is
``x_T = sqrt(1 + sigma_T^2) n`` (the VP ``N(0, I)``) or 0 with ``init_noise=False``; a warm start
(``start_sigma > 0``) is ``x = x_init + sigma_T n`` with the ADMM split ``z = D_z x_init, u = 0``.

``trace(i, q)`` (optional) sees step ``i``'s quantities ``q``: ``sigma``, ``sigma_next`` (floats),
``x`` (the input prior batch), ``x0_hat`` (Tweedie), ``eps``, ``x0_dc`` (data consistency, a
volume), ``noise`` (``z``, None when not drawn) and ``x_next`` (the re-noised prior batch).

The timesteps are capped where ``sigma_t`` exceeds the prior's ``sigma_max`` (a denoiser trained
up to sigma_max = 80 starts at t ~ 933 instead of 980; the steps are spread evenly on [0, cap]),
and the network is never queried below its ``sigma_min`` (the level is clamped). With
``schedule`` "auto" or "fitted" a prior's fitted few-step schedule replaces the uniform levels (and
may set ``eta``, ``cg_iterations``, ``dc_iterations``: :mod:`medrecon.samplers.fewstep`);
``info["schedule"]`` records what ran. ``dc_iterations`` ADMM iterations run per step.

Complex (MRI) volumes: data consistency runs on the complex image; the prior denoises the real
and imaginary parts as two separate real images with the same sigma, and noise is drawn for
both parts.

Distributed (``slab``): every rank samples its z-slab; the TV-z coupling, CG's inner products,
the residual and the noise follow :mod:`medrecon.samplers.noise` and :mod:`medrecon.samplers.loop`,
so the result equals the single-process one up to float32 summation order.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np
import torch

from medrecon.errors import UserError
from medrecon.physics.operator import LinearOperator
from medrecon.prior.denoiser import Denoiser
from medrecon.samplers.adaptation import Adaptation
from medrecon.samplers.loop import RunOptions, SampleResult, Trace, run_steps
from medrecon.samplers.noise import NoiseSource
from medrecon.samplers.prior_calls import (from_prior_batch, network_precision, prior_chunked,
                                           to_prior_batch)
from medrecon.samplers.problem import (check_problem, data_residual, global_norm, real_dtype,
                                       volume_shape)
from medrecon.samplers.resume import problem_identity, sampler_identity
from medrecon.samplers.timing import Timer
from medrecon.samplers.config import DdsConfig, with_overrides
from medrecon.samplers.group import group_denoise, group_starts, mirrored_group, resolve_combine
from medrecon.samplers.conventions import absolute_weights
from medrecon.samplers.fewstep import resolve_schedule
from medrecon.samplers.schedules import (ddim_timesteps, largest_timestep_below,
                                         sigma_from_alpha_bar, vp_alpha_bars)
from medrecon.solvers.admm import AdmmState, AdmmTV, proximal_step
from medrecon.solvers.cg import conjugate_gradient
from medrecon.samplers.state import StateStore, Tensors
from medrecon.solvers.tv import FiniteDifference

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab


def dds_sigmas(config: DdsConfig, prior_sigma_max: float,
               sigmas: Optional[Sequence[float]] = None) -> tuple[list, list[float]]:
    """The DDIM timesteps and their VE noise levels (descending), capped at the prior's range
    (and at ``config.start_sigma`` for a warm start). ``sigmas``: a fitted schedule's levels
    (:mod:`medrecon.samplers.fewstep`) instead of the uniform timesteps; the timesteps are then
    the continuous VP ``t`` of each level (rounded to 0.01, for the record)."""
    abar = vp_alpha_bars(config.beta_start, config.beta_end, config.timesteps)
    top = prior_sigma_max if config.start_sigma <= 0 else min(prior_sigma_max, config.start_sigma)
    if sigmas is not None:
        if len(sigmas) != config.steps:
            raise UserError(f"dds: a schedule of {len(sigmas)} levels for {config.steps} steps")
        if sigmas[0] > top * (1 + 1e-9):
            raise UserError(f"dds: the schedule starts at sigma {sigmas[0]:g}, above {top:g} "
                            "(the prior's sigma_max or the warm start's start_sigma)")
        sig_all = sigma_from_alpha_bar(abar)
        return ([round(float(np.interp(s, sig_all.numpy(), np.arange(len(sig_all)))), 2)
                 for s in sigmas], [float(s) for s in sigmas])
    cap = largest_timestep_below(abar, top)
    try:
        ts = ddim_timesteps(config.steps, config.timesteps, cap)
    except ValueError as exc:
        raise UserError(f"dds: {exc}") from None
    return ts, [float(sigma_from_alpha_bar(float(abar[t]))) for t in ts]


def ddim_update(x0: torch.Tensor, eps: torch.Tensor, sigma_next: float, eta: float,
                z: Optional[torch.Tensor]) -> torch.Tensor:
    """``x0 + sigma_next (eta z + sqrt(1 - eta^2) eps)`` (VE form of the DDS re-noising)."""
    if sigma_next == 0.0:
        return x0
    out = x0 + (sigma_next * math.sqrt(1.0 - eta * eta)) * eps
    if eta > 0:
        out = out + (sigma_next * eta) * z
    return out


def check_group_problem(cfg: DdsConfig, op: LinearOperator, group: int, n_slices: int,
                        combine: str, centre_output: bool) -> None:
    """Refuse what a slice-group prior cannot do: complex (MRI) images, adaptation, no spacing,
    fewer slices than a group."""
    if op.in_dtype.is_complex:
        raise UserError("slice-group priors denoise real (CT) images; use a 2D prior for MRI")
    if cfg.adapt:
        raise UserError("adapt=true is not available with a slice-group prior")
    if not cfg.z_spacing_mm > 0:
        raise UserError("a slice-group prior needs the slice spacing: set z_spacing_mm (mm)")
    if combine == "centre" and centre_output:
        mirrored_group(0, n_slices, group)
    else:
        group_starts(n_slices, group, combine)


def nfe_per_slice(cfg: DdsConfig, group: int, n_slices: int, combine: str,
                  centre_output: bool) -> float:
    """Network calls per slice of the whole run (a group of C slices is one call)."""
    if group == 1 or centre_output:
        return float(cfg.steps)
    calls = sum(len(group_starts(n_slices, group, combine, i)) for i in range(cfg.steps))
    return calls / n_slices


class DataConsistency:
    """The data-consistency step of DDS applied to the Tweedie estimate (see module docstring)."""

    def __init__(self, op: LinearOperator, y: torch.Tensor, n_slices: int, lam: float, rho: float,
                 cg_iterations: int, tv_z: bool, boundary: str, gamma: Optional[float],
                 slab: Optional["Slab"] = None, dc_iterations: int = 1) -> None:
        self.op, self.tv_z, self.cg_iterations = op, tv_z, cg_iterations
        self.dc_iterations = dc_iterations
        self.weight = 0.0 if gamma is None else 1.0 / gamma
        if tv_z:
            diff = FiniteDifference(n_slices, op.in_shape[1:], (0,), boundary, op.in_dtype, op.device,
                                    slab)
            self.admm: Optional[AdmmTV] = AdmmTV(op, y, diff, lam, rho, cg_iterations,
                                                 slab=slab)
            self.aty = self.admm.aty
        else:
            self.admm = None
            with torch.no_grad():
                self.aty = op.adjoint(y)

    def initial_state(self, x_start: Optional[torch.Tensor] = None) -> Tensors:
        """``z = u = 0`` (as published), or ``z = D_z x_start, u = 0`` for a warm start (so the
        first ADMM step does not pull a good start towards ``D_z x = 0``); nothing without TV-z."""
        if self.admm is None:
            return {}
        if x_start is not None:
            st = self.admm.init_state(x_start)
            return {"z": st.z, "u": st.u}
        shape = (self.aty.shape[0], 1, *self.aty.shape[1:])
        zero = torch.zeros(shape, dtype=self.aty.dtype, device=self.aty.device)
        return {"z": zero, "u": zero.clone()}

    @torch.no_grad()
    def __call__(self, x0: torch.Tensor, state: Tensors) -> tuple[torch.Tensor, Tensors]:
        if self.admm is not None:
            st = AdmmState(z=state["z"], u=state["u"])
            x = x0
            for _ in range(self.dc_iterations):
                if self.weight > 0:
                    x, st = proximal_step(self.admm, x, st, x0, self.weight, self.cg_iterations)
                else:
                    x, st = self.admm.step(x, st, self.cg_iterations)
            return x, {"z": st.z, "u": st.u}
        w = self.weight
        normal: Callable[[torch.Tensor], torch.Tensor] = (
            (lambda v: self.op.normal(v) + w * v) if w > 0 else self.op.normal)
        rhs = self.aty + w * x0 if w > 0 else self.aty
        return conjugate_gradient(normal, rhs, x0=x0,
                                  iterations=self.cg_iterations * self.dc_iterations,
                                  batched=True), {}


def dds(op: LinearOperator, y: torch.Tensor, denoiser: Denoiser,
        config: Optional[DdsConfig] = None, *, seed: int = 0, op_norm_sq: Optional[float] = None,
        store: Optional[StateStore] = None, save_every: int = 0, resume: bool = False,
        progress: bool = False, callback: Optional[Callable[[int, Tensors], None]] = None,
        x_init: Optional[torch.Tensor] = None, trace: Optional[Trace] = None,
        slab: Optional["Slab"] = None,
        **overrides: Any) -> SampleResult:
    """Reconstruct ``x`` ``[Z, Y, X]`` from ``y = A x`` with DDS (module docstring).

    Args:
        op: the forward operator (its device is where everything runs; the denoiser is moved there).
        y: measurements ``[Z, *op.out_shape[1:]]`` in prior units (see
            :mod:`medrecon.samplers.intensity`).
        denoiser: the 2D prior (``Denoiser``); its image size must match the slices.
        config: :class:`DdsConfig` (default: the class defaults); ``overrides`` replace fields.
        seed: seeds every random draw (CPU generator: same numbers on CPU and CUDA).
        op_norm_sq: ``||A||^2`` if known (else power iteration) for the relative weights.
        store, save_every, resume, progress, callback: see :class:`RunOptions`.
        x_init: ``[Z, Y, X]`` start image in prior units (required when ``start_sigma > 0``).
        trace: ``trace(i, quantities)`` inside every step (module docstring); None: off.
        slab: this process's z-slab of a distributed run (``op``, ``y``, ``x_init`` and the
            result are then its slices); None: one process.
    Returns:
        :class:`SampleResult` with ``x`` in prior units and ``info``.
    """
    if config is not None and not isinstance(config, DdsConfig):
        raise UserError(f"expected a DdsConfig, got {type(config).__name__}")
    cfg = with_overrides(config or DdsConfig(), **overrides)
    options = RunOptions(store, save_every, resume, progress, callback)
    t_start = time.perf_counter()
    n = check_problem(op, y, denoiser)
    shape = volume_shape(y, slab)
    device = op.device
    x_start: Optional[torch.Tensor] = None          # warm start, [Z, Y, X] in the operator's dtype
    if cfg.start_sigma > 0:
        if x_init is None or tuple(x_init.shape) != (n, *op.in_shape[1:]):
            raise UserError(f"start_sigma > 0 needs x_init of shape {[n, *op.in_shape[1:]]}, got "
                            f"{None if x_init is None else list(x_init.shape)}")
        x_start = x_init.to(device=device, dtype=op.in_dtype)
    elif x_init is not None:
        raise UserError("x_init is only used with start_sigma > 0 (a warm start)")
    denoiser = denoiser.to(device).eval()
    group = int(getattr(denoiser, "slice_group", 1))
    n_whole = slab.n if slab is not None else n
    combine = resolve_combine(cfg.group_combine, denoiser) if group > 1 else ""
    centre_output = bool(getattr(denoiser, "centre_output", False))
    if group > 1:
        check_group_problem(cfg, op, group, n_whole, combine, centre_output)
    precision = network_precision(cfg.precision, denoiser, device)
    weights = absolute_weights(op, cfg.lam_rel, cfg.rho_rel, cfg.gamma_rel, op_norm_sq, slab)
    if weights.gamma is None and cfg.noise_sigma > 0:   # noisy data: MAP-balanced proximal step
        weights = dataclasses.replace(weights, gamma=(cfg.anchor_std / cfg.noise_sigma) ** 2)
    schedule = resolve_schedule(cfg, denoiser)
    eta = schedule.eta
    ts, sigmas = dds_sigmas(cfg, float(denoiser.sigma_max), schedule.sigmas)
    sig_next = sigmas[1:] + [0.0]
    sig_floor = float(denoiser.sigma_min)
    cplx = op.in_dtype if op.in_dtype.is_complex else None
    rdt = real_dtype(op.in_dtype)
    batch_shape = ((2 * n) if cplx else n, *(int(s) for s in op.in_shape[1:]))
    dc = DataConsistency(op, y, n, weights.lam, weights.rho, schedule.cg_iterations, cfg.tv_z,
                         cfg.boundary, weights.gamma, slab, schedule.dc_iterations)
    noise = NoiseSource(seed, slab)
    timer = Timer(device)
    y_norm = global_norm(y, slab)
    last: dict[str, torch.Tensor] = {}
    adaptation = Adaptation(cfg, op, y, denoiser, seed, y_norm, cplx, slab) if cfg.adapt else None
    net = adaptation.denoiser if adaptation is not None else denoiser

    def draw() -> torch.Tensor:
        return noise.normal(batch_shape, rdt, device, cfg.slice_noise_period, 2 if cplx else 1)

    def init() -> Tensors:
        if x_start is not None:
            x = to_prior_batch(x_start) + draw() * sigmas[0]
        elif cfg.init_noise:
            x = draw() * math.sqrt(1.0 + sigmas[0] ** 2)
        else:
            x = torch.zeros(batch_shape, dtype=rdt, device=device)
        return {"x": x, **dc.initial_state(x_start),
                **(adaptation.initial_state() if adaptation is not None else {})}

    def step(i: int, t: Tensors) -> Tensors:
        if adaptation is not None:
            t = adaptation.step(t, max(sigmas[i], sig_floor))
        xr, sigma = t["x"], sigmas[i]
        with timer.measure("network"):
            if group > 1:
                x0r = group_denoise(net, xr, max(sigma, sig_floor), cfg.z_spacing_mm, combine,
                                    i, cfg.chunk, precision, slab)
            else:
                x0r = prior_chunked(net, xr, max(sigma, sig_floor), cfg.chunk, precision=precision)
        eps = (xr - x0r) / sigma
        with timer.measure("physics"):
            x0, state = dc(from_prior_batch(x0r, cplx), {k: v for k, v in t.items() if k != "x"})
        last["x0"] = x0
        z = draw() if (eta > 0 and sig_next[i] > 0) else None
        x_next = ddim_update(to_prior_batch(x0), eps, sig_next[i], eta, z)
        if trace is not None:
            trace(i, {"sigma": sigma, "sigma_next": sig_next[i], "x": xr, "x0_hat": x0r,
                      "eps": eps, "x0_dc": x0, "noise": z, "x_next": x_next})
        return {"x": x_next, **state, **(adaptation.state() if adaptation is not None else {})}

    def residual(t: Tensors) -> float:
        x = last.get("x0", from_prior_batch(t["x"], cplx))
        return data_residual(op, x, y, y_norm, slab)

    identity = sampler_identity(cfg, seed, weights.op_norm_sq, shape, op, denoiser)
    exact, probes = problem_identity(op, y, denoiser) if options.store is not None else ({}, y_norm)
    identity.update(exact)
    tensors, run_info = run_steps("dds", cfg.steps, identity, probes, init, step, noise, residual,
                                  device, options, slab)
    x = from_prior_batch(tensors["x"], cplx)
    info = {"method": "dds", "config": dict(cfg.identity(), chunk=cfg.chunk), "seed": seed,
            "nfe_per_slice": nfe_per_slice(cfg, group, n_whole, combine, centre_output),
            "timesteps": ts, "schedule": schedule.record(sigmas), "sigma_first": sigmas[0],
            "sigma_last": sigmas[-1], "lam": weights.lam, "rho": weights.rho,
            "gamma": weights.gamma, "op_norm_sq": weights.op_norm_sq,
            "residual": data_residual(op, x, y, y_norm, slab),
            "precision": precision.record(),
            "time_network": timer.totals.get("network", 0.0),
            "time_physics": timer.totals.get("physics", 0.0),
            "time_total": time.perf_counter() - t_start, **run_info,
            **(adaptation.info(n) if adaptation is not None else {})}
    return SampleResult(x=x, info=info)
