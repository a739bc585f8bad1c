"""Does the prior fit this measurement? A cheap statistic computed before sampling (issue 24).

The statistic is the prior's *denoising residual ratio* on the warm start ``x_w`` (the ADMM-TV
image DDS starts from, prior units):

    ratio = RMS( D(x_w + sigma n, sigma) - x_w ) / RMSE_ref(sigma),     sigma = 0.1

on up to 8 evenly spaced slices, seeded noise ``n``. ``RMSE_ref`` is the prior's own denoising
error at the same sigma on its evaluation slices, read from the ``prior_eval.json`` beside its
weights (written by ``medrecon prior-eval``; ``10^(-PSNR/20)`` with data range 1). Why this
measures fit: an image like the prior's training data comes back from ``D`` with about the
prior's usual error, so the ratio is near 1 (above it by what the warm start's own artefacts add);
an image unlike them is pulled towards what the prior knows (its texture flattened, its edges
moved) and the residual grows. It costs one network call per chosen slice.

The threshold :data:`RATIO_THRESHOLD` = 1.4 lies between the values measured on development
cases (benchmarks/adaptation.py, 8 x 128 x 128, 8 views, results/adaptation/adaptation.json):
1.05 for the chest-ct prior on lung1 (in distribution) and 1.81 for the phantom prior on lung1
(out of distribution). It does NOT separate every out-of-distribution case: the chest-ct prior on
the abdomen part of the TotalSegmentator volume measured 0.93 (no warning), although DDS fell
0.3 dB below ADMM-TV there. The absolute residuals of the three cases were close (0.025-0.028):
on an 8-view warm start, the residual mostly measures the warm start's own artefacts, and the
ratio separates priors by their reference error more than by fit. A better statistic is open.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from medrecon.prior.denoiser import Denoiser
from medrecon.distributed.reduce import ordered_sum, slice_norm_sq
from medrecon.samplers.prior_calls import prior_chunked, to_prior_batch

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

log = logging.getLogger(__name__)

FIT_SIGMA = 0.1
FIT_SLICES = 8
RATIO_THRESHOLD = 1.4
EVAL_FILE = "prior_eval.json"


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


@torch.no_grad()
def denoising_residual(denoiser: Denoiser, x: torch.Tensor, sigma: float = FIT_SIGMA,
                       slices: int = FIT_SLICES, seed: int = 0,
                       slab: Optional["Slab"] = None) -> float:
    """``RMS(D(x + sigma n, sigma) - x)`` over up to ``slices`` evenly spaced slices of the
    ``[Z, Y, X]`` image ``x`` (prior units; of the whole volume when ``x`` is one slab)."""
    n = slab.n if slab is not None and slab.distributed else int(x.shape[0])
    lo = slab.lo if slab is not None and slab.distributed else 0
    chosen = sorted({round(k * (n - 1) / max(1, min(slices, n) - 1)) for k in range(min(slices, n))})
    mine = [k - lo for k in chosen if lo <= k < lo + int(x.shape[0])]
    partials = torch.zeros((int(x.shape[0]), 2), dtype=torch.float64)   # per slice: sum of squares, count
    if mine:
        batch = to_prior_batch(x[mine])
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn((len(chosen), *batch.shape[1:]) if not x.is_complex() else
                            (2 * len(chosen), *batch.shape[1:]), generator=g)
        per = 2 if x.is_complex() else 1
        rows = [per * chosen.index(k + lo) + j for k in mine for j in range(per)]
        noisy = batch + sigma * noise[rows].to(batch.device, batch.dtype)
        d = prior_chunked(denoiser, noisy, sigma, 8) - batch
        row_sq = slice_norm_sq(d).cpu().reshape(len(mine), per).sum(dim=1)
        partials[mine, 0] = row_sq
        partials[mine, 1] = float(d[0].numel() * per)
    total = ordered_sum(partials, slab)   # in slice order: the same value on 1 or N processes
    return math.sqrt(float(total[0]) / max(float(total[1]), 1.0))


def prior_fit(denoiser: Denoiser, x_warm: torch.Tensor, card: Any,
              slab: Optional["Slab"] = None) -> dict:
    """The fit statistic of ``denoiser`` on the warm start ``x_warm`` (module docstring), as
    recorded in the run info; warns (one line) when the ratio exceeds the threshold."""
    name = card.get("name", "?") if isinstance(card, dict) else "?"
    ref = reference_rmse(card) if isinstance(card, dict) else None
    rms = denoising_residual(denoiser, x_warm, slab=slab) if ref is not None else None
    out: dict[str, Any] = {"prior": name, "statistic": "denoising_residual_ratio",
                           "sigma": FIT_SIGMA, "residual_rms": rms, "reference_rmse": ref,
                           "ratio": None if ref is None or rms is None else rms / ref,
                           "threshold": RATIO_THRESHOLD, "fits": None}
    if ref is None or rms is None:
        log.info("prior %r records no denoising error at sigma %g (%s); no fit check", name,
                 FIT_SIGMA, EVAL_FILE)
        return out
    out["fits"] = out["ratio"] <= RATIO_THRESHOLD
    if not out["fits"] and (slab is None or slab.is_first):
        log.warning("prior %r may not fit this study: its denoising residual on the warm start at "
                    "sigma %g is %.2f x its own (%.4f vs %.4f; threshold %.1f x); consider "
                    "--set adapt=true", name, FIT_SIGMA, out["ratio"], rms, ref, RATIO_THRESHOLD)
    return out
