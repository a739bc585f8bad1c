"""Load a prior directory (safetensors weights + model card) as a :class:`Denoiser`.

The card's architecture family picks the builder among those registered with
:mod:`medrecon.prior.families` (medrecon's own ``edm-unet``; the published ``ncsnpp`` and ``adm``
once :mod:`medrecon.published` is imported).

The format itself (the card, shipped priors, writing a prior directory) is
:mod:`medrecon.prior.card`; its names are re-exported here. Loading reads safetensors only, so no
code from the file is ever executed; a card whose architecture does not match the weights, or
whose window/image size differs from what the caller expects, is refused with a
:class:`~medrecon.errors.DataError` naming the file and the mismatch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import load_file

from medrecon.checks import require_finite_tensors
from medrecon.errors import DataError
from medrecon.prior.card import (CARD, FORMAT, REQUIRED, SHIPPED_DIR, card_summary, read_card,
                                 resolve, save_prior, shipped_priors)
from medrecon.prior.denoiser import Denoiser
from medrecon.prior.families import family_builder

__all__ = ["CARD", "FORMAT", "REQUIRED", "SHIPPED_DIR", "card_summary", "load_prior", "read_card",
           "resolve", "save_prior", "shipped_priors"]


def weights_path(directory: Path, card: dict, weights: str = "ema") -> Path:
    """The weights file the card names, confined to the prior directory: a plain file name
    inside it (no absolute path, no ``..``, no symlink out of it)."""
    entry = card["weights"] if isinstance(card.get("weights"), dict) else {}
    file = entry.get(weights)
    if not file:
        raise DataError(f"{directory / CARD}: the model card lists no {weights!r} weights")
    if not isinstance(file, str) or Path(file).is_absolute() or ".." in Path(file).parts:
        raise DataError(f"{directory / CARD}: weights path {file!r} must be a file name inside "
                        f"the prior directory")
    path = directory / file
    root = directory.resolve()
    if root not in path.resolve().parents:
        raise DataError(f"{directory / CARD}: weights path {file!r} leads out of the prior "
                        f"directory (to {path.resolve()})")
    if not path.is_file():
        raise DataError(f"{path}: weights file missing")
    return path


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 (hex) of a network's parameters and buffers, in name order: what a run that
    used these weights must use again to resume."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_prior(name_or_path: str | os.PathLike, device: torch.device | str = "cpu",
               expect_image_size: Optional[int] = None, image_shape: Optional[Sequence[int]] = None,
               expect_window: Optional[Sequence[float]] = None, weights: str = "ema") -> Denoiser:
    """Load a prior (shipped name or directory) as a :class:`Denoiser` in eval mode on ``device``.

    The returned denoiser carries ``.card``. Refuses mismatches with a DataError:
    ``expect_image_size`` must equal the card's image size; ``image_shape`` (``(H, W)`` of the
    slices it will see) must be the card's ``image_size`` square for a fixed-size (published)
    prior, while the fully convolutional ``edm-unet`` priors take any size.
    """
    from medrecon.prior.card import any_image_size

    directory = resolve(name_or_path)
    card = read_card(directory)
    if image_shape is not None and not any_image_size(card) and \
            tuple(int(n) for n in image_shape) != (int(card["image_size"]),) * 2:
        raise DataError(f"{directory}: prior {card.get('name')!r} ({card['architecture'].get('family')}) applies "
                        f"to {card['image_size']}x{card['image_size']} slices only, the data are "
                        f"{'x'.join(str(int(n)) for n in image_shape)}; resample the volume (--size "
                        f"{card['image_size']})")
    if expect_image_size is not None and int(card["image_size"]) != int(expect_image_size):
        raise DataError(f"{directory}: prior is {card['image_size']}x{card['image_size']}, "
                        f"the data need {expect_image_size}x{expect_image_size}")
    window = card["intensity"].get("window")
    if expect_window is not None and (window is None or
                                      any(abs(float(a) - float(b)) > 1e-6 for a, b in zip(window, expect_window))):
        raise DataError(f"{directory}: prior window {window} differs from the expected {list(expect_window)}")
    path = weights_path(directory, card, weights)
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise DataError(f"{path}: cannot read safetensors weights ({exc})") from None
    require_finite_tensors(state.items(), str(path))
    build = family_builder(card["architecture"].get("family"), directory / CARD)
    try:
        model = build(card, state, directory=directory, weights=path, device=device)
    except DataError as exc:   # name the prior's card: a family may speak of "model card"
        text = str(exc)
        raise DataError(text if str(directory) in text else
                        f"{directory / CARD}: {text.removeprefix('model card: ')}") from None
    model.card = card
    model.prior_dir = directory          # where its fitted step schedules are (samplers/fewstep.py)
    return model.to(device).eval().requires_grad_(False)
