"""DiffusionMBIR (Chung et al., CVPR 2023): VE predictor-corrector + ADMM-TV(z) (ALGORITHMS.md 1-2).

Noise levels ``sigma_0 > ... > sigma_{N-1}`` are geometric between the requested
``[sigma_min, sigma_max]`` (published 0.01, 378) clipped to the prior's trained range (a
denoiser trained up to 80 starts at 80), with ``sigma_N = 0``. Step ``i`` on every slice:

    predictor (reverse diffusion):  x <- x + (s_i^2 - s_{i+1}^2) score(x, s_i) + sqrt(s_i^2 - s_{i+1}^2) z
    corrector (one Langevin step):  e = 2 (snr ||z'|| / ||score(x, s_i)||)^2,
                                    x <- x + e score(x, s_i) + sqrt(2 e) z'
    ADMM-TV(z), one iteration on the noisy sample (cg_iterations CG steps, warm-started at x;
    z, u start at 0 and are kept across steps)

As in the published code the corrector uses the score at ``s_i`` (the level before the
predictor step); norms are per image (``corrector_norm="slice"``) or averaged over the chunk
(``"chunk"``, published). The last step adds no noise (its predictor and corrector return their
means). ``final_dc`` ends with ``x += A^T (y - A x) / A^T A 1`` (published, CT only).
Two network evaluations per slice per step. Complex volumes: as in :mod:`medrecon.samplers.dds`,
the prior acts on real and imaginary parts as separate images. The start is ``x = sigma_0 n``.
Distributed (``slab``): as DDS; chunk-averaged corrector norms are averaged over the chunks of
the whole volume's prior batch (the per-image norms are all-gathered), so they match a single
process too.

``trace(i, q)`` (optional) sees step ``i``'s quantities ``q``: ``sigma``, ``sigma_next`` (floats),
``x`` (the input prior batch), ``score`` and ``noise`` of the predictor, ``x_predictor``,
``score_corrector``, ``noise_corrector``, ``step_size`` (``e`` per image, ``[B, 1, 1]``),
``x_corrector`` and ``x_next`` (after the ADMM iteration, a prior batch).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from medrecon.errors import UserError
from medrecon.physics.operator import LinearOperator
from medrecon.prior.denoiser import Denoiser
from medrecon.distributed.reduce import slice_norm_sq
from medrecon.samplers.loop import RunOptions, SampleResult, Trace, run_steps
from medrecon.samplers.noise import NoiseSource
from medrecon.samplers.prior_calls import (from_prior_batch, network_precision, prior_chunked,
                                           to_prior_batch)
from medrecon.samplers.problem import (check_problem, data_residual, global_norm, real_dtype,
                                       volume_shape)
from medrecon.samplers.resume import problem_identity, sampler_identity
from medrecon.samplers.timing import Timer
from medrecon.samplers.config import MbirConfig, with_overrides
from medrecon.samplers.conventions import absolute_weights
from medrecon.samplers.schedules import clip_sigma_range, geometric_sigmas
from medrecon.solvers.admm import AdmmState, AdmmTV
from medrecon.samplers.state import StateStore, Tensors
from medrecon.solvers.tv import FiniteDifference

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab


def mbir_sigmas(config: MbirConfig, prior_min: float, prior_max: float) -> list[float]:
    """The descending noise levels of the sampler (``config.steps`` values)."""
    lo, hi = clip_sigma_range(config.sigma_min, config.sigma_max, prior_min, prior_max)
    return geometric_sigmas(lo, hi, config.steps)


def langevin_step_sizes(score: torch.Tensor, z: torch.Tensor, snr: float, chunk: Optional[int],
                        slab: Optional["Slab"] = None) -> torch.Tensor:
    """``2 (snr ||z|| / ||score||)^2`` per image ``[B, 1, 1]``; with ``chunk`` the norms are
    averaged over consecutive groups of ``chunk`` images (the published behaviour), counted over
    the whole volume's batch when ``score`` is one rank's slab."""
    # per-image norms computed alike whatever the batch (a one-slice slab included)
    g = slice_norm_sq(score).sqrt().to(score.dtype)
    nz = slice_norm_sq(z).sqrt().to(z.dtype)
    if chunk is not None and slab is not None and slab.distributed:
        both = slab.all_gather(torch.stack([g, nz], dim=1))
        eps = langevin_step_sizes(both[:, :1], both[:, 1:], snr, chunk)
        return slab.take(eps, eps.shape[0] // slab.n)
    if chunk is not None:
        for start in range(0, g.shape[0], chunk):
            g[start:start + chunk] = g[start:start + chunk].mean()
            nz[start:start + chunk] = nz[start:start + chunk].mean()
    eps = 2.0 * (snr * nz / g.clamp_min(torch.finfo(g.dtype).tiny)) ** 2
    return eps.reshape(-1, 1, 1)


@torch.no_grad()
def sirt_step(op: LinearOperator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + A^T (y - A x) / A^T A 1`` (zero where ``A^T A 1`` vanishes); real operators only."""
    col = op.normal(torch.ones_like(x))
    scale = torch.where(col > 1e-8, 1.0 / col.clamp_min(1e-8), torch.zeros_like(col))
    return x + scale * op.adjoint(y - op.forward(x))


def mbir(op: LinearOperator, y: torch.Tensor, denoiser: Denoiser,
         config: Optional[MbirConfig] = None, *, seed: int = 0, op_norm_sq: Optional[float] = None,
         store: Optional[StateStore] = None, save_every: int = 0, resume: bool = False,
         progress: bool = False, callback: Optional[Callable[[int, Tensors], None]] = None,
         trace: Optional[Trace] = None, slab: Optional["Slab"] = None,
         **overrides: Any) -> SampleResult:
    """Reconstruct ``x`` ``[Z, Y, X]`` from ``y = A x`` with DiffusionMBIR (module docstring).

    Arguments as :func:`medrecon.samplers.dds.dds`, with an :class:`MbirConfig` (no ``x_init``;
    ``trace`` keys in the module docstring).
    """
    if config is not None and not isinstance(config, MbirConfig):
        raise UserError(f"expected a MbirConfig, got {type(config).__name__}")
    cfg = with_overrides(config or MbirConfig(), **overrides)
    options = RunOptions(store, save_every, resume, progress, callback)
    t_start = time.perf_counter()
    n = check_problem(op, y, denoiser)
    shape = volume_shape(y, slab)
    cplx = op.in_dtype if op.in_dtype.is_complex else None
    if cfg.final_dc and cplx is not None:
        raise UserError("final_dc (the SIRT-like last step) is for real (CT) operators; set "
                        "final_dc: false for MRI")
    device = op.device
    denoiser = denoiser.to(device).eval()
    precision = network_precision(cfg.precision, denoiser, device)
    weights = absolute_weights(op, cfg.lam_rel, cfg.rho_rel, None, op_norm_sq, slab)
    sigmas = mbir_sigmas(cfg, float(denoiser.sigma_min), float(denoiser.sigma_max))
    adjacent = sigmas[1:] + [0.0]
    rdt = real_dtype(op.in_dtype)
    batch_shape = ((2 * n) if cplx else n, *(int(s) for s in op.in_shape[1:]))
    diff = FiniteDifference(n, op.in_shape[1:], (0,), cfg.boundary, op.in_dtype, device, slab)
    admm = AdmmTV(op, y, diff, weights.lam, weights.rho, cfg.cg_iterations, slab=slab)
    norm_chunk = cfg.chunk if cfg.corrector_norm == "chunk" else None
    noise = NoiseSource(seed, slab)
    timer = Timer(device)
    y_norm = global_norm(y, slab)

    def init() -> Tensors:
        x = noise.normal(batch_shape, rdt, device) * sigmas[0]
        zero = torch.zeros((n, 1, *batch_shape[1:]), dtype=op.in_dtype, device=device)
        return {"x": x, "z": zero, "u": zero.clone()}

    def step(i: int, t: Tensors) -> Tensors:
        x_in, s, final = t["x"], sigmas[i], i == len(sigmas) - 1
        g2 = s * s - adjacent[i] ** 2
        with timer.measure("network"):
            score_p = prior_chunked(denoiser, x_in, s, cfg.chunk, kind="score",
                                    precision=precision)
        zp = noise.normal(batch_shape, rdt, device)
        x_p = x_in + g2 * score_p
        if not final:
            x_p = x_p + math.sqrt(g2) * zp
        with timer.measure("network"):
            score_c = prior_chunked(denoiser, x_p, s, cfg.chunk, kind="score",
                                    precision=precision)
        zc = noise.normal(batch_shape, rdt, device)
        e = langevin_step_sizes(score_c, zc, cfg.snr, norm_chunk, slab)
        x_c = x_p + e * score_c
        if not final:
            x_c = x_c + torch.sqrt(2.0 * e) * zc
        with timer.measure("physics"):
            x, st = admm.step(from_prior_batch(x_c, cplx), AdmmState(z=t["z"], u=t["u"]))
        x_next = to_prior_batch(x)
        if trace is not None:
            trace(i, {"sigma": s, "sigma_next": adjacent[i], "x": x_in, "score": score_p,
                      "noise": zp, "x_predictor": x_p, "score_corrector": score_c,
                      "noise_corrector": zc, "step_size": e, "x_corrector": x_c,
                      "x_next": x_next})
        return {"x": x_next, "z": st.z, "u": st.u}

    def residual(t: Tensors) -> float:
        return data_residual(op, from_prior_batch(t["x"], cplx), y, y_norm, slab)

    identity = sampler_identity(cfg, seed, weights.op_norm_sq, shape, op, denoiser)
    exact, probes = problem_identity(op, y, denoiser) if options.store is not None else ({}, y_norm)
    identity.update(exact)
    tensors, run_info = run_steps("mbir", cfg.steps, identity, probes, init, step, noise, residual,
                                  device, options, slab)
    x = from_prior_batch(tensors["x"], cplx)
    if cfg.final_dc:
        x = sirt_step(op, x, y)
    info = {"method": "mbir", "config": dict(cfg.identity(), chunk=cfg.chunk), "seed": seed,
            "nfe_per_slice": 2 * cfg.steps, "sigma_first": sigmas[0], "sigma_last": sigmas[-1],
            "lam": weights.lam, "rho": weights.rho, "op_norm_sq": weights.op_norm_sq,
            "residual": data_residual(op, x, y, y_norm, slab),
            "precision": precision.record(),
            "time_network": timer.totals.get("network", 0.0),
            "time_physics": timer.totals.get("physics", 0.0),
            "time_total": time.perf_counter() - t_start, **run_info}
    return SampleResult(x=x, info=info)
