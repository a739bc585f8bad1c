"""Few-step DDS: step schedules fitted offline and shipped with a prior (issue 21).

A DDS run with ``steps = n`` spends ``n`` network calls per slice. The published schedule spreads
the ``n`` DDIM timesteps evenly ("uniform"); with few steps, *where* the steps sit and how much
data consistency each one does matter more than at 50. Two training-free levers, both chosen
offline on training data only (``scripts/fit_schedules.py``):

- **fitted noise levels** (after TrO, arXiv 2606.06236): the ``n`` noise levels
  ``sigma_1 > ... > sigma_n`` are chosen to minimise the reconstruction error of ``n``-step DDS
  on training measurements (a Karras-style family ``(a + i/(n-1) (b - a))^rho`` with
  ``a = sigma_top^(1/rho)``, ``b = sigma_bottom^(1/rho)``, searched over ``sigma_top``,
  ``sigma_bottom`` and ``rho``);
- **more data consistency per network call, fresh/deterministic noise mix** (after DiffPIR,
  arXiv 2305.08995): ``dc_iterations`` ADMM-TV(z) iterations per step instead of one, more CG
  iterations per ADMM iteration, and the re-noising weight ``eta``.

A prior directory may hold ``schedules.json`` beside its model card::

    {"format": "medrecon-schedules/1", "prior": "body-ct",
     "fitted_on": "...", "command": "...",
     "schedules": {"10": {"sigmas": [0.3, ...], "eta": 0.85, "cg_iterations": 5,
                          "dc_iterations": 1, "start_sigma": 0.3,
                          "fit": {"psnr": ..., "psnr_uniform": ...}}, ...}}

``sigmas`` (required): ``steps`` positive noise levels, strictly descending, in the prior's units;
the step after the last goes to the clean image. ``eta``, ``cg_iterations``, ``dc_iterations``
(optional) replace the run's values for that step count. ``start_sigma``: the warm start the
schedule was fitted for; a run with another ``start_sigma`` does not use it.

The DDS setting ``schedule`` picks: ``"auto"`` (default) the prior's fitted schedule for the
run's ``steps`` when it has one (and it was fitted for the run's ``start_sigma``), else uniform;
``"uniform"`` the published spacing; ``"fitted"`` the prior's schedule, refused when there is
none. What ran is recorded in the run's info (``info["schedule"]``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from medrecon.errors import DataError, UserError

SCHEDULES_FILE = "schedules.json"
FORMAT = "medrecon-schedules/1"
SCHEDULE_SETTINGS = ("auto", "uniform", "fitted")
_ENTRY_KEYS = {"sigmas", "eta", "cg_iterations", "dc_iterations", "start_sigma", "fit"}


@dataclass(frozen=True)
class StepSchedule:
    """One fitted schedule: ``sigmas`` (descending, > 0) and the optional per-run settings."""

    sigmas: tuple[float, ...]
    eta: Optional[float] = None
    cg_iterations: Optional[int] = None
    dc_iterations: Optional[int] = None
    start_sigma: Optional[float] = None
    fit: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.sigmas)

    def to_json(self) -> dict:
        d: dict[str, Any] = {"sigmas": [float(s) for s in self.sigmas]}
        for name in ("eta", "cg_iterations", "dc_iterations", "start_sigma"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        if self.fit:
            d["fit"] = self.fit
        return d


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_entry(key: str, entry: Any, where: str) -> StepSchedule:
    """One ``schedules[key]`` entry, validated (DataError naming ``where`` and the key)."""
    bad = f"{where}: schedules[{key!r}]"
    if not (key.isdigit() and int(key) >= 1):
        raise DataError(f"{where}: schedule key {key!r} is not a positive step count")
    if not isinstance(entry, dict):
        raise DataError(f"{bad} must be an object with 'sigmas'")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise DataError(f"{bad} has unknown key(s) {', '.join(unknown)}")
    sigmas = entry.get("sigmas")
    if not isinstance(sigmas, list) or len(sigmas) != int(key):
        raise DataError(f"{bad}: 'sigmas' must be a list of {int(key)} noise levels")
    if not all(_is_number(s) and s > 0 for s in sigmas):
        raise DataError(f"{bad}: 'sigmas' must be positive finite numbers")
    if any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise DataError(f"{bad}: 'sigmas' must be strictly descending")
    eta = entry.get("eta")
    if eta is not None and not (_is_number(eta) and 0 <= eta <= 1):
        raise DataError(f"{bad}: 'eta' must be a number in [0, 1], got {eta!r}")
    for name in ("cg_iterations", "dc_iterations"):
        v = entry.get(name)
        if v is not None and not (_is_int(v) and v >= 1):
            raise DataError(f"{bad}: {name!r} must be a positive integer, got {v!r}")
    start = entry.get("start_sigma")
    if start is not None and not (_is_number(start) and start >= 0):
        raise DataError(f"{bad}: 'start_sigma' must be a number >= 0, got {start!r}")
    fit = entry.get("fit", {})
    if not isinstance(fit, dict):
        raise DataError(f"{bad}: 'fit' must be an object")
    return StepSchedule(tuple(float(s) for s in sigmas), None if eta is None else float(eta),
                        entry.get("cg_iterations"), entry.get("dc_iterations"),
                        None if start is None else float(start), fit)


def read_schedules(path: str | Path) -> dict[int, StepSchedule]:
    """The schedules of a ``schedules.json`` file (or of a prior directory holding one; ``{}``
    when the directory has none), keyed by step count. A damaged file is refused with a
    one-line DataError that names it."""
    path = Path(path)
    if path.is_dir():
        path = path / SCHEDULES_FILE
        if not path.is_file():
            return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: schedule file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: a schedule file must be a JSON object")
    if doc.get("format") != FORMAT:
        raise DataError(f"{path}: format {doc.get('format')!r}, expected {FORMAT!r}")
    entries = doc.get("schedules")
    if not isinstance(entries, dict):
        raise DataError(f"{path}: 'schedules' must be an object keyed by step count")
    parsed = {k: parse_entry(k, v, str(path)) for k, v in entries.items()}
    return {int(k): v for k, v in parsed.items()}


def write_schedules(path: str | Path, prior: str, schedules: dict[int, StepSchedule],
                    **provenance: Any) -> Path:
    """Write ``schedules.json`` (validated by reading it back)."""
    path = Path(path)
    doc = {"format": FORMAT, "prior": prior, **provenance,
           "schedules": {str(k): schedules[k].to_json() for k in sorted(schedules)}}
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    read_schedules(path)
    return path


def prior_schedules(denoiser: Any) -> tuple[dict[int, StepSchedule], Optional[Path]]:
    """The schedules shipped beside a loaded prior's model card (``denoiser.prior_dir``, set by
    :func:`medrecon.prior.checkpoint.load_prior`) and the file; ``({}, None)`` without one."""
    directory = getattr(denoiser, "prior_dir", None)
    if directory is None:
        return {}, None
    path = Path(directory) / SCHEDULES_FILE
    if not path.is_file():
        return {}, None
    return read_schedules(path), path


@dataclass(frozen=True)
class ResolvedSchedule:
    """What a DDS run uses: ``name`` ("uniform" | "fitted"), ``sigmas`` (None: uniform),
    ``eta``, ``cg_iterations``, ``dc_iterations`` and where the schedule came from."""

    name: str
    sigmas: Optional[tuple[float, ...]]
    eta: float
    cg_iterations: int
    dc_iterations: int
    source: Optional[str] = None
    reason: str = ""

    def record(self, sigmas: list[float]) -> dict:
        """For the run's info / metrics JSON (``sigmas``: the levels that ran)."""
        return {"name": self.name, "setting_reason": self.reason, "source": self.source,
                "sigmas": [float(s) for s in sigmas], "eta": self.eta,
                "cg_iterations": self.cg_iterations, "dc_iterations": self.dc_iterations}


def resolve_schedule(config: Any, denoiser: Any) -> ResolvedSchedule:
    """The schedule a DDS ``config`` (its ``schedule``, ``steps``, ``start_sigma``, ``eta``,
    ``cg_iterations``, ``dc_iterations``) runs with on ``denoiser`` (module docstring)."""
    setting = config.schedule
    base = dict(eta=float(config.eta), cg_iterations=int(config.cg_iterations),
                dc_iterations=int(config.dc_iterations))
    if setting == "uniform":
        return ResolvedSchedule("uniform", None, reason="asked for", **base)
    schedules, path = prior_schedules(denoiser)
    entry = schedules.get(int(config.steps))
    name = (getattr(denoiser, "card", None) or {}).get("name", "?")
    why_not = None
    if entry is None:
        why_not = (f"prior {name!r} ships no fitted schedule for {config.steps} steps"
                   + (f" (it has {', '.join(str(k) for k in sorted(schedules))})" if schedules else ""))
    elif entry.start_sigma is not None and not math.isclose(entry.start_sigma, config.start_sigma):
        why_not = (f"prior {name!r}'s {config.steps}-step schedule was fitted for start_sigma "
                   f"{entry.start_sigma:g}, the run has {config.start_sigma:g}")
    if why_not is not None:
        if setting == "fitted":
            raise UserError(f"schedule 'fitted': {why_not}; use schedule=uniform or another step count")
        return ResolvedSchedule("uniform", None, reason=f"auto: {why_not}", **base)
    assert entry is not None
    return ResolvedSchedule(
        "fitted", entry.sigmas,
        eta=base["eta"] if entry.eta is None else entry.eta,
        cg_iterations=base["cg_iterations"] if entry.cg_iterations is None else entry.cg_iterations,
        dc_iterations=base["dc_iterations"] if entry.dc_iterations is None else entry.dc_iterations,
        source=str(path), reason="asked for" if setting == "fitted" else "auto: the prior ships one")


def karras_sigmas(n: int, sigma_top: float, sigma_bottom: float, rho: float) -> list[float]:
    """``n`` levels ``(a + i/(n-1) (b - a))^rho``, ``a = sigma_top^(1/rho)``,
    ``b = sigma_bottom^(1/rho)``: descending from ``sigma_top`` to ``sigma_bottom``."""
    if n < 1 or not 0 < sigma_bottom < sigma_top or rho <= 0:
        raise ValueError(f"bad schedule: n={n}, sigma {sigma_top}..{sigma_bottom}, rho={rho}")
    if n == 1:
        return [float(sigma_top)]
    a, b = sigma_top ** (1 / rho), sigma_bottom ** (1 / rho)
    return [float((a + i / (n - 1) * (b - a)) ** rho) for i in range(n)]
