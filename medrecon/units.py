"""Declared units and modality of a volume, and whether a prior fits a measurement.

A DICOM series records its modality and units (CT: HU after the rescale); a NIfTI file written
by medrecon records them in a header extension. A NIfTI file from another tool (dcm2niix,
3D Slicer) or an NRRD file records neither, and loads as modality "OT", units "a.u.".
:func:`declare` applies what the user says (``--units``, ``--modality``) to such a volume and
refuses a declaration that contradicts what the file records.

What "a.u." means on a CT task: medrecon's CT working units, the [-1000, 1000] HU window mapped
to [0, 1] (0 = -1000 HU, i.e. air; 1 = +1000 HU) -- the scale of the phantoms. A CT volume that
records no units but whose values look like HU gets a warning (:func:`warn_if_hu_like`).

Priors: a model card's intensity block says what units the prior was trained in ("HU" or
"1/mm": a CT prior; "normalised": an MR prior; "a.u.": not known). :func:`check_prior` refuses
a prior of the other modality, and a CT prior on CT data in a.u. (nothing ties those numbers to
HU); ``force`` turns both refusals into warnings.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from typing import Any, Mapping, Optional

import numpy as np

from medrecon.errors import UserError
from medrecon.tasks import CT_TASKS
from medrecon.volume import Volume

log = logging.getLogger(__name__)

UNIT_CHOICES = ("HU", "1/mm", "a.u.")
MODALITY_CHOICES = ("CT", "MR", "OT")
HU_LIKE_MIN = -500.0   # some voxel below this (air, lung, padding) ...
HU_LIKE_MAX = 100.0    # ... and some above this (soft tissue, bone): looks like HU, not a [0, 1] scale


def add_arguments(parser: argparse.ArgumentParser, what: str = "the input volume") -> None:
    """``--units`` and ``--modality`` for a command that reads a volume."""
    parser.add_argument("--units", choices=UNIT_CHOICES, default=None,
                        help=f"units of {what} when the file records none (NIfTI from dcm2niix or Slicer, "
                             "NRRD): HU, 1/mm (linear attenuation) or a.u. (default: what the file records; a "
                             "file that records nothing is a.u., which on a CT task means medrecon's working "
                             "window: 0 = -1000 HU, 1 = +1000 HU)")
    parser.add_argument("--modality", choices=MODALITY_CHOICES, default=None,
                        help=f"modality of {what} when the file records none (default: what the file records, "
                             "else CT with --units HU or 1/mm, else OT)")


def declare(volume: Volume, units: Optional[str] = None, modality: Optional[str] = None,
            where: str = "the volume") -> Volume:
    """``volume`` with the declared ``units`` / ``modality`` applied where it records none
    ("a.u." / "OT"); a declaration that contradicts a recorded value is refused. Units HU or
    1/mm on an "OT" volume make it CT."""
    if units is not None and units not in UNIT_CHOICES:
        raise UserError(f"--units must be one of {', '.join(UNIT_CHOICES)}, got {units!r}")
    if modality is not None and modality not in MODALITY_CHOICES:
        raise UserError(f"--modality must be one of {', '.join(MODALITY_CHOICES)}, got {modality!r}")
    changes: dict[str, Any] = {}
    if units is not None and units != volume.units:
        if volume.units != "a.u.":
            raise UserError(f"{where} records units {volume.units!r}; --units {units} contradicts it "
                            f"(--units applies to files that record no units)")
        changes.update(units=units, window=None, window_units=None)
    if modality is not None and modality != volume.modality:
        if volume.modality != "OT":
            raise UserError(f"{where} records modality {volume.modality!r}; --modality {modality} "
                            f"contradicts it (--modality applies to files that record none)")
        changes["modality"] = modality
    elif modality is None and volume.modality == "OT" and changes.get("units") in ("HU", "1/mm"):
        changes["modality"] = "CT"
    return replace(volume, affine=volume.affine.copy(), source=dict(volume.source), **changes) if changes \
        else volume


def looks_like_hu(array: np.ndarray) -> bool:
    """Some voxel below -500 and some above +100: HU numbers rather than a [0, 1] scale."""
    a = np.asarray(array)
    if a.size == 0 or np.iscomplexobj(a):
        return False
    return float(np.nanmin(a)) < HU_LIKE_MIN and float(np.nanmax(a)) > HU_LIKE_MAX


def warn_if_hu_like(volume: Volume, task: str, where: str = "the volume") -> bool:
    """On a CT task, warn when a volume in a.u. holds HU-like numbers; say what is assumed.
    Returns whether it warned."""
    if task not in CT_TASKS or volume.units != "a.u." or not looks_like_hu(volume.array):
        return False
    lo, hi = float(np.nanmin(volume.array)), float(np.nanmax(volume.array))
    log.warning("%s records no units and its values (%.6g .. %.6g) look like Hounsfield units, but they are "
                "taken as a.u., medrecon's CT working window (0 = -1000 HU, 1 = +1000 HU); pass --units HU "
                "if they are HU", where, lo, hi)
    return True


def prior_modality(card: Optional[Mapping[str, Any]]) -> Optional[str]:
    """"CT", "MR" or None (not known) from a model card: an explicit ``"modality"`` entry, else
    the intensity units ("HU" / "1/mm": CT; "normalised": MR; "a.u.": not known)."""
    if not card:
        return None
    explicit = str(card.get("modality") or "").upper()
    if explicit in ("CT", "MR"):
        return explicit
    intensity = card.get("intensity") or {}
    units = str(intensity.get("units", ""))
    if units in ("HU", "1/mm"):
        return "CT"
    if units == "normalised" or intensity.get("convention") == "normalised":
        return "MR"
    return None


def data_modality(task: str) -> str:
    """The modality of a task's measurement: CT for the CT tasks, MR for CS-MRI."""
    return "CT" if task in CT_TASKS else "MR"


def prior_problems(card: Optional[Mapping[str, Any]], task: str, volume_units: str,
                   pixel_spacing: Optional[float] = None) -> list[str]:
    """Why a prior does not fit a measurement (empty when it fits): another modality, HU-less
    data for a CT prior, or a pixel spacing (mm, ``pixel_spacing``) outside the range the card
    says the prior was trained on (``pixel_spacing_mm``, with the slack of
    :func:`medrecon.prior.card.spacing_fits`; checked when both are known)."""
    from medrecon.prior.card import pixel_spacing_range, spacing_fits

    name = (card or {}).get("name", "?")
    pm, dm = prior_modality(card), data_modality(task)
    if pm is not None and pm != dm:
        return [f"prior {name!r} is a {pm} prior (intensity units {card['intensity'].get('units')!r}) "
                f"but the measurement is {dm} data ({task}); choose a {dm} prior"]
    if pm == "CT" and task in CT_TASKS and volume_units == "a.u.":
        window = (card.get("intensity") or {}).get("window")
        return [f"prior {name!r} is a CT prior trained on the HU window {window}, but the measurement was "
                f"simulated from a volume in a.u., whose numbers are not tied to HU; simulate again with "
                f"--units HU (or 1/mm) if the volume holds Hounsfield units (or attenuation), or choose a "
                f"prior trained on a.u. data (e.g. --prior phantom)"]
    if pixel_spacing is not None and volume_units != "a.u." and not spacing_fits(dict(card or {}), pixel_spacing):
        lo, hi = pixel_spacing_range(dict(card or {}))
        return [f"prior {name!r} was trained on pixels of {lo:g}-{hi:g} mm but the measurement's pixels "
                f"are {pixel_spacing:.3g} mm; resample the volume (simulate --size N) to a pixel size in "
                f"that range, or choose a prior trained at this resolution"]
    return []


def check_prior(card: Optional[Mapping[str, Any]], task: str, volume_units: str, force: bool = False,
                pixel_spacing: Optional[float] = None) -> None:
    """Refuse (UserError) a prior that does not fit (:func:`prior_problems`); with ``force``
    warn instead and go on."""
    problems = prior_problems(card, task, volume_units, pixel_spacing)
    if not problems:
        return
    if force:
        for p in problems:
            log.warning("%s (--force: using it anyway)", p)
        return
    raise UserError(problems[0] + "; or pass --force to use it anyway")


__all__ = ["UNIT_CHOICES", "MODALITY_CHOICES", "add_arguments", "declare", "looks_like_hu",
           "warn_if_hu_like", "prior_modality", "data_modality", "prior_problems", "check_prior"]
