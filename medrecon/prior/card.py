"""Prior directories on disk: safetensors weights plus a JSON model card ("medrecon-prior/1").

    PRIOR_DIR/model_card.json   architecture, parameterisation, noise range, image size, intensity
                                window, training provenance (data, licence, command, steps, losses,
                                git revision)
    PRIOR_DIR/ema.safetensors   inference (EMA) weights
    PRIOR_DIR/raw.safetensors   raw weights (optional)

This module reads and writes the format only; :mod:`medrecon.prior.checkpoint` turns a prior
directory into a denoiser. Shipped priors live in ``medrecon/prior/weights/<name>/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import save_file

from medrecon.jsontext import json_text
from medrecon.errors import DataError, UserError

FORMAT = "medrecon-prior/1"
CARD = "model_card.json"
SHIPPED_DIR = Path(__file__).parent / "weights"
REQUIRED = ("format", "name", "architecture", "parameterisation", "noise", "image_size", "intensity",
            "training", "weights")


def shipped_priors() -> list[str]:
    """Names of the priors shipped inside the package."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / CARD).is_file())


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A shipped prior's name or a prior directory -> the directory."""
    path = Path(name_or_path)
    if (path / CARD).is_file():
        return path
    if str(name_or_path) in shipped_priors():
        return SHIPPED_DIR / str(name_or_path)
    if path.exists():
        raise DataError(f"{path} is not a medrecon prior directory (no {CARD})")
    raise UserError(f"unknown prior {str(name_or_path)!r}: not a directory, and the shipped priors are "
                    f"{', '.join(shipped_priors()) or '(none)'}")


def read_card(path: str | os.PathLike) -> dict:
    """The validated model card of a prior directory (or of a card file)."""
    path = Path(path)
    card_path = path if path.suffix == ".json" else path / CARD
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{card_path}: model card not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{card_path}: not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise DataError(f"{card_path}: a model card must be a JSON object")
    missing = [k for k in REQUIRED if k not in card]
    if missing:
        raise DataError(f"{card_path}: model card lacks {', '.join(missing)}")
    if card["format"] != FORMAT:
        raise DataError(f"{card_path}: format {card['format']!r}, expected {FORMAT!r}")
    return card


def save_prior(directory: str | os.PathLike, card: dict, ema_state: dict[str, torch.Tensor],
               raw_state: Optional[dict[str, torch.Tensor]] = None, overwrite: bool = False,
               extras: Optional[dict[str, str | bytes]] = None) -> Path:
    """Write a prior directory atomically (temporary directory beside it, then rename).

    ``extras`` maps file names to text/bytes written alongside (loss curves, eval JSON).
    """
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise UserError(f"prior directory {directory} already exists; pass --overwrite to replace it")
    card = dict(card, format=FORMAT, weights={"ema": "ema.safetensors",
                                                "raw": "raw.safetensors" if raw_state is not None else None})
    missing = [k for k in REQUIRED if k not in card]
    if missing:
        raise ValueError(f"model card lacks {', '.join(missing)}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        contiguous = lambda s: {k: v.detach().contiguous().cpu() for k, v in s.items()}  # noqa: E731
        save_file(contiguous(ema_state), str(tmp / "ema.safetensors"))
        if raw_state is not None:
            save_file(contiguous(raw_state), str(tmp / "raw.safetensors"))
        (tmp / CARD).write_text(json_text(card), encoding="utf-8")
        for name, content in (extras or {}).items():
            target = tmp / name
            target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes the folder private; a prior is meant to be shared
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def training_lineage(card: dict) -> tuple[int, int]:
    """``(steps, samples)`` of all the training behind a prior's weights: its own run plus the
    runs it was initialised from (``--init-from``). Cards that record no totals count their
    predecessors' steps at their own batch size (true of every shipped prior)."""
    t = card.get("training") or {}
    if "total_steps" in t and "total_samples" in t:
        return int(t["total_steps"]), int(t["total_samples"])
    steps = int(t.get("steps") or 0)
    batch = int((t.get("config") or {}).get("batch_size") or 0)
    before = t.get("initialised_from") or {}
    steps_before = int(before.get("total_steps_before", before.get("steps_before")) or 0)
    samples_before = int(before.get("total_samples_before", steps_before * batch))
    return steps + steps_before, steps * batch + samples_before


def pixel_spacing_range(card: dict) -> Optional[tuple[float, float]]:
    """``(lo, hi)``: the in-plane pixel spacings (mm) a prior was trained on (its contract with the
    data, ``pixel_spacing_mm`` in the card), or None when the card states none (phantom priors,
    whose units carry no physical size)."""
    value = card.get("pixel_spacing_mm")
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"prior {card.get('name')!r}: pixel_spacing_mm must be [lo, hi] in mm, got {value!r}") from None
    if not 0 < lo <= hi:
        raise DataError(f"prior {card.get('name')!r}: pixel_spacing_mm must satisfy 0 < lo <= hi, got {value!r}")
    return lo, hi


SPACING_TOLERANCE = 0.02
"""Relative slack at both ends of a card's pixel-spacing range (rounding of recorded spacings)."""


def spacing_fits(card: dict, spacing: Optional[float]) -> bool:
    """Whether ``spacing`` (mm) lies in the card's pixel-spacing range, widened by
    :data:`SPACING_TOLERANCE` at both ends (True when either is unknown)."""
    bounds = pixel_spacing_range(card)
    if bounds is None or spacing is None:
        return True
    lo, hi = bounds
    return lo * (1 - SPACING_TOLERANCE) <= spacing <= hi * (1 + SPACING_TOLERANCE)


def any_image_size(card: dict) -> bool:
    """True when the prior's network is fully convolutional (medrecon's ``edm-unet``): it applies
    to slices of any size divisible by its down-sampling factor. The published NCSN++ / ADM
    networks keep the fixed ``image_size`` they were trained at (their attention layers and
    position-dependent parts were trained at that size only)."""
    return card["architecture"].get("family") == "edm-unet"


def card_summary(card: dict) -> dict[str, Any]:
    """The few card fields a user wants to see first."""
    t = card.get("training", {})
    return {"name": card.get("name"), "family": card["architecture"].get("family"),
            "image_size": card.get("image_size"), "pixel_spacing_mm": card.get("pixel_spacing_mm"),
            "window": card["intensity"].get("window"),
            "units": card["intensity"].get("units"), "steps": t.get("steps"), "data": t.get("data")}
