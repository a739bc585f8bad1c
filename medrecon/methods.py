"""Run a reconstruction method on a measurement: one entry point for every method.

``run_method(m, method, settings)`` builds the operator, maps the data to working units (see
:mod:`medrecon.tasks`), runs the method and returns the working-unit image ``[Z, Y, X]``
(complex for MRI). The diffusion methods register themselves in :data:`DIFFUSION`.

Distributed over z-slabs (``slab``), ``m`` holds this rank's slices (see
:mod:`medrecon.distributed`) and the result is this rank's slab of the image.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from medrecon.config import apply_view_default, make_settings
from medrecon.errors import UserError
from medrecon.io.measurements import Measurement
from medrecon.physics.operator import LinearOperator
from medrecon.solvers import classical
from medrecon.checks import require_finite
from medrecon.progress import labelled, stage
from medrecon.solvers.classical import tv_reconstruction
from medrecon.tasks import (CT_TASKS, build_operator, ct_geometry_of, data_in_working_units,
                            require_reconstruction_memory, views_of)

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

log = logging.getLogger(__name__)

CT_METHODS = ("fbp", "sirt", "cgls", "tv")
MRI_METHODS = ("zero-filled", "sense", "cgls", "tv")

__all__ = ["CLASSICAL", "DIFFUSION", "LAST_INFO", "methods_for", "run_method", "tv_reconstruction"]


def methods_for(task: str) -> tuple[str, ...]:
    return CT_METHODS if task in CT_TASKS else MRI_METHODS


def _fbp(m: Measurement, op: LinearOperator, y: torch.Tensor, s: Any) -> torch.Tensor:
    from medrecon.solvers.fbp import fbp

    return fbp(y, ct_geometry_of(m), filter=s.filter,
               frequency_scaling=s.frequency_scaling)


# Classical methods: name -> function(measurement, operator, data_working_units, settings,
# progress, slab); the slab-coupled ones (cgls, tv) take the slab, the others act slice by slice.
CLASSICAL: dict[str, Callable[..., torch.Tensor]] = {
    "fbp": lambda m, op, y, s, p, slab: _fbp(m, op, y, s),
    "sirt": lambda m, op, y, s, p, slab: classical.sirt(op, y, s.iterations, nonnegative=s.nonnegative,
                                                        progress=p),
    "cgls": lambda m, op, y, s, p, slab: classical.cgls(op, y, s.iterations, progress=p, slab=slab),
    "tv": lambda m, op, y, s, p, slab: tv_reconstruction(
        op, y, apply_view_default(s, m.task, views_of(m.task, op)), p, slab),
    "zero-filled": lambda m, op, y, s, p, slab: classical.zero_filled(op, y),
    "sense": lambda m, op, y, s, p, slab: classical.sense(op, y, s.iterations, s.l2),
}

# Diffusion methods: name -> function(measurement, operator, data_working_units, settings,
# progress, device, slab)
DIFFUSION: dict[str, Callable[..., torch.Tensor]] = {}


def check_method(m: Measurement, method: str) -> None:
    """Refuse a method name that is unknown, or classical and not for the measurement's task."""
    if method not in CLASSICAL and method not in DIFFUSION:
        raise UserError(f"unknown method {method!r}; choose from "
                        f"{', '.join(sorted(set(CLASSICAL) | set(DIFFUSION)))}")
    if method in CLASSICAL and method not in methods_for(m.task):
        raise UserError(f"method {method!r} does not apply to task {m.task!r}; "
                        f"choose from {', '.join((*methods_for(m.task), *DIFFUSION))}")


def run_method(m: Measurement, method: str, settings: Optional[Any] = None, device: str | torch.device = "cpu",
               progress: bool = False, backend: str = "auto",
               operator: Optional[LinearOperator] = None, slab: Optional["Slab"] = None) -> torch.Tensor:
    """Reconstruct ``m`` with ``method``; returns the working-unit image ``[Z, Y, X]`` on ``device``
    (complex64 for CS-MRI; see :mod:`medrecon.tasks` for the working units).

    ``settings``: None (the task's defaults, ``configs/<method>_<task>.yaml``), a dict of
    overrides, or a settings object from :func:`medrecon.config.make_settings`. A diffusion
    method whose settings name no prior takes the shipped prior that fits the data
    (:func:`medrecon.prior.catalog.default_prior`; the choice is logged and written back into
    ``settings.prior``). ``progress``: progress bars labelled with the method and stage.
    ``operator`` / ``slab``: a prebuilt operator and this rank's z-slab (distributed runs)."""
    check_method(m, method)
    if settings is None or isinstance(settings, dict):
        settings = make_settings(method, settings, task=m.task)
    if method in DIFFUSION:
        from medrecon.prior.catalog import resolve_default_prior
        resolve_default_prior(m, settings)
    if operator is None:
        require_reconstruction_memory(m)
    op = operator if operator is not None else build_operator(m, device=device, backend=backend)
    y = data_in_working_units(m, op, device)
    with stage(method):
        if method in DIFFUSION:
            x = DIFFUSION[method](m, op, y, settings, progress, device, slab)
        else:
            x = CLASSICAL[method](m, op, y, settings, progress, slab)
    require_finite(x, f"the {method} reconstruction of {m.path or 'the measurement'}",
                   "the method diverged (try other settings); nothing written")
    return x


# --------------------------------------------------------------------------------------------
# Diffusion methods: the sampler settings plus how to run them (prior, samples, state, seed)
# --------------------------------------------------------------------------------------------
def _register_diffusion() -> None:
    from dataclasses import dataclass, fields

    from medrecon import config as config_module
    from medrecon.samplers.config import CONFIG_CLASSES, TASK_DEFAULTS

    for name, base in CONFIG_CLASSES.items():
        @dataclass
        class Settings(base):  # type: ignore[valid-type, misc]
            prior: str = ""              # shipped prior name or prior directory; "": the shipped prior
                                         # that fits the data (medrecon.prior.catalog.default_prior)
            samples: int = 1             # K > 1: K seeded runs, mean and per-voxel std
            seed: int = 0                # seeds every random draw
            state_dir: str = ""          # where the sampler state is saved ("" : not saved)
            save_every: int = 0          # save the state every K steps (and on SIGINT/SIGTERM)
            resume: bool = False         # continue from the state in state_dir

        Settings.__name__ = Settings.__qualname__ = f"{name.capitalize()}Settings"
        config_module.register(name, Settings)
        for task, values in TASK_DEFAULTS[name].items():
            config_module.TASK_DEFAULTS[(name, task)] = dict(values)
        DIFFUSION[name] = _diffusion_runner(name, base, [f.name for f in fields(base)])


def _diffusion_runner(method: str, base: type, sampler_fields: list[str]) -> Callable[..., torch.Tensor]:
    def run(m: Measurement, op: LinearOperator, y: torch.Tensor, s: Any, progress: bool,
            device: str | torch.device, slab: Optional["Slab"] = None) -> torch.Tensor:
        import medrecon.published  # noqa: F401 -- registers the published families (ncsnpp, adm)
        from medrecon.config import user_settings
        from medrecon.io.sampler_state import DirectoryStateStore
        from medrecon.prior.checkpoint import load_prior
        from medrecon.samplers.run import reconstruct, tv_warm_start

        apply_size_defaults(method, m.task, tuple(op.in_shape[-2:]), s, views_of(m.task, op))
        prior = load_prior(s.prior, device=device, image_shape=tuple(int(n) for n in op.in_shape[-2:]))
        sampler_config = base(**{k: getattr(s, k) for k in sampler_fields})
        store = DirectoryStateStore(s.state_dir) if s.state_dir else None
        result = reconstruct(method, op, y, prior, m, sampler_config, samples=s.samples, seed=s.seed,
                             store=store, save_every=s.save_every, resume=s.resume,
                             progress=progress, warm_start=labelled(f"{method} warm start",
                                                                    tv_warm_start(m.task, slab, progress)),
                             fit_solver=labelled(f"{method} prior-fit check",
                                                 tv_warm_start(m.task, slab, progress, by_views=False)),
                             slab=slab, user_settings=user_settings(s))
        LAST_INFO.clear()
        LAST_INFO.update(result.info, std=result.std)
        return result.x

    return run


def apply_size_defaults(method: str, task: str, image_shape: tuple, s: Any,
                        views: Optional[int] = None) -> dict:
    """Set the per-size defaults (:func:`medrecon.samplers.config.size_defaults`: slice size and
    number of ``views``) on the settings ``s`` for the fields the user did not choose (none when
    ``s`` does not record what the user chose); returns what was set (logged)."""
    from medrecon.config import user_settings
    from medrecon.samplers.config import size_defaults

    chosen = user_settings(s)
    if chosen is None:
        return {}
    applied = {k: v for k, v in size_defaults(method, task, image_shape, views).items()
               if k not in chosen}
    for key, value in applied.items():
        setattr(s, key, value)
    if applied:
        log.info("%s on %s x %s slices%s: %s (the per-size default)", method, *image_shape[-2:],
                 f", {views} views" if views is not None else "",
                 ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in applied.items()))
    return applied


# Details of the last diffusion run (timings, network evaluations, posterior std) for callers
# that want more than the image: the CLI writes the std volume and the timings from here.
LAST_INFO: dict[str, Any] = {}

_register_diffusion()
