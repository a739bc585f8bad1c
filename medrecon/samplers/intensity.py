"""Map measurements between physical units and the prior's units (samplers work in prior units).

A prior records its intensity window in its model card (``card["intensity"]["window"] = [lo, hi]``,
convention "window01"): prior value ``x_p`` is the physical value ``x = lo + (hi - lo) x_p``.
Because ``A`` is linear, the measurement of ``x`` maps to the measurement of ``x_p`` by

    y_p = (y - lo * A 1) / (hi - lo)

(``A 1``: the operator applied to an image of ones), and a reconstruction maps back by
``x = lo + (hi - lo) x_p``. An extra affine change of physical units (e.g. HU to linear
attenuation, ``mu = mu_water (1 + HU / 1000)``) composes with :meth:`IntensityMap.then`.

MRI has no absolute intensity scale. medrecon's k-space normalisation (:func:`mri_intensity`,
used by every prior whose card says ``intensity.convention = "normalised"``):
scale so that the 99th percentile of the magnitude of a short SENSE reconstruction
(10 CG iterations of ``A^H A x = A^H y``) equals ``target`` (1 by default, the top of a [0, 1]
window); i.e. ``lo = 0`` and ``hi - lo = p99 / target``. Complex images never get an offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch

from medrecon.errors import DataError, UserError
from medrecon.physics.operator import LinearOperator
from medrecon.solvers.classical import sense


@dataclass(frozen=True)
class IntensityMap:
    """``x_physical = lo + scale * x_prior`` (``scale = hi - lo`` of the prior's window)."""

    lo: float
    scale: float

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise UserError(f"intensity window must have hi > lo, got scale {self.scale}")

    @property
    def window(self) -> tuple[float, float]:
        """The physical values ``(lo, hi)`` that map to prior values 0 and 1."""
        return (self.lo, self.lo + self.scale)

    def then(self, offset: float, gain: float) -> "IntensityMap":
        """The map to new physical units ``x' = offset + gain * x``."""
        if gain <= 0:
            raise UserError(f"unit conversion gain must be positive, got {gain}")
        return IntensityMap(offset + gain * self.lo, gain * self.scale)

    def image_to_prior(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.lo) / self.scale

    def image_from_prior(self, x_prior: torch.Tensor) -> torch.Tensor:
        return self.lo + self.scale * x_prior

    @torch.no_grad()
    def data_to_prior(self, op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
        """``(y - lo A 1) / scale``: the measurement of the prior-unit image."""
        if self.lo == 0:
            return y / self.scale
        if op.in_dtype.is_complex:
            raise UserError("complex (MRI) images take no intensity offset; use lo = 0")
        ones = torch.ones((y.shape[0], *op.in_shape[1:]), dtype=op.in_dtype, device=op.device)
        return (y - self.lo * op.forward(ones)) / self.scale

    @torch.no_grad()
    def data_from_prior(self, op: LinearOperator, y_prior: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`data_to_prior`."""
        if self.lo == 0:
            return y_prior * self.scale
        ones = torch.ones((y_prior.shape[0], *op.in_shape[1:]), dtype=op.in_dtype,
                          device=op.device)
        return y_prior * self.scale + self.lo * op.forward(ones)


def window_map(source: Mapping[str, Any] | Sequence[float]) -> IntensityMap:
    """The map of a prior: from its model card (``card["intensity"]``) or a ``(lo, hi)`` window."""
    if isinstance(source, Mapping):
        intensity = source.get("intensity")
        if not isinstance(intensity, Mapping) or "window" not in intensity:
            raise DataError(f"prior card {source.get('name', '?')!r} has no intensity window")
        if intensity.get("convention", "window01") != "window01":
            raise DataError(f"prior card {source.get('name', '?')!r}: intensity convention "
                            f"{intensity.get('convention')!r} is not 'window01'")
        window = intensity["window"]
    else:
        window = source
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise DataError(f"intensity window must be two numbers [lo, hi], got {window!r}") from None
    if not hi > lo:
        raise DataError(f"intensity window must have hi > lo, got [{lo}, {hi}]")
    return IntensityMap(lo, hi - lo)


@torch.no_grad()
def mri_intensity(op: LinearOperator, y: torch.Tensor, percentile: float = 99.0,
                  target: float = 1.0, iterations: int = 10) -> IntensityMap:
    """The k-space normalisation of the module docstring: ``IntensityMap(0, p / target)`` with
    ``p`` the ``percentile`` of ``|SENSE(y)|`` (``iterations`` CG steps)."""
    if not 0 < percentile <= 100 or not target > 0:
        raise UserError(f"need 0 < percentile <= 100 and target > 0, got {percentile}, {target}")
    image = sense(op, y, iterations=iterations).abs().flatten().to(torch.float64).cpu()
    p = float(torch.quantile(image, percentile / 100.0)) if image.numel() <= 16_000_000 else \
        float(torch.kthvalue(image, max(1, int(round(percentile / 100.0 * image.numel())))).values)
    if not p > 0:
        raise DataError("the k-space data are empty (zero image); cannot normalise the intensity")
    return IntensityMap(0.0, p / target)


def normalisation(card: Mapping[str, Any]) -> Optional[dict]:
    """The MR normalisation of a card whose intensity convention is "normalised" (else None):
    ``{"method": "percentile", "percentile": P, "target": T}``."""
    intensity = card.get("intensity", {}) if isinstance(card, Mapping) else {}
    if intensity.get("convention") != "normalised":
        return None
    norm = intensity.get("normalisation")
    if not isinstance(norm, Mapping) or norm.get("method") != "percentile":
        raise DataError(f"prior card {card.get('name', '?')!r}: a 'normalised' intensity needs "
                        f"normalisation {{method: percentile, percentile, target}}")
    try:
        return {"method": "percentile", "percentile": float(norm["percentile"]), "target": float(norm["target"])}
    except (KeyError, TypeError, ValueError):
        raise DataError(f"prior card {card.get('name', '?')!r}: normalisation needs numeric "
                        f"percentile and target") from None


def prior_map_for_measurement(m: Any, card: Optional[Mapping[str, Any]], op: Optional[LinearOperator] = None,
                              y: Optional[torch.Tensor] = None) -> IntensityMap:
    """The map between a measurement's working units (:mod:`medrecon.tasks`) and a prior's units:
    ``w = lo + scale * p``, so ``data_to_prior`` turns working-unit data into prior-unit data and
    ``image_from_prior`` a prior-unit result into working units.

    CT working units are the HU window ``m.attrs["window"]`` mapped to [0, 1] (``mu = scale * w +
    offset``); a prior window in HU or 1/mm is converted through them, one in "a.u."/"window01"
    is taken in working units directly. MRI working units are the volume's own units divided by
    ``m.attrs["scale"]`` (``w = value / scale``), so a prior window in those units ("a.u.")
    maps through that scale (it must start at 0); a "window01" prior window is taken in working
    units. No card (an analytic or test prior): the identity.

    A card with intensity convention "normalised" (medrecon's MR priors) carries no physical
    window: the map is :func:`mri_intensity` of the measurement itself (``op``, ``y``), so the
    reconstruction does not depend on the file's intensity scale (``y -> c y`` gives ``x -> c x``).
    """
    if card is None:
        return IntensityMap(0.0, 1.0)
    norm = normalisation(card)
    if norm is not None:  # scale-free MR prior: normalise by the data themselves (op, y in working units)
        if op is None or y is None:
            raise UserError(f"prior {card.get('name', '?')!r} normalises by the measurement: pass op and y")
        if not op.in_dtype.is_complex:
            raise UserError(f"prior {card.get('name', '?')!r} is an MR prior (normalised magnitude); "
                            f"the data are not MRI k-space")
        return mri_intensity(op, y, norm["percentile"], norm["target"])
    prior = window_map(card)
    units = str(card.get("intensity", {}).get("units", "a.u."))
    task = getattr(m, "task", None)
    if task in ("sparse-view-ct", "limited-angle-ct"):
        if units == "HU":
            lo_w, hi_w = (float(v) for v in m.attrs.get("window", (-1000.0, 1000.0)))
            d = hi_w - lo_w
            return IntensityMap((prior.lo - lo_w) / d, prior.scale / d)
        if units == "1/mm":
            scale, offset = float(m.attrs.get("scale", 1.0)), float(m.attrs.get("offset", 0.0))
            return IntensityMap((prior.lo - offset) / scale, prior.scale / scale)
        return prior
    if prior.lo != 0.0:
        raise DataError(f"prior {card.get('name', '?')!r}: an MRI prior's window must start at 0 "
                        f"(complex images take no offset), got {prior.window}")
    # A simulated measurement records how its working units relate to the volume's own units
    # (w = value / scale); a prior window given in those units ("a.u.") maps through it.
    scale = float(getattr(m, "attrs", {}).get("scale", 1.0)) if units != "window01" else 1.0
    return IntensityMap(prior.lo / scale, prior.scale / scale)


def recorded_noise_sigma(m: Any) -> float:
    """The k-space noise standard deviation a CS-MRI measurement records in ``attrs["options"]``
    (working units, as ``medrecon simulate --sigma`` wrote it); 0 when none is recorded or for CT.
    ``m``: anything with a ``task`` and an ``attrs`` dict (a
    :class:`~medrecon.io.measurements.Measurement`)."""
    if m.task != "cs-mri":
        return 0.0
    options = m.attrs.get("options") or {}
    value = options.get("sigma", 0.0) if isinstance(options, dict) else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        where = getattr(m, "path", None) or "measurement"
        raise DataError(f"{where}: recorded noise sigma must be a finite number >= 0, got {value!r}")
    return float(value)
