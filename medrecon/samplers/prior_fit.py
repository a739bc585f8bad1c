"""Does the prior fit this measurement? A statistic computed before sampling (issue 24).

**The statistic: held-out prediction ratio** (:func:`heldout_prediction`). Every 4th line of the
data (CT: views 0 and 4 of 8; MR: every 4th sampled phase-encoding line) is held out; the
warm-start solver (ADMM-TV, as for DDS's start) reconstructs ``x_cv`` from the rest; the prior
denoises ``x_cv + sigma n`` once at ``sigma`` = 0.3 (DDS's start noise level) on up to 8 evenly
spaced slices, the estimate takes :data:`CV_CG_ITERATIONS` conjugate-gradient steps on the kept
lines (``x_dc``, what one DDS step makes of it), and

    q = || H (A x_dc - y) || / || H (A x_cv - y) ||

compares how well that estimate and the TV image predict the data neither has seen (``H``: the
held-out lines). Why this measures fit: DDS trusts the one-step estimate ``D(x + sigma n,
sigma)``, pulled towards the data, from its first step on; when the prior knows images like this
one, it fills what the kept lines leave open better than TV and predicts unseen data better
(q < 1); when it does not, it fills it with what it knows and predicts them worse (q > 1).
Without the CG steps, a warm start from 16 views beat any estimate from sigma 0.3 noise and the
ratio fired on patients the prior fits (lung1, lung2 and the chest slab at 256 x 256 and 16
views: 1.03, 1.11, 1.13, where DDS gains 1.4-1.8 dB over TV); with them 0.96, 0.92, 1.01. The threshold :data:`CV_THRESHOLD` = 1 is the natural one ("no
better than TV"); it separated every development case of benchmarks/adaptation.py
(12 x 128 x 128, 8 views; results in benchmarks/results/adaptation). Its cost: one more
warm-start solve on 3/4 of the data, one network call per chosen slice and a few operator
applications. It needs no reference file.

**Not for MR yet**: with k-space lines held out, the brain prior measured q = 6.16 on brain1 (a
T1 volume it trained on) and 7.60 on the proton-density-like contrast (x8 uniform 1D, 4 of 16
sampled lines held out, most of them in the fully sampled centre): it does not separate, and
would send every MR run to the safe start. Complex images keep the residual ratio below, which
does not fire on either (0.81, 0.89).

**What it replaced** (and what still decides for MR): the *denoising residual ratio* ``RMS(D(x_w + 0.1 n) - x_w) / RMSE_ref``
on the warm start ``x_w``, against the prior's own denoising error on its evaluation slices
(``prior_eval.json``, :func:`reference_rmse`; still recorded as ``ratio`` when the file exists,
and the decision when no operator is given). On 8-view warm starts the residual mostly measures
the warm start's artefacts and the image's texture: the chest-ct prior on the pelvis measured
0.83 and the brain prior on a proton-density-like contrast 0.89, below its 1.16 in distribution
(lung2); its ratio to the prior's denoising gain over TV did no better (measured in
benchmarks/adaptation.py ``--fit-only``).

**When it fires** the default run (the user gave none of :data:`PATH_SETTINGS`) takes the safe
start :data:`SAFE_PATH` (the warm start barely noised: the prior only refines the TV image) and
the one-line warning says so; explicit settings are kept. The run info's ``prior_fit`` records
the statistic, the threshold and the path taken (``path``, ``path_settings``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from medrecon.prior.denoiser import Denoiser
from medrecon.distributed.reduce import ordered_sum, slice_norm_sq
from medrecon.samplers.prior_calls import prior_chunked, to_prior_batch
from medrecon.solvers.cg import conjugate_gradient

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

log = logging.getLogger(__name__)

# the denoising residual ratio (recorded; decides only without an operator)
FIT_SIGMA = 0.1
FIT_SLICES = 8
RATIO_THRESHOLD = 1.4
EVAL_FILE = "prior_eval.json"

# the held-out prediction ratio (decides): noise level, threshold, every CV_PERIOD-th line held out
CV_SIGMA = 0.3
CV_THRESHOLD = 1.0
CV_PERIOD = 4
# conjugate-gradient steps on the kept lines after the denoising (as one DDS step takes): without
# them, a warm start from 16 or more views is better than any estimate from sigma 0.3 noise and
# the ratio fired on patients the prior fits (benchmarks/results/adaptation/fit-*.json)
CV_CG_ITERATIONS = 5

# The path a default DDS run takes when the warning fires (measured never below the best ADMM-TV
# on the development cases, benchmarks/adaptation.py): the warm start barely noised, so the prior
# only refines the TV image. Taken only when the user chose none of PATH_SETTINGS.
SAFE_PATH = {"start_sigma": 0.05, "steps": 10}
PATH_SETTINGS = ("start_sigma", "steps", "adapt")
"""Settings that choose the sampling path (and every ``adapt_*``): a user who gave any of them
keeps the path they asked for; the warning then only advises."""


def safe_path(user_settings: Optional[Iterable[str]]) -> Optional[dict]:
    """The settings a default run switches to when the prior does not fit (:data:`SAFE_PATH`);
    None when ``user_settings`` (the names the user set) holds a path setting, or is None (the
    caller did not say which settings are the user's: nothing is replaced)."""
    if user_settings is None:
        return None
    chosen = [k for k in user_settings if k in PATH_SETTINGS or str(k).startswith("adapt")]
    return None if chosen else dict(SAFE_PATH)


def fit_config(cfg: Any, fit: Optional[dict]) -> Any:
    """``cfg`` with the settings of the path the prior-fit check chose (``fit["path_settings"]``)."""
    from medrecon.samplers.config import with_overrides

    chosen = (fit or {}).get("path_settings")
    return with_overrides(cfg, **chosen) if chosen else cfg


def reference_rmse(card: dict, sigma: float = FIT_SIGMA) -> Optional[float]:
    """The prior's denoising RMSE at ``sigma`` on its evaluation slices (``prior_eval.json`` in
    its directory: the card's ``directory`` or the shipped prior of its name); None when not
    recorded."""
    from medrecon.prior.card import SHIPPED_DIR

    where = card.get("directory") if isinstance(card, dict) else None
    path = Path(where) / EVAL_FILE if where else SHIPPED_DIR / str(card.get("name", "")) / EVAL_FILE
    try:
        rows = json.loads(path.read_text())["denoising"]
        psnr = next(float(r["prior_psnr"]) for r in rows if abs(float(r["sigma"]) - sigma) < 1e-9)
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None
    return 10.0 ** (-psnr / 20.0)


def _chosen(x: torch.Tensor, slices: int, slab: Optional["Slab"]) -> tuple[list[int], list[int], int]:
    """``(chosen, mine, lo)``: up to ``slices`` evenly spaced slices of the whole volume, those
    of them in this process's ``x`` (local indices), and the slab's first global slice."""
    n = slab.n if slab is not None and slab.distributed else int(x.shape[0])
    lo = slab.lo if slab is not None and slab.distributed else 0
    chosen = sorted({round(k * (n - 1) / max(1, min(slices, n) - 1)) for k in range(min(slices, n))})
    return chosen, [k - lo for k in chosen if lo <= k < lo + int(x.shape[0])], lo


def _noisy(x: torch.Tensor, chosen: list[int], mine: list[int], lo: int, sigma: float,
           seed: int) -> torch.Tensor:
    """The prior batch of slices ``mine`` of ``x`` plus ``sigma`` times seeded noise drawn for
    all ``chosen`` slices of the volume (the same draw on 1 or N processes)."""
    batch = to_prior_batch(x[mine])
    per = 2 if x.is_complex() else 1
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((per * len(chosen), *batch.shape[1:]), generator=g)
    rows = [per * chosen.index(k + lo) + j for k in mine for j in range(per)]
    return batch + sigma * noise[rows].to(batch.device, batch.dtype)


@torch.no_grad()
def denoising_residual(denoiser: Denoiser, x: torch.Tensor, sigma: float = FIT_SIGMA,
                       slices: int = FIT_SLICES, seed: int = 0,
                       slab: Optional["Slab"] = None) -> float:
    """``RMS(D(x + sigma n, sigma) - x)`` over up to ``slices`` evenly spaced slices of the
    ``[Z, Y, X]`` image ``x`` (prior units; of the whole volume when ``x`` is one slab)."""
    chosen, mine, lo = _chosen(x, slices, slab)
    partials = torch.zeros((int(x.shape[0]), 2), dtype=torch.float64)   # per slice: sum of squares, count
    if mine:
        per = 2 if x.is_complex() else 1
        d = prior_chunked(denoiser, _noisy(x, chosen, mine, lo, sigma, seed), sigma, 8) - to_prior_batch(x[mine])
        row_sq = slice_norm_sq(d).cpu().reshape(len(mine), per).sum(dim=1)
        partials[mine, 0] = row_sq
        partials[mine, 1] = float(d[0].numel() * per)
    total = ordered_sum(partials, slab)   # in slice order: the same value on 1 or N processes
    return math.sqrt(float(total[0]) / max(float(total[1]), 1.0))


def prior_fit(denoiser: Denoiser, x_warm: torch.Tensor, card: Any,
              slab: Optional["Slab"] = None, *, op: Any = None, y: Optional[torch.Tensor] = None,
              solver: Optional[Callable] = None, fallback: Optional[dict] = None,
              adapting: bool = False) -> dict:
    """The fit statistics of ``denoiser`` on this measurement (module docstring), as recorded in
    the run info, and the path the run takes; warns (one line) when the prior does not fit.

    With ``op``, ``y`` (prior units) and the warm-start ``solver``, the held-out prediction ratio
    decides for real images (CT; :func:`heldout_prediction`); otherwise (MR, or no operator) the
    denoising residual ratio on ``x_warm`` (and only when the prior records its reference error). ``fallback``: the settings
    this run switches to when the prior does not fit (:func:`safe_path`; None: no switch)."""
    import time

    t0 = time.perf_counter()
    name = card.get("name", "?") if isinstance(card, dict) else "?"
    ref = reference_rmse(card) if isinstance(card, dict) else None
    rms = denoising_residual(denoiser, x_warm, slab=slab) if ref is not None else None
    out: dict[str, Any] = {"prior": name, "statistic": "denoising_residual_ratio",
                           "sigma": FIT_SIGMA, "residual_rms": rms, "reference_rmse": ref,
                           "ratio": None if ref is None or rms is None else rms / ref,
                           "threshold": RATIO_THRESHOLD, "fits": None, "path": "defaults",
                           "path_settings": None}
    if op is not None and y is not None and solver is not None and not x_warm.is_complex():
        cv = heldout_prediction(denoiser, op, y, solver, slab=slab)
        out.update(statistic="heldout_prediction_ratio", sigma=CV_SIGMA, heldout=cv,
                   heldout_ratio=cv[f"q{CV_SIGMA:g}"], threshold=CV_THRESHOLD)
        out["fits"] = out["heldout_ratio"] <= CV_THRESHOLD
        out["seconds"] = time.perf_counter() - t0
        what = (f"held-out prediction ratio {out['heldout_ratio']:.2f} at sigma {CV_SIGMA:g} (threshold "
                f"{CV_THRESHOLD:.2f}: the error of its denoised warm start on {cv['held_lines']} held-out "
                f"{'views' if y.dim() == 3 else 'k-space lines'} of {cv['lines']} over the TV image's)")
    elif ref is None or rms is None:
        log.info("prior %r records no denoising error at sigma %g (%s); no fit check", name,
                 FIT_SIGMA, EVAL_FILE)
        return out
    else:
        out["fits"] = out["ratio"] <= RATIO_THRESHOLD
        what = (f"denoising residual ratio {out['ratio']:.2f} at sigma {FIT_SIGMA:g} ({rms:.4f} vs its "
                f"own {ref:.4f}; threshold {RATIO_THRESHOLD:.1f} x)")
    if out["fits"]:
        return out
    if adapting:
        out["path"], tail = "adapt", "adapting the prior to the measurement (adapt=true)"
    elif fallback:
        out["path"], out["path_settings"] = "safe start", dict(fallback)
        tail = ("this run takes the safe start " + " ".join(f"{k}={v:g}" for k, v in fallback.items())
                + " (set start_sigma and steps to choose); consider --set adapt=true")
    else:
        out["path"], tail = "as set", "running the settings given; consider --set adapt=true"
    if slab is None or slab.is_first:
        log.warning("prior %r may not fit this study: %s; %s", name, what, tail)
    return out


class _HeldOut:
    """Data lines held out for the cross-validated statistic: every ``period``-th sampled line
    along one data axis (CT ``[Z, views, detector]``: views; MR ``[Z, coils, ky, kx]``: the sampled
    phase-encoding lines), the same for every slice."""

    def __init__(self, y: torch.Tensor, period: int = 4, peripheral: bool = False) -> None:
        sampled = (y.abs() > 0).reshape(-1, *y.shape[-2:]).any(dim=0)        # [L, M]
        if y.dim() == 3:       # CT: every view is a line (detector bins outside the body read 0)
            sampled = sampled.any(dim=1, keepdim=True).expand_as(sampled)
        rows_whole = bool(((sampled.all(dim=1)) | (~sampled.any(dim=1))).all())
        self.axis = -2 if rows_whole else -1
        line_sampled = sampled.any(dim=1) if self.axis == -2 else sampled.any(dim=0)
        lines = line_sampled.nonzero().flatten()
        self.lines = int(len(lines))
        if peripheral:
            lines = peripheral_lines(line_sampled)
        held = lines[::period] if len(lines) >= 2 * period else lines[:1]
        n = y.shape[self.axis]
        keep = torch.ones(n, dtype=torch.bool)
        keep[held] = False
        shape = [1] * y.dim()
        shape[self.axis] = n
        self.keep = keep.reshape(shape).to(y.device)
        self.held = int(len(held))


def peripheral_lines(sampled: torch.Tensor, block: int = 3) -> torch.Tensor:
    """Indices of the sampled lines outside every run of ``block`` or more consecutive sampled
    lines (a 1D k-space mask's fully sampled centre): ``sampled`` ``[L]`` bool. All sampled lines
    when none lies outside such a run."""
    from scipy import ndimage

    labels, _ = ndimage.label(sampled.cpu().numpy())       # each run of sampled lines: 1, 2, ...
    run_length = np.bincount(labels)[labels]
    outside = torch.from_numpy(np.nonzero((labels > 0) & (run_length < block))[0])
    return outside if len(outside) else sampled.nonzero().flatten().cpu()


class _Masked:
    """``M A``: an operator whose data outside ``keep`` are zero (duck-typed LinearOperator)."""

    def __new__(cls, op, keep: torch.Tensor):
        from medrecon.physics.operator import LinearOperator

        class Masked(LinearOperator):
            def __init__(self) -> None:
                super().__init__(op.in_shape, op.out_shape, op.in_dtype, op.out_dtype, op.device)

            def _forward(self, x: torch.Tensor) -> torch.Tensor:
                return op.forward(x) * keep

            def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
                return op.adjoint(y * keep)

            def _subset(self, sl: slice):
                return _Masked(op.subset(sl), keep)

        return Masked()




@torch.no_grad()
def heldout_prediction(denoiser: Denoiser, op: Any, y: torch.Tensor, solver: Callable,
                       sigmas: Sequence[float] = (CV_SIGMA,), slices: int = FIT_SLICES,
                       seed: int = 0, period: int = CV_PERIOD, slab: Optional["Slab"] = None,
                       peripheral: bool = False, cg_iterations: int = CV_CG_ITERATIONS) -> dict:
    """Cross-validated fit (module docstring): ``solver`` (the warm-start solver) on the data
    without every ``period``-th line (view or k-space line), then per sigma ``q = ||H (A
    D(x_cv + sigma n, sigma) - y)|| / ||H (A x_cv - y)||`` over the held-out lines ``H`` of up
    to ``slices`` evenly spaced slices (sums in slice order: equal on 1 or N processes).
    ``cg_iterations`` > 0: the denoised estimate first takes that many conjugate-gradient steps
    on the kept lines (``min ||M(A x - y)||^2`` from ``D``), as one DDS step does, so that what
    the noise removed and the kept data determine is restored before the held-out lines judge."""
    from medrecon.samplers.prior_calls import from_prior_batch

    held = _HeldOut(y, period, peripheral)
    kept_op, kept_y = _Masked(op, held.keep), y * held.keep
    x_cv = solver(kept_op, kept_y)
    rhs = kept_op.adjoint(kept_y) if cg_iterations > 0 else None
    chosen, mine, lo = _chosen(x_cv, slices, slab)
    miss = ~held.keep

    def per_slice(x: torch.Tensor) -> torch.Tensor:
        r = (op.forward(x) - y) * miss
        return r.abs().pow(2).reshape(r.shape[0], -1).sum(dim=1).to(torch.float64).cpu()

    base = per_slice(x_cv)
    out: dict[str, Any] = {"held_lines": held.held, "lines": held.lines, "period": period,
                           "peripheral": peripheral, "cg_iterations": cg_iterations}
    for sigma in sigmas:
        x_d = x_cv.clone()
        if mine:
            d = prior_chunked(denoiser, _noisy(x_cv, chosen, mine, lo, sigma, seed), sigma, 8)
            x_d[mine] = from_prior_batch(d, x_cv.dtype if x_cv.is_complex() else None)
        if cg_iterations > 0:
            x_d = conjugate_gradient(kept_op.normal, rhs, x_d, cg_iterations, batched=True)
        partials = torch.zeros((int(x_cv.shape[0]), 2), dtype=torch.float64)
        partials[mine, 0] = base[mine]
        partials[mine, 1] = per_slice(x_d)[mine]
        total = ordered_sum(partials, slab)
        out[f"q{sigma:g}"] = math.sqrt(float(total[1]) / max(float(total[0]), 1e-30))
    return out
