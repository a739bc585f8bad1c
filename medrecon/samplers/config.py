"""Sampler settings: :class:`MbirConfig`, :class:`DdsConfig`, per-task defaults, YAML configs.

ADMM weights are *relative* (``lam_rel``, ``rho_rel``, ``gamma_rel``; see
:mod:`medrecon.samplers.conventions`): the sampler multiplies them by the operator's ``||A||^2``.
A YAML config (``configs/mbir_*.yaml``, ``configs/dds_*.yaml``) has medrecon's config layout
(:mod:`medrecon.config`): ``method`` (mbir | dds), optional ``task`` and ``description``, and
``settings``, a mapping of fields of the config class; fields not given take the task's defaults
(or the class defaults without a task). The classes are plain (mutable) dataclasses so that
medrecon's settings machinery can fill them; samplers call :meth:`validate` before use.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from medrecon.errors import DataError, UserError
from medrecon.prior.precision import PRECISIONS
from medrecon.samplers.fewstep import SCHEDULE_SETTINGS
from medrecon.solvers.tv import BOUNDARIES

TASKS = ("sparse-view-ct", "limited-angle-ct", "cs-mri")   # as medrecon.tasks.TASKS
CORRECTOR_NORMS = ("slice", "chunk")


def _check_positive_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise UserError(f"{name} must be a positive integer, got {v!r}")


def _check_number(name: str, v: Any, lo: float = -math.inf, lo_open: bool = False,
                  hi: float = math.inf) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UserError(f"{name} must be a finite number, got {v!r}")
    if v < lo or (lo_open and v == lo) or v > hi:
        raise UserError(f"{name} must be {'>' if lo_open else '>='} {lo}"
                        f"{'' if hi == math.inf else f' and <= {hi}'}, got {v!r}")


def _check_common(c: Any) -> None:
    _check_positive_int("steps", c.steps)
    _check_number("lam_rel", c.lam_rel, 0.0)
    _check_number("rho_rel", c.rho_rel, 0.0, lo_open=True)
    _check_positive_int("cg_iterations", c.cg_iterations)
    _check_positive_int("chunk", c.chunk)
    if c.precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {c.precision!r}")
    if c.boundary not in BOUNDARIES:
        raise UserError(f"boundary must be one of {BOUNDARIES}, got {c.boundary!r}")


@dataclass
class MbirConfig:
    """DiffusionMBIR: VE predictor-corrector + one ADMM-TV(z) iteration per step on the sample.

    steps: diffusion steps N (2 network evaluations per slice each; published 2000).
    snr: Langevin corrector signal-to-noise ratio (published 0.16).
    sigma_min, sigma_max: requested geometric schedule (published 0.01, 378), clipped to the
        prior's trained range.
    lam_rel, rho_rel: ADMM weights relative to ``||A||^2``.
    cg_iterations: CG iterations of the ADMM x-update per step (published 1).
    boundary: D_z boundary, "neumann" (default) or "circular" (published).
    final_dc: a last SIRT-like step ``x += A^T(y - A x) / A^T A 1`` (published, CT only).
    corrector_norm: "slice" (per-image step sizes: results independent of ``chunk``) or
        "chunk" (published: norms averaged over the chunk).
    chunk: prior images per network call (memory only, unless corrector_norm="chunk").
    precision: the network's arithmetic, as for DDS.
    """

    steps: int = 2000
    snr: float = 0.16
    sigma_min: float = 0.01
    sigma_max: float = 378.0
    lam_rel: float = 1.026e-4
    rho_rel: float = 0.02564
    cg_iterations: int = 1
    boundary: str = "neumann"
    final_dc: bool = True
    corrector_norm: str = "slice"
    chunk: int = 12
    precision: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "MbirConfig":
        """Check every field (UserError naming the field); returns self."""
        _check_common(self)
        _check_number("snr", self.snr, 0.0, lo_open=True)
        _check_number("sigma_min", self.sigma_min, 0.0, lo_open=True)
        _check_number("sigma_max", self.sigma_max, self.sigma_min)
        if self.corrector_norm not in CORRECTOR_NORMS:
            raise UserError(f"corrector_norm must be one of {CORRECTOR_NORMS}, got "
                            f"{self.corrector_norm!r}")
        if not isinstance(self.final_dc, bool):
            raise UserError(f"final_dc must be true or false, got {self.final_dc!r}")
        return self

    def identity(self) -> dict:
        """The settings that determine the result (chunk only matters for chunk norms)."""
        d = dataclasses.asdict(self)
        d.pop("precision")                   # the resolved precision is in the run's identity
        if self.corrector_norm != "chunk":
            d.pop("chunk")
        return d


@dataclass
class DdsConfig:
    """DDS: DDIM on the VP schedule, ADMM-TV(z) with warm-started CG on the Tweedie estimate.

    steps: DDIM steps = network evaluations per slice (published 50).
    eta: re-noising weight (published 0.85; 0 = deterministic given the start).
    lam_rel, rho_rel: ADMM weights relative to ``||A||^2``.
    cg_iterations: warm-started CG iterations per step (published 5; sparse-view CT on slices
        of 256 pixels or more: 3, :data:`SIZE_DEFAULTS`).
    tv_z: ADMM-TV along z (True) or per-slice CG data consistency only (False, "2D DDS").
    boundary: D_z boundary, "neumann" (default) or "circular".
    gamma_rel: proximal data consistency for noisy data, ``(I + gamma A^H A) x = x0_hat +
        gamma A^H y`` with ``gamma = gamma_rel / ||A||^2`` (0: off, the plain noise-free form,
        unless ``noise_sigma`` is set).
    noise_sigma: standard deviation of the measurement noise per sample (``E|n|^2``), in the
        units of the data the sampler receives (:func:`medrecon.samplers.run.reconstruct` takes
        it in working units, as ``medrecon simulate --sigma``, and converts). With
        ``gamma_rel = 0`` it sets the proximal weight from the noise, ``gamma =
        (anchor_std / noise_sigma)^2``: the MAP balance of Gaussian data of that noise against
        a Tweedie estimate with error ``anchor_std`` per pixel. 0: noiseless (plain form).
    anchor_std: assumed error of the Tweedie estimate per pixel, prior units (see noise_sigma).
    init_noise: start from ``x_T ~ N(0, I)`` (True) or from ``x_T = 0`` (False, deterministic).
    start_sigma: 0 (default): the full schedule from the prior's largest sigma. > 0: a warm start
        ("come closer, diffuse faster"): the ``steps`` steps cover ``[0, sigma <= start_sigma]``
        and start from ``x_init + sigma n`` with ``x_init`` an initial reconstruction (ADMM-TV
        when the caller gives none; see :func:`medrecon.samplers.run.reconstruct`).
    chunk: prior images per network call (memory only).
    slice_noise_period: 1 (default): independent noise per slice, as published. P > 1: the
        start and re-noising noise correlated across slices, on spherical paths between
        independent anchors every P slices (:mod:`medrecon.samplers.slice_noise`, after ISCS).
    precision: the network's arithmetic: "auto" (bf16 autocast where the device does bf16 fast,
        else float32), "float32" or "bfloat16" (:mod:`medrecon.prior.precision`).
    schedule: where the ``steps`` noise levels sit (:mod:`medrecon.samplers.fewstep`): "auto"
        (default: the prior's fitted schedule for ``steps`` when it ships one, else uniform),
        "uniform" (the published even DDIM spacing) or "fitted" (refused without one). A fitted
        schedule may also set ``eta``, ``cg_iterations`` and ``dc_iterations`` for its steps.
    dc_iterations: ADMM-TV(z) iterations per step (per network call; published 1). More is
        DiffPIR's "more data consistency per network call".
    beta_start, beta_end, timesteps: the VP (DDPM) schedule the DDIM steps live on.
    adapt: adapt the prior to the measurement while sampling (:mod:`medrecon.samplers.adaptation`,
        after DDIP3D): LoRA adapters of rank ``adapt_rank`` on the convolutions plus bias
        offsets, shared by the whole volume; before the network call of every step whose sigma
        is at least ``adapt_until_sigma``, ``adapt_steps`` AdamW steps (learning rate
        ``adapt_lr``), each on ``adapt_slices`` seeded random slices, lower the relative data
        residual of the Tweedie estimate (after ``adapt_cg`` differentiable CG iterations) plus
        ``adapt_tv`` times its mean absolute finite difference (TV per pixel). Off by default.
    group_combine: slice-group priors only (:mod:`medrecon.samplers.group`): how the per-slice
        estimate is assembled from groups: "auto" (default: "centre" for a centre-output prior,
        else "tile"), "tile" (groups tile z, borders move every step, about steps / C calls per
        slice), "centre" (each slice from the group centred on it) or "mean" (mean over all
        groups holding it).
    z_spacing_mm: slice-group priors: the distance between slices (mm) given to the network;
        0: taken from the measurement's volume spacing.
    """

    steps: int = 50
    eta: float = 0.85
    lam_rel: float = 1.026e-4
    rho_rel: float = 0.02564
    cg_iterations: int = 5
    tv_z: bool = True
    boundary: str = "neumann"
    gamma_rel: float = 0.0
    noise_sigma: float = 0.0
    anchor_std: float = 0.1
    init_noise: bool = True
    start_sigma: float = 0.0
    chunk: int = 20
    slice_noise_period: int = 1
    precision: str = "auto"
    schedule: str = "auto"
    dc_iterations: int = 1
    beta_start: float = 1e-4
    beta_end: float = 0.02
    timesteps: int = 1000
    adapt: bool = False
    adapt_steps: int = 3
    adapt_slices: int = 3
    adapt_lr: float = 1e-3
    adapt_rank: int = 4
    adapt_until_sigma: float = 0.0
    adapt_cg: int = 0
    adapt_tv: float = 0.0
    group_combine: str = "auto"
    z_spacing_mm: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "DdsConfig":
        """Check every field (UserError naming the field); returns self."""
        _check_common(self)
        _check_positive_int("slice_noise_period", self.slice_noise_period)
        _check_positive_int("dc_iterations", self.dc_iterations)
        if self.schedule not in SCHEDULE_SETTINGS:
            raise UserError(f"schedule must be one of {', '.join(SCHEDULE_SETTINGS)}, got "
                            f"{self.schedule!r}")
        _check_number("eta", self.eta, 0.0, hi=1.0)
        _check_number("gamma_rel", self.gamma_rel, 0.0)
        _check_number("noise_sigma", self.noise_sigma, 0.0)
        _check_number("anchor_std", self.anchor_std, 0.0, lo_open=True)
        _check_number("start_sigma", self.start_sigma, 0.0)
        for name in ("tv_z", "init_noise"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _check_number("beta_start", self.beta_start, 0.0, lo_open=True)
        _check_number("beta_end", self.beta_end, self.beta_start, hi=0.999)
        _check_positive_int("timesteps", self.timesteps)
        if not isinstance(self.adapt, bool):
            raise UserError(f"adapt must be true or false, got {self.adapt!r}")
        for name in ("adapt_steps", "adapt_slices", "adapt_rank"):
            _check_positive_int(name, getattr(self, name))
        _check_number("adapt_lr", self.adapt_lr, 0.0, lo_open=True)
        _check_number("adapt_until_sigma", self.adapt_until_sigma, 0.0)
        _check_number("adapt_tv", self.adapt_tv, 0.0)
        if isinstance(self.adapt_cg, bool) or not isinstance(self.adapt_cg, int) or self.adapt_cg < 0:
            raise UserError(f"adapt_cg must be a non-negative integer, got {self.adapt_cg!r}")
        if self.group_combine not in ("auto", "tile", "centre", "mean"):
            raise UserError(f"group_combine must be auto, tile, centre or mean, got {self.group_combine!r}")
        _check_number("z_spacing_mm", self.z_spacing_mm, 0.0)
        return self

    def identity(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("chunk")
        if d["slice_noise_period"] == 1:   # the published independent noise: identities as before
            d.pop("slice_noise_period")
        if not d["adapt"]:                 # no adaptation: identities as before
            for name in [k for k in d if k.startswith("adapt")]:
                d.pop(name)
        d.pop("precision")                   # the resolved precision is in the run's identity
        if d["group_combine"] == "auto" and d["z_spacing_mm"] == 0.0:   # 2D priors: as before
            d.pop("group_combine"), d.pop("z_spacing_mm")
        if d["dc_iterations"] == 1:          # the published one ADMM step: identities as before
            d.pop("dc_iterations")
        if d["schedule"] == "auto":          # the default: identities as before
            d.pop("schedule")
        return d


SamplerConfig = Union[MbirConfig, DdsConfig]
CONFIG_CLASSES = {"mbir": MbirConfig, "dds": DdsConfig}

# Per-task defaults (relative weights; see conventions.py). Values not listed take the class
# defaults. DDS: a warm start from ADMM-TV at sigma 0.3 for every task; lam_rel 4e-4 for CT,
# chosen on 8 slices of the held-out chest slab (8 and 4 views, 90-degree wedge) with the shipped
# chest-ct prior from a grid of start_sigma 0.15-1.0 and lam_rel 2.5e-5-1.6e-3; lam_rel 2e-4 for
# MRI, chosen on 4 brain test slices at x4 uniform 1D from 1e-4-5e-3 (38.6 dB vs 36.5 dB with the
# published 0.005, which made TV-z hurt) and checked at x8 Poisson 2D. benchmarks/diffusion.py
# reports the full slabs. mbir keeps the published values converted to medrecon's convention
# (MRI: DiffusionMBIR's values with the orthonormal FFT, ||A|| = 1).
TASK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "mbir": {
        "sparse-view-ct": {"lam_rel": 1.026e-4, "rho_rel": 0.02564, "final_dc": True},
        "limited-angle-ct": {"lam_rel": 1.013e-3, "rho_rel": 0.02532, "final_dc": True},
        "cs-mri": {"lam_rel": 0.005, "rho_rel": 0.01, "final_dc": False, "chunk": 20},
    },
    "dds": {
        "sparse-view-ct": {"lam_rel": 4e-4, "rho_rel": 0.02564, "start_sigma": 0.3},
        "limited-angle-ct": {"lam_rel": 4e-4, "rho_rel": 0.02532, "start_sigma": 0.3},
        "cs-mri": {"lam_rel": 2e-4, "rho_rel": 0.01, "start_sigma": 0.3},
    },
}


# Per-size defaults on top of the task's, for slices of at least the given number of pixels
# (both axes): taken by config_for_task given the slice shape, and by medrecon.methods for the
# fields the user did not set. CT DDS on slices of 256 pixels or more takes 3 CG iterations per
# step instead of 5: chosen on the development volumes (lung1 and the abdomen's training part,
# 12 slices of 256 x 256, benchmarks/results/cg-dev256-*): 8 views +0.52 / -0.05 dB, 16 views
# +0.82 / +0.13 dB (2 CG: +0.46 / -0.39 dB at 8 views; 10 CG: -1.19 dB); lung1 at 512 x 512,
# 32 views, default run: +0.28 dB (cg-dev512-*). At 128 x 128 the same change was mixed
# (+0.56 / -0.20 dB), so 128 keeps 5.
SIZE_DEFAULTS: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {
    "dds": {"sparse-view-ct": (256, {"cg_iterations": 3})},
}


def size_defaults(method: str, task: Optional[str], image_shape: Sequence[int],
                  views: Optional[int] = None) -> dict[str, Any]:
    """The settings that replace the task's defaults of ``method`` for slices of ``image_shape``
    ``(Y, X)`` pixels (:data:`SIZE_DEFAULTS`) and, given the number of projection ``views``,
    for that acquisition (:func:`view_defaults`); empty when none applies."""
    out = dict(view_defaults(method, task, views))
    rule = SIZE_DEFAULTS.get(method, {}).get(task or "")
    if rule is not None and min(int(n) for n in image_shape) >= rule[0]:
        out.update(rule[1])
    return out


def view_defaults(method: str, task: Optional[str], views: Optional[int]) -> dict[str, Any]:
    """DDS on sparse-view CT with more than 8 views: the TV-z weight ``lam_rel`` of the task's
    defaults times :func:`medrecon.config.tv_view_scale` (8 / views), as ADMM-TV's default
    weight: the absolute weight of an 8-view scan. Chosen on development volumes (lung1 at 512 x
    512 with 32 views, lung1 and the abdomen's training part at 256 x 256 with 16 views;
    docs/benchmarks/any-size.md). Empty otherwise."""
    from medrecon.config import tv_view_scale

    scale = tv_view_scale(task, views)
    if method != "dds" or scale == 1.0 or "lam_rel" not in TASK_DEFAULTS[method].get(task or "", {}):
        return {}
    return {"lam_rel": TASK_DEFAULTS[method][task]["lam_rel"] * scale}


def _check_method_task(method: str, task: Optional[str]) -> None:
    if method not in CONFIG_CLASSES:
        raise UserError(f"unknown sampler {method!r}; choose one of {sorted(CONFIG_CLASSES)}")
    if task is not None and task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {TASKS}")


def config_for_task(method: str, task: Optional[str] = None,
                    image_shape: Optional[Sequence[int]] = None, views: Optional[int] = None,
                    **overrides: Any) -> SamplerConfig:
    """The default config of ``method`` ("mbir" | "dds") for ``task`` with ``overrides``; with
    ``image_shape`` ``(Y, X)`` (and the number of projection ``views``) the per-size defaults
    (:func:`size_defaults`) too."""
    _check_method_task(method, task)
    cls = CONFIG_CLASSES[method]
    values = dict(TASK_DEFAULTS[method].get(task, {})) if task else {}
    if image_shape is not None:
        values.update(size_defaults(method, task, image_shape, views))
    values.update(overrides)
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise UserError(f"{method} has no setting(s) {', '.join(unknown)}; it takes "
                        f"{', '.join(f.name for f in fields(cls))}")
    return cls(**values)


def with_overrides(config: SamplerConfig, **overrides: Any) -> SamplerConfig:
    """``config`` (validated) with some fields replaced (UserError naming unknown fields)."""
    if not overrides:
        return config.validate()
    names = {f.name for f in fields(config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UserError(f"{type(config).__name__} has no setting(s) {', '.join(unknown)}")
    return dataclasses.replace(config, **overrides)


def load_config(path: str | Path) -> tuple[str, SamplerConfig]:
    """Read a sampler YAML config (:func:`medrecon.config.read_config_document`); returns
    ``(method, config)``. Errors (DataError) name the file and the key."""
    from medrecon.config import read_config_document

    doc = read_config_document(path)
    try:
        return doc["method"], config_for_task(doc["method"], doc.get("task"), **doc["settings"])
    except (UserError, TypeError) as exc:
        raise DataError(f"sampler config {path}: {exc}") from None
