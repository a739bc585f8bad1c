"""Typed method settings read from ``configs/*.yaml`` and the command line.

Each method has a dataclass of settings with defaults. A config file is a YAML mapping
``{method: NAME, task: TASK, settings: {...}}`` (``task`` optional); command-line overrides are
``key=value`` strings. Unknown keys and values of the wrong type are refused with a message that
names the key and the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from medrecon.errors import DataError, UserError


@dataclass
class FBPSettings:
    """Filtered backprojection (CT)."""

    filter: str = "hann"             # ram-lak, shepp-logan, cosine, hamming, hann
    frequency_scaling: float = 1.0   # cut-off as a fraction of Nyquist


@dataclass
class SIRTSettings:
    iterations: int = 200
    nonnegative: bool = True


@dataclass
class CGLSSettings:
    iterations: int = 20


@dataclass
class TVSettings:
    """ADMM-TV. ``lam = lam_rel * ||A||^2`` and ``rho = rho_rel * ||A||^2`` (exact-adjoint
    convention). Sparse-view CT with more than 8 views scales the default ``lam_rel`` by
    8 / views (:func:`apply_view_default`); a ``lam_rel`` you set is used as given."""

    lam_rel: float = 1e-4
    rho_rel: float = 1e-3
    iterations: int = 200
    cg_iterations: int = 5
    axes: str = "3d"                 # "z" (TV along z only, as DiffusionMBIR) or "3d" (anisotropic)
    boundary: str = "neumann"        # or "circular"
    nonnegative: bool = True         # x >= 0 (attenuation); off for complex MRI images


@dataclass
class ZeroFilledSettings:
    pass


@dataclass
class SenseSettings:
    iterations: int = 30
    l2: float = 0.0                  # Tikhonov weight (relative to ||A||^2 = 1 for normalised maps)


SETTINGS: dict[str, type] = {
    "fbp": FBPSettings, "sirt": SIRTSettings, "cgls": CGLSSettings, "tv": TVSettings,
    "zero-filled": ZeroFilledSettings, "sense": SenseSettings,
}


# Per-task defaults that differ from the dataclass defaults (measured on Shepp-Logan phantoms).
TASK_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("tv", "cs-mri"): {"lam_rel": 2.5e-4, "rho_rel": 5e-2, "iterations": 100, "nonnegative": False},
}


# Sparse-view CT: the default ADMM-TV weight is that of an 8-view scan in absolute terms. ``lam =
# lam_rel ||A||^2`` grows with the number of views (||A||^2 is about views x width), which keeps the
# balance of one view's data against the prior, not of all of them: with more views the data say
# more and a MAP weight stays fixed. The default ``lam_rel`` is therefore scaled by
# TV_REFERENCE_VIEWS / views for more than 8 views (16: 1/2; 32: 1/4); 8 views or fewer keep it
# (not measured below 8). Chosen on development volumes (lung1, the abdomen part of the
# TotalSegmentator CT; docs/benchmarks/any-size.md).
TV_REFERENCE_VIEWS = 8


def tv_view_scale(task: Optional[str], views: Optional[int]) -> float:
    """Factor on the default ``lam_rel`` of ADMM-TV for ``task`` with ``views`` projection views
    (sparse-view CT with more than 8 views: ``TV_REFERENCE_VIEWS / views``; otherwise, or
    ``views`` None, 1)."""
    if task != "sparse-view-ct" or views is None or views <= TV_REFERENCE_VIEWS:
        return 1.0
    return TV_REFERENCE_VIEWS / views


def apply_view_default(settings: Any, task: Optional[str], views: Optional[int]) -> Any:
    """``settings`` (:class:`TVSettings`) with the default ``lam_rel`` scaled by
    :func:`tv_view_scale`, unless the caller chose ``lam_rel`` (:func:`user_settings`) or the
    settings do not record what the caller chose."""
    chosen = user_settings(settings)
    if chosen is not None and "lam_rel" not in chosen:   # from the default: applying twice is once
        settings.lam_rel = make_settings("tv", task=task).lam_rel * tv_view_scale(task, views)
    return settings


def register(method: str, settings_type: type) -> None:
    """Add the settings dataclass of a method defined elsewhere (e.g. the diffusion samplers)."""
    SETTINGS[method] = settings_type


def _coerce(value: Any, default: Any, key: str, where: str) -> Any:
    target = type(default)
    if default is None:
        return value
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UserError(f"{where}: {key} must be true or false, got {value!r}")
    if target in (int, float):
        kind = "a number" if target is float else "an integer"
        try:
            number = float(value) if target is float else int(value)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{where}: {key} must be {kind}, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number) or number < 0:
            # every numeric setting (iterations, weights, noise levels, steps, seeds) is >= 0
            raise UserError(f"{where}: {key} must be {kind} >= 0 (finite), got {value!r}")
        return number
    if target in (list, tuple):
        return list(value) if isinstance(value, (list, tuple)) else json.loads(value)
    if not isinstance(value, str):
        raise UserError(f"{where}: {key} must be a string, got {value!r}")
    return value


def make_settings(method: str, values: Optional[dict] = None, where: str = "settings",
                  task: Optional[str] = None) -> Any:
    """The settings dataclass of ``method``: defaults, then the task's defaults, then ``values`` (validated)."""
    if method not in SETTINGS:
        raise UserError(f"unknown method {method!r}; choose from {', '.join(sorted(SETTINGS))}")
    cls = SETTINGS[method]
    settings = cls()
    names = {f.name for f in fields(cls)}
    merged = {**TASK_DEFAULTS.get((method, task or ""), {}), **(values or {})}
    for key, value in merged.items():
        if key not in names:
            raise UserError(f"{where}: unknown key {key!r} for method {method!r}; valid keys: "
                            f"{', '.join(sorted(names)) or '(none)'}")
        setattr(settings, key, _coerce(value, getattr(settings, key), key, where))
    settings._user_settings = frozenset(values or {})   # what the caller chose (user_settings())
    return settings


def user_settings(settings: Any) -> Optional[frozenset]:
    """The names of the settings given to :func:`make_settings` (a config file's and ``--set``'s,
    not the defaults); None for settings built otherwise."""
    return getattr(settings, "_user_settings", None)


def read_config_document(path: str | Path) -> dict:
    """The YAML mapping ``{method, task?, description?, settings}`` of a config file, checked for
    shape only (the settings are validated by the method's schema). Errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise DataError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"config file {path}: expected a mapping with keys method, task, settings")
    unknown = set(data) - {"method", "task", "settings", "description"}
    if unknown:
        raise DataError(f"config file {path}: unknown top-level key(s) {sorted(unknown)}; "
                        f"expected method, task, settings, description")
    if "method" not in data:
        raise DataError(f"config file {path}: missing key 'method'")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise DataError(f"config file {path}: 'settings' must be a mapping")
    return {**data, "settings": settings}


def load_config(path: str | Path) -> dict:
    """Read and validate a YAML config ``{method, task?, settings}``; errors name the file and key."""
    data = read_config_document(path)
    make_settings(data["method"], data["settings"], where=str(path), task=data.get("task"))
    return data


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["lam_rel=0.01", "iterations=50"]`` -> dict (values are coerced by :func:`make_settings`)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def settings_dict(settings: Any) -> dict:
    return dataclasses.asdict(settings)
