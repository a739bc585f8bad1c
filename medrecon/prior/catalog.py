"""Which prior a diffusion method uses when none is named, and what the priors on hand are.

A diffusion method run without ``--prior`` takes the first shipped prior of
:data:`DEFAULT_PRIORS` for the data's modality whose model card covers the data's in-plane pixel
spacing (``pixel_spacing_mm``). Names that are not shipped are skipped, so a new shipped prior
is one entry here. Where none fits, :func:`default_prior` refuses and lists the choices; the
caller never silently gets a prior of another kind of image.

The ``phantom`` prior is the default for CT data in ``a.u.`` only: such numbers are medrecon's
working window (the phantoms' scale), nothing ties them to Hounsfield units, and every shipped
CT prior refuses them (:func:`medrecon.units.check_prior`). Real CT data loads in HU.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from medrecon.errors import UserError
from medrecon.prior.card import any_image_size, pixel_spacing_range, read_card, shipped_priors, spacing_fits
from medrecon.units import data_modality, prior_modality

log = logging.getLogger(__name__)

DEFAULT_PRIORS: dict[str, tuple[str, ...]] = {"CT": ("body-ct", "chest-ct"), "MR": ("brain-mri",)}
"""Preference order of the shipped priors per data modality (first that fits wins)."""

AU_CT_PRIOR = "phantom"
"""The default for CT data in a.u. (medrecon's working window: phantoms)."""



@dataclass(frozen=True)
class PriorChoice:
    """The prior a run uses and why: ``name`` (a shipped prior), ``reason`` (one sentence)."""

    name: str
    reason: str


def measurement_pixel_spacing(m: Any) -> Optional[float]:
    """In-plane pixel spacing (mm) of the image a measurement reconstructs, or None when the file
    records none: the CT geometry's pixel size, else the simulated volume's spacing, else (fastMRI)
    the reconstruction field of view over the matrix."""
    geometry = getattr(m, "geometry", None) or {}
    size = geometry.get("pixel_size")
    if isinstance(size, (int, float)) and size > 0:
        return float(size)
    spacing = ((getattr(m, "attrs", None) or {}).get("volume") or {}).get("spacing")
    if isinstance(spacing, (list, tuple)) and len(spacing) == 3:
        dy, dx = float(spacing[1]), float(spacing[2])
        if dy > 0 and dx > 0 and math.isfinite(dy * dx):
            return math.sqrt(dy * dx)
    attrs = getattr(m, "attrs", None) or {}
    fov, matrix = attrs.get("recon_fov_mm"), attrs.get("recon_matrix")
    if fov and matrix and matrix[0] and matrix[1]:
        return math.sqrt(float(fov[0]) / matrix[0] * float(fov[1]) / matrix[1])
    return None


def _describe(card: dict) -> str:
    bounds = pixel_spacing_range(card)
    where = f"{bounds[0]:g}-{bounds[1]:g} mm pixels" if bounds else "no stated pixel spacing"
    return f"{card['name']} ({prior_modality(card) or 'a.u.'}, {where})"


def default_prior(modality: str, units: str = "a.u.", pixel_spacing: Optional[float] = None,
                  shipped: Optional[Sequence[str]] = None) -> PriorChoice:
    """The shipped prior for data of ``modality`` ("CT" or "MR") in ``units`` with in-plane
    ``pixel_spacing`` (mm; None: not known). Raises :class:`UserError` listing the choices when
    no shipped prior fits."""
    shipped = list(shipped_priors() if shipped is None else shipped)
    if modality == "CT" and units == "a.u.":
        if AU_CT_PRIOR in shipped:
            return PriorChoice(AU_CT_PRIOR, "CT data in a.u. (medrecon's working window, as the phantoms): "
                                            "the phantom prior; for real CT pass --units HU to simulate")
        raise UserError("CT data in a.u.: no shipped prior is trained on a.u. data; pass --prior")
    candidates = [n for n in DEFAULT_PRIORS.get(modality, ()) if n in shipped]
    cards = {n: read_card(Path(_shipped_dir()) / n) for n in candidates}
    for name in candidates:
        if spacing_fits(cards[name], pixel_spacing):
            where = f"{pixel_spacing:.3g} mm pixels" if pixel_spacing is not None else "pixel spacing not recorded"
            return PriorChoice(name, f"the shipped {modality} prior that fits the data ({where})")
    spacing = f"{pixel_spacing:.3g} mm pixels" if pixel_spacing is not None else "unknown pixel spacing"
    others = ", ".join(_describe(read_card(Path(_shipped_dir()) / n)) for n in shipped) or "(none)"
    hint = ("; resample the slices to a covered pixel spacing (simulate --size N) or name a prior with --prior"
            if candidates else "; name a prior directory with --prior")
    raise UserError(f"no shipped prior fits {modality} data at {spacing}; shipped priors: {others}{hint}")


def _shipped_dir() -> Path:
    from medrecon.prior.card import SHIPPED_DIR
    return SHIPPED_DIR


def default_prior_for(m: Any) -> PriorChoice:
    """:func:`default_prior` for a :class:`~medrecon.io.measurements.Measurement`."""
    units = ((m.attrs or {}).get("volume") or {}).get("units", "a.u." if m.task != "cs-mri" else "normalised")
    return default_prior(data_modality(m.task), units, measurement_pixel_spacing(m))


def resolve_default_prior(m: Any, settings: Any) -> Optional[PriorChoice]:
    """Fill ``settings.prior`` with the default for ``m`` when it is empty; log the choice.
    Returns the choice (None when a prior was named)."""
    if getattr(settings, "prior", None):
        return None
    choice = default_prior_for(m)
    settings.prior = choice.name
    log.info("prior: %s (%s)", choice.name, choice.reason)
    return choice


@dataclass(frozen=True)
class PriorInfo:
    """One line of ``medrecon prior list`` / :func:`medrecon.list_priors`."""

    name: str
    path: str
    modality: str          # "CT", "MR" or "a.u."
    units: str             # the card's intensity units ("HU", "normalised", "a.u.")
    pixel_spacing_mm: Optional[tuple[float, float]]
    image_size: int
    any_image_size: bool
    parameters: Optional[int]
    training: str          # the training data in short
    shipped: bool
    slice_group: int = 1   # slices per group (1: a 2D prior)
    z_spacing_mm: Optional[tuple[float, float]] = None   # group priors: trained slice spacings
    centre_output: bool = False   # group priors: only the centre slice comes out


def _training_summary(card: dict) -> str:
    data = (card.get("training") or {}).get("data")
    if isinstance(data, list):
        names = [str(d.get("volume", "?")).split(" (")[0] if isinstance(d, dict) else str(d) for d in data]
        return "; ".join(names)
    if isinstance(data, dict):
        return str(data.get("description") or data.get("name") or "?")
    return str(data or card.get("provenance") or "?")


def prior_info(path: str | Path, shipped: bool = False) -> PriorInfo:
    """The :class:`PriorInfo` of a prior directory."""
    card = read_card(path)
    bounds = pixel_spacing_range(card)
    return PriorInfo(name=str(card["name"]), path=str(path), modality=prior_modality(card) or "a.u.",
                     units=str((card.get("intensity") or {}).get("units", "?")), pixel_spacing_mm=bounds,
                     image_size=int(card["image_size"]), any_image_size=any_image_size(card),
                     parameters=card.get("parameters"), training=_training_summary(card), shipped=shipped,
                     slice_group=int((card.get("slice_group") or {}).get("channels", 1)),
                     z_spacing_mm=tuple((card.get("slice_group") or {}).get("z_spacing_mm") or ()) or None,
                     centre_output=(card.get("slice_group") or {}).get("output") == "centre")


def list_priors(extra: Sequence[str | Path] = ()) -> list[PriorInfo]:
    """The shipped priors, then every prior directory in ``extra`` (imported or trained ones)."""
    out = [prior_info(_shipped_dir() / n, shipped=True) for n in shipped_priors()]
    return out + [prior_info(p) for p in extra]


def format_prior_line(p: PriorInfo) -> str:
    """One line: name, modality, units, pixel spacing, size, parameters, training data."""
    spacing = f"{p.pixel_spacing_mm[0]:g}-{p.pixel_spacing_mm[1]:g} mm" if p.pixel_spacing_mm else "-"
    size = "any size" if p.any_image_size else f"{p.image_size}x{p.image_size} only"
    if p.slice_group > 1 and p.z_spacing_mm:
        size += f", groups of {p.slice_group} slices {p.z_spacing_mm[0]:g}-{p.z_spacing_mm[1]:g} mm apart"
        if p.centre_output:
            size += " (centre slice out)"
    params = f"{p.parameters / 1e6:.2f} M" if isinstance(p.parameters, int) else "?"
    training = p.training if len(p.training) <= 70 else p.training[:67] + "..."
    return (f"{p.name:<14} {p.modality:<4} {p.units:<10} pixels {spacing:<14} {size:<14} "
            f"{params:>8} params  trained on: {training}")


def fitting_priors(modality: str, units: str, pixel_spacing: Optional[float]) -> list[str]:
    """Shipped priors that fit data of this modality, units and pixel spacing (for ``info``)."""
    try:
        first = default_prior(modality, units, pixel_spacing).name
    except UserError:
        return []
    others = [n for n in DEFAULT_PRIORS.get(modality, ()) if n in shipped_priors() and n != first
              and spacing_fits(read_card(_shipped_dir() / n), pixel_spacing)]
    return [first, *others]


__all__ = ["DEFAULT_PRIORS", "AU_CT_PRIOR", "PriorChoice", "PriorInfo", "default_prior", "default_prior_for",
           "resolve_default_prior", "measurement_pixel_spacing", "spacing_fits", "list_priors", "prior_info",
           "format_prior_line", "fitting_priors"]
