"""Prior directories: safetensors weights plus a JSON model card ("medrecon-prior/1").

    PRIOR_DIR/model_card.json   architecture, parameterisation, noise range, image size, intensity
                                window, training provenance (data, licence, command, steps, losses,
                                git revision)
    PRIOR_DIR/ema.safetensors   inference (EMA) weights
    PRIOR_DIR/raw.safetensors   raw weights (optional)

Loading reads safetensors only, so no code from the file is ever executed; a card whose
architecture does not match the weights, or whose window/image size differs from what the caller
expects, is refused with a :class:`~medrecon.errors.DataError` naming the file and the mismatch.
Shipped priors live in ``medrecon/prior/weights/<name>/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from safetensors.torch import load_file, save_file

from medrecon.errors import DataError, UserError
from medrecon.io.checks import require_finite_tensors
from medrecon.io.jsonio import json_text
from medrecon.prior.denoiser import Denoiser

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


def _check_state(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            detail.append(f"{len(wrong)} with other shapes (e.g. {wrong[0]}: {got[wrong[0]]} vs {expected[wrong[0]]})")
        raise DataError(f"{source}: weights do not match the architecture in the model card: " + "; ".join(detail))


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
               expect_image_size: Optional[int] = None,
               expect_window: Optional[Sequence[float]] = None, weights: str = "ema") -> Denoiser:
    """Load a prior (shipped name or directory) as a :class:`Denoiser` in eval mode on ``device``.

    The returned denoiser carries ``.card``. Refuses mismatches with a DataError.
    """
    directory = resolve(name_or_path)
    card = read_card(directory)
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
    family = card["architecture"].get("family")
    if family == "edm-unet":
        from medrecon.prior.network import build
        try:
            model = build(card["architecture"]["config"])
        except (TypeError, ValueError) as exc:
            raise DataError(f"{directory / CARD}: bad edm-unet architecture config ({exc})") from None
        _check_state(model, state, path)
        model.load_state_dict(state)
    elif family in ("ncsnpp", "adm"):
        from medrecon.published import build_denoiser
        model = build_denoiser(card, state, device=device)
    else:
        raise DataError(f"{directory / CARD}: unknown architecture family {family!r}")
    model.card = card
    return model.to(device).eval().requires_grad_(False)


def card_summary(card: dict) -> dict[str, Any]:
    """The few card fields a user wants to see first."""
    t = card.get("training", {})
    return {"name": card.get("name"), "family": card["architecture"].get("family"),
            "image_size": card.get("image_size"), "window": card["intensity"].get("window"),
            "units": card["intensity"].get("units"), "steps": t.get("steps"), "data": t.get("data")}
