"""One call for the CLI: a sampler (or K of them) on working-unit data, result in working units.

:func:`reconstruct` maps the data from medrecon's working units (:mod:`medrecon.tasks`) to the
prior's units with the prior's model card (:func:`~medrecon.samplers.intensity.prior_map_for_measurement`),
runs ``dds`` or ``mbir`` (or :func:`~medrecon.samplers.posterior.sample_posterior` when
``samples > 1``) and maps the result, and the standard deviation, back to working units.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from medrecon.errors import UserError
from medrecon.physics.operator import LinearOperator
from medrecon.prior.denoiser import Denoiser
from medrecon.samplers.config import SamplerConfig, config_for_task, with_overrides
from medrecon.samplers.intensity import IntensityMap, prior_map_for_measurement
from medrecon.samplers.posterior import SAMPLERS, sample_posterior


@dataclass
class Reconstruction:
    """``x`` ``[Z, Y, X]`` in working units; ``std`` (None for one sample) in working units."""

    x: torch.Tensor
    std: Optional[torch.Tensor]
    info: dict


def reconstruct(method: str, op: LinearOperator, y: torch.Tensor, denoiser: Denoiser,
                measurement: Any = None, config: Optional[SamplerConfig] = None, *,
                samples: int = 1, seed: int = 0, state_dir: Optional[str | os.PathLike] = None,
                save_every: int = 0, resume: bool = False, progress: bool = False,
                x_init: Optional[torch.Tensor] = None, **overrides: Any) -> Reconstruction:
    """Run ``method`` ("dds" | "mbir") on working-unit data ``y`` of ``measurement``.

    ``config`` defaults to the task's defaults (``measurement.task``); ``overrides`` replace fields.
    The intensity map comes from ``denoiser.card`` (identity without a card or a measurement:
    ``y`` is then taken to be in the prior's units). A warm-started DDS (``start_sigma > 0``)
    starts from ``x_init`` (prior units) or, by default, from
    :func:`warm_start_image`; ``info["time_warm_start"]`` is the time spent on that start (s).
    """
    if method not in SAMPLERS:
        raise UserError(f"unknown sampler {method!r}; choose one of {sorted(SAMPLERS)}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserError(f"samples must be a positive integer, got {samples!r}")
    task = getattr(measurement, "task", None)
    cfg = config if config is not None else config_for_task(method, task)
    imap = (prior_map_for_measurement(measurement, getattr(denoiser, "card", None), op, y)
            if measurement is not None else IntensityMap(0.0, 1.0))
    y_p = imap.data_to_prior(op, y)
    cfg = with_overrides(cfg, **overrides)
    common: dict[str, Any] = dict(seed=seed, state_dir=state_dir, save_every=save_every,
                                  resume=resume, progress=progress)
    warm_seconds = 0.0
    if x_init is not None:
        common["x_init"] = x_init
    elif method == "dds" and getattr(cfg, "start_sigma", 0.0) > 0:
        t0 = time.perf_counter()
        # in prior units, where the TV weights' convention (images in a [0, 1] window) holds
        common["x_init"] = warm_start_image(op, y_p, task, progress)
        warm_seconds = time.perf_counter() - t0
    if samples == 1:
        result = SAMPLERS[method](op, y_p, denoiser, cfg, **common)
        return Reconstruction(imap.image_from_prior(result.x), None,
                              {**result.info, "intensity_map": [imap.lo, imap.scale],
                               "time_warm_start": warm_seconds})
    post = sample_posterior(method, op, y_p, denoiser, samples, cfg, **common)
    return Reconstruction(imap.image_from_prior(post.mean), post.std * imap.scale,
                          {"method": method, "samples": samples, "seeds": post.seeds,
                           "time_warm_start": warm_seconds,
                           "intensity_map": [imap.lo, imap.scale], "runs": post.infos})


def warm_start_image(op: LinearOperator, y: torch.Tensor, task: Optional[str],
                     progress: bool = False) -> torch.Tensor:
    """The start of a warm-started DDS run (``start_sigma > 0``): ADMM-TV with the task's
    default settings (:class:`medrecon.config.TVSettings`), ``[Z, Y, X]`` in the units of ``y``."""
    from medrecon.config import make_settings
    from medrecon.methods import tv_reconstruction

    settings = make_settings("tv", task=task)
    if op.in_dtype.is_complex:
        settings.nonnegative = False
    with torch.no_grad():
        return tv_reconstruction(op, y, settings, progress)
