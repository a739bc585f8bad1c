"""One call for the CLI: a sampler (or K of them) on working-unit data, result in working units.

:func:`reconstruct` maps the data from medrecon's working units (:mod:`medrecon.tasks`) to the
prior's units with the prior's model card (:func:`~medrecon.samplers.intensity.prior_map_for_measurement`),
runs ``dds`` or ``mbir`` (or :func:`~medrecon.samplers.posterior.sample_posterior` when
``samples > 1``) and maps the result, and the standard deviation, back to working units.

A warm-started DDS (``start_sigma > 0``) starts from the image of a *warm-start solver*
``warm_start(op, y_prior) -> x_prior`` (the data and the image in the prior's units, where the
TV weights' convention holds) the caller hands over; by default :func:`tv_warm_start`, ADMM-TV
with the task's default settings.

Distributed (``slab``): a prior that normalises by the data (MR, intensity convention
"normalised") takes its percentile over the whole volume's SENSE image, gathered on rank 0,
so every rank maps its slab with the same scale as a single process would.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import torch

from medrecon.errors import UserError
from medrecon.physics.operator import LinearOperator
from medrecon.prior.denoiser import Denoiser
from medrecon.samplers.config import SamplerConfig, config_for_task, with_overrides
from medrecon.samplers.intensity import (IntensityMap, mri_intensity, normalisation,
                                         prior_map_for_measurement, recorded_noise_sigma)
from medrecon.samplers.problem import volume_shape
from medrecon.tasks import views_of
from medrecon.samplers.resume import check_resumable, problem_identity, sampler_identity
from medrecon.samplers.conventions import operator_norm_sq
from medrecon.samplers.posterior import SAMPLERS, sample_posterior, sample_store
from medrecon.samplers.prior_fit import fit_config, prior_fit, safe_path
from medrecon.samplers.state import StateStore

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

# A warm-start solver: data y of op (prior units) -> an image [Z, Y, X] in the same units.
WarmStart = Callable[[LinearOperator, torch.Tensor], torch.Tensor]

log = logging.getLogger(__name__)


@dataclass
class Reconstruction:
    """``x`` ``[Z, Y, X]`` in working units; ``std`` (None for one sample) in working units."""

    x: torch.Tensor
    std: Optional[torch.Tensor]
    info: dict


def reconstruct(method: str, op: LinearOperator, y: torch.Tensor, denoiser: Denoiser,
                measurement: Any = None, config: Optional[SamplerConfig] = None, *,
                samples: int = 1, seed: int = 0, store: Optional[StateStore] = None,
                save_every: int = 0, resume: bool = False, progress: bool = False,
                x_init: Optional[torch.Tensor] = None, warm_start: Optional[WarmStart] = None,
                slab: Optional["Slab"] = None, user_settings: Optional[Iterable[str]] = None,
                fit_solver: Optional[WarmStart] = None, **overrides: Any) -> Reconstruction:
    """Run ``method`` ("dds" | "mbir") on working-unit data ``y`` of ``measurement``.

    ``config`` defaults to the task's defaults (``measurement.task``); ``overrides`` replace fields.
    The intensity map comes from ``denoiser.card`` (identity without a card or a measurement:
    ``y`` is then taken to be in the prior's units). A warm-started DDS (``start_sigma > 0``)
    starts from ``x_init`` (prior units) or from ``warm_start(op, y_prior)`` (default
    :func:`tv_warm_start`); ``info["time_warm_start"]`` is the time spent on that start (s).
    ``fit_solver``: the solver of the prior-fit check's reference image (default: ``warm_start``
    when given, else ADMM-TV at the task's weight without the view scaling, the weight the
    check's threshold was measured with).
    ``store``: where the sampler state is saved (see :class:`~medrecon.samplers.loop.RunOptions`);
    ``slab``: this process's z-slab of a distributed run (``op``, ``y`` and the result are its
    slices). ``user_settings``: the names of the settings the user chose; when the prior does
    not fit (:mod:`~medrecon.samplers.prior_fit`) and they hold no path setting, the run takes
    the measured-safe start (None: the caller's settings are kept as they are).
    """
    if method not in SAMPLERS:
        raise UserError(f"unknown sampler {method!r}; choose one of {sorted(SAMPLERS)}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserError(f"samples must be a positive integer, got {samples!r}")
    task = getattr(measurement, "task", None)
    cfg = config if config is not None else config_for_task(method, task, op.in_shape[-2:],
                                                            views_of(task, op))
    card = getattr(denoiser, "card", None)
    if measurement is None:
        imap = IntensityMap(0.0, 1.0)
    elif slab is not None and slab.distributed and card is not None and normalisation(card):
        imap = _whole_volume_intensity(op, y, card, slab)
    else:
        imap = prior_map_for_measurement(measurement, card, op, y)
    y_p = imap.data_to_prior(op, y)
    cfg = with_overrides(cfg, **overrides)
    if int(getattr(denoiser, "slice_group", 1)) > 1:
        cfg = group_settings(method, cfg, card, measurement)
    noise_working = 0.0
    if method == "dds":  # the noise level in working units (given, or recorded) -> prior units
        noise_working = cfg.noise_sigma or (recorded_noise_sigma(measurement) if measurement else 0.0)
        if noise_working > 0:
            cfg = with_overrides(cfg, noise_sigma=noise_working / imap.scale)
    common: dict[str, Any] = dict(seed=seed, store=store, save_every=save_every,
                                  resume=resume, progress=progress, slab=slab)
    given = None if user_settings is None else {*user_settings, *overrides}
    fallback = safe_path(given) if method == "dds" else None
    if resume and store is not None:       # refuse another run's state before the warm start
        try:
            common["op_norm_sq"] = check_resume_first(method, op, y_p, denoiser, cfg, seed, samples,
                                                      store, slab)
        except UserError:                  # or a state saved on the safe start (prior_fit)
            if not fallback:
                raise
            common["op_norm_sq"] = check_resume_first(method, op, y_p, denoiser,
                                                      with_overrides(cfg, **fallback), seed,
                                                      samples, store, slab)
    warm_seconds = 0.0
    solver = warm_start if warm_start is not None else tv_warm_start(task, slab, progress)
    if fit_solver is None:
        fit_solver = warm_start if warm_start is not None else \
            tv_warm_start(task, slab, progress, by_views=False)
    if x_init is not None:
        common["x_init"] = x_init
    elif method == "dds" and getattr(cfg, "start_sigma", 0.0) > 0:
        t0 = time.perf_counter()
        # in prior units, where the TV weights' convention (images in a [0, 1] window) holds
        with torch.no_grad():
            common["x_init"] = solver(op, y_p)
        warm_seconds = time.perf_counter() - t0
    card = getattr(denoiser, "card", None)
    fit = None
    if card is not None and measurement is not None:
        check_prior_fit(common.get("x_init"), op, y_p, card, slab)
        if common.get("x_init") is not None and int(getattr(denoiser, "slice_group", 1)) == 1:
            # issue 24: does the prior fit? (prior_fit.py; 2D priors)
            fit = prior_fit(denoiser, common["x_init"], card, slab, op=op, y=y_p, solver=fit_solver,
                            fallback=fallback, adapting=bool(getattr(cfg, "adapt", False)))
            cfg = fit_config(cfg, fit)
    if samples == 1:
        result = SAMPLERS[method](op, y_p, denoiser, cfg, **common)
        return Reconstruction(imap.image_from_prior(result.x), None,
                              {**result.info, "intensity_map": [imap.lo, imap.scale],
                               "noise_sigma_working": noise_working,
                               "time_warm_start": warm_seconds, "prior_fit": fit})
    post = sample_posterior(method, op, y_p, denoiser, samples, cfg, **common)
    return Reconstruction(imap.image_from_prior(post.mean), post.std * imap.scale,
                          {"method": method, "samples": samples, "seeds": post.seeds,
                           "time_warm_start": warm_seconds, "noise_sigma_working": noise_working,
                           "intensity_map": [imap.lo, imap.scale], "runs": post.infos,
                           "prior_fit": fit})


def group_settings(method: str, cfg: SamplerConfig, card: Any, measurement: Any) -> SamplerConfig:
    """A slice-group prior's DDS settings: the slice spacing from the measurement's volume when
    not given, and a warning when it lies outside the spacings the prior was trained on."""
    if method != "dds":
        raise UserError(f"slice-group priors run with dds only, not {method}")
    spacing = float(cfg.z_spacing_mm)
    if not spacing > 0 and measurement is not None:
        recorded = (getattr(measurement, "attrs", {}).get("volume") or {}).get("spacing")
        if recorded:
            spacing = float(recorded[0])
            cfg = with_overrides(cfg, z_spacing_mm=spacing)
    trained = ((card or {}).get("slice_group") or {}).get("z_spacing_mm")
    if trained and spacing > 0 and not trained[0] * 0.98 <= spacing <= trained[1] * 1.02:
        log.warning("prior %r was trained on slice groups %g-%g mm apart; these slices are %g mm "
                    "apart: expect a degraded result", (card or {}).get("name", "?"), trained[0],
                    trained[1], spacing)
    return cfg


def check_resume_first(method: str, op: LinearOperator, y_prior: torch.Tensor,
                       denoiser: Denoiser, cfg: SamplerConfig, seed: int, samples: int,
                       store: StateStore, slab: Optional["Slab"] = None) -> float:
    """Refuse a resume whose saved state belongs to another run (seed, prior, settings, steps,
    measurement, process count) before any work: the check the sampler makes, with the same
    identity, made ahead of the warm start. Returns ``||A||^2`` (the sampler reuses it)."""
    norm_sq = operator_norm_sq(op, slab)
    shape = volume_shape(y_prior, slab)
    exact, probes = problem_identity(op, y_prior, denoiser)
    runs = [(store, seed)] if samples == 1 else [(sample_store(store, k), seed + k)
                                                 for k in range(samples)]
    for sub, sub_seed in runs:
        identity = {**sampler_identity(cfg, sub_seed, norm_sq, shape, op, denoiser), **exact}
        check_resumable(method, cfg.steps, identity, probes, sub, slab)
    return norm_sq


# Where the data's image falls in the prior's units ([0, 1] is the prior's window): its 99th
# percentile beyond these bounds means the window does not fit the data (refused), or fits
# poorly (warned).
FIT_REFUSE = (0.1, 4.0)
FIT_WARN = (0.3, 1.5)


@torch.no_grad()
def check_prior_fit(x_prior: Optional[torch.Tensor], op: LinearOperator, y_prior: torch.Tensor,
                    card: dict, slab: Optional["Slab"] = None) -> tuple[float, float]:
    """Check that the measurement's image lies in the prior's intensity window.

    ``x_prior``: an image in prior units (the warm start), or None: then 10 CGLS iterations on
    the prior-unit data ``y_prior`` give one. Refuses (DataError) when the image's 99th
    percentile (of the magnitude for complex images) is below 0.1 or above 4 prior units, or
    its 1st percentile below -3: the prior would see data far outside what it learned, and
    the result is meaningless (e.g. -23 dB). Warns between those and [0.3, 1.5]. Returns the
    (1st, 99th) percentiles. Distributed (``slab``): the percentiles of the whole volume."""
    from medrecon.errors import DataError
    from medrecon.solvers.classical import cgls

    x = x_prior if x_prior is not None else cgls(op, y_prior, 10, slab=slab)
    v = fit_sample(x, slab)
    p1, p99 = (float(q) for q in torch.quantile(v, torch.tensor([0.01, 0.99], dtype=torch.float64)))
    intensity = card.get("intensity", {}) if isinstance(card, dict) else {}
    window = f"window {intensity.get('window')} {intensity.get('units', '')}".rstrip()
    where = f"prior {card.get('name', '?')!r} ({window})"
    if not (FIT_REFUSE[0] <= p99 <= FIT_REFUSE[1]) or p1 < -3.0:
        raise DataError(f"{where} does not fit this measurement: its image spans "
                        f"[{p1:.3g}, {p99:.3g}] (1st-99th percentile) in the prior's units, where "
                        f"the prior knows [0, 1]; choose a prior trained on data like these (or "
                        f"fix the card's intensity window)")
    if not (FIT_WARN[0] <= p99 <= FIT_WARN[1]) or p1 < -0.5:
        log.warning("%s fits this measurement poorly: its image spans [%.3g, %.3g] in the "
                    "prior's units (the prior knows [0, 1]); expect a degraded result", where,
                    p1, p99)
    return p1, p99


FIT_SAMPLE = 4_000_000
"""At most this many voxels of the whole volume enter the prior-fit percentiles."""


def fit_sample(x: torch.Tensor, slab: Optional["Slab"] = None) -> torch.Tensor:
    """The voxels of the whole volume that the prior-fit check judges (float64, on the CPU):
    every ``s``-th voxel of every slice, ``s`` set by the whole volume's size so at most
    :data:`FIT_SAMPLE` are taken; gathered in slice order over a distributed ``slab``, so every
    rank and a single process judge the same values."""
    n = slab.n if slab is not None and slab.distributed else x.shape[0]
    per_slice = x[0].numel()
    stride = max(1, -(-n * per_slice // FIT_SAMPLE))
    v = (x.abs() if x.is_complex() else x).reshape(x.shape[0], -1)[:, ::stride].to(torch.float64)
    if slab is not None and slab.distributed:
        v = slab.all_gather(v.contiguous())
    return v.flatten().cpu()


def tv_warm_start(task: Optional[str], slab: Optional["Slab"] = None,
                  progress: bool = False, by_views: bool = True) -> WarmStart:
    """The default warm-start solver: ADMM-TV with the task's default settings
    (:class:`medrecon.config.TVSettings`; no non-negativity for complex images), the weight
    scaled by the number of views (:func:`medrecon.config.apply_view_default`) unless
    ``by_views`` is False (the prior-fit check's reference image: its threshold was measured
    at the unscaled weight)."""
    from medrecon.config import apply_view_default, make_settings
    from medrecon.solvers.classical import tv_reconstruction

    show = progress and (slab is None or slab.is_first)

    def solve(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
        settings = make_settings("tv", task=task)
        if by_views:
            apply_view_default(settings, task, views_of(task, op))
        if op.in_dtype.is_complex:
            settings.nonnegative = False
        with torch.no_grad():
            return tv_reconstruction(op, y, settings, show, slab)

    return solve


def warm_start_image(op: LinearOperator, y: torch.Tensor, task: Optional[str],
                     progress: bool = False) -> torch.Tensor:
    """The start of a warm-started DDS run with the default solver (:func:`tv_warm_start`),
    ``[Z, Y, X]`` in the units of ``y``."""
    return tv_warm_start(task, progress=progress)(op, y)


@torch.no_grad()
def _whole_volume_intensity(op: LinearOperator, y: torch.Tensor, card: Any, slab: "Slab"
                            ) -> IntensityMap:
    """:func:`~medrecon.samplers.intensity.mri_intensity` of the whole volume when ``op`` and
    ``y`` hold one slab: SENSE acts slice by slice, so the slabs' images put together on rank 0
    are the single-process image; rank 0 takes the percentile there and shares the map."""
    from medrecon.solvers.classical import sense

    if not op.in_dtype.is_complex:
        raise UserError(f"prior {card.get('name', '?')!r} is an MR prior (normalised magnitude); "
                        f"the data are not MRI k-space")
    norm = normalisation(card)
    image = slab.gather(sense(op, y, iterations=10).contiguous())
    value = None
    if slab.is_first:
        assert image is not None
        whole = _Identity(image.shape[1:], image.dtype, image.device)
        value = mri_intensity(whole, image, norm["percentile"], norm["target"]).scale
    return IntensityMap(0.0, float(slab.broadcast_object(value)))


class _Identity(LinearOperator):
    """``A = I`` on ``[Z, Y, X]``: SENSE of an image under it (CG on ``x = y``) is the image
    itself, exactly (one CG step with step size 1), so :func:`mri_intensity` of the gathered
    SENSE image under it is the single-process normalisation."""

    def __init__(self, image_shape: Any, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__((None, *image_shape), (None, *image_shape), dtype, dtype, device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y
