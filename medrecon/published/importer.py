"""Import the published DiffusionMBIR (NCSN++) and DDS (ADM) checkpoints into a medrecon prior dir.

The published files are read with ``torch.load(weights_only=True, map_location="cpu")`` only, so no
code from the file is ever executed. Layouts (shared/fixtures/published_checkpoints/README.md):

* NCSN++ (``checkpoint_185.pth``): ``{"model", "ema", "optimizer", "step"}``; ``model`` is a
  DataParallel state dict (``module.`` prefix); ``ema["shadow_params"]`` is an unnamed list, one
  tensor per trainable parameter in parameter order (the state-dict order without the ``sigmas``
  buffer and the frozen Fourier ``all_modules.0.W``). The inference weights are ``model`` with the
  shadow values copied in.
* ADM (``AAPM256_1M.pt``): a plain state dict.

Anything else is refused with a :class:`DataError` naming what is missing or wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from medrecon.errors import DataError, UserError
from medrecon.jsontext import json_text
from medrecon.published.adapters import vp_sigma_range
from medrecon.published.build import build_network, check_state
from medrecon.published.config import ADMConfig, NCSNppConfig, flatten
from medrecon.published.ncsnpp import ve_sigmas

FORMATS = ("ncsnpp", "adm")
PRIOR_FORMAT = "medrecon-prior/1"
_REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "published"
DEFAULT_CONFIGS = {"ncsnpp": _REPO_CONFIGS / "ncsnpp_aapm256.yaml",
                   "adm": _REPO_CONFIGS / "adm_aapm256.yaml"}

DEFAULT_INTENSITY = {
    "ncsnpp": {"convention": "window01", "window": [0.0, 1.0], "units": "a.u.",
               "description": "DiffusionMBIR AAPM CT slices scaled to [0, 1] (data.centered=False; "
                              "the network maps x -> 2x - 1 itself). The HU window of the published "
                              "preprocessing is not stored in the checkpoint; set intensity.window "
                              "and units in --config if known."},
    "adm": {"convention": "raw", "window": None, "units": "a.u.",
            "description": "DDS AAPM slices in the raw range of the published .npy training files; "
                           "the network does no input scaling."},
}
_PROVENANCE = {"ncsnpp": "DiffusionMBIR (github.com/HJ-harry/DiffusionMBIR), NCSN++ VE-SDE",
               "adm": "DDS (github.com/HJ-harry/DDS), ADM UNet VP/DDPM"}


# ------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------

def read_config(path: Optional[str | Path], fmt: str) -> dict[str, Any]:
    """Config dict from a JSON/YAML file, or the published AAPM-256 config for ``fmt``."""
    if path is None:
        path = DEFAULT_CONFIGS[fmt]
        if not path.is_file():
            raise UserError(f"no --config given and the default {path} is missing; "
                            "pass the network configuration with --config")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise DataError(f"--config {path}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"--config {path}: expected a mapping at the top level")
    return data


def load_published(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with user-facing errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a tensor-only PyTorch checkpoint readable with "
                        f"weights_only=True ({first})") from None


def _tensor_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise DataError(f"{what}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise DataError(f"{what}: expected a state dict of tensors; entries that are not tensors: "
                        f"{', '.join(map(str, bad[:5]))}")
    return dict(obj)


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the DataParallel ``module.`` prefix when every key has it."""
    if all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _check_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DataError(f"{what}: non-finite values in {', '.join(bad[:5])}")


def ncsnpp_states(ckpt: Any, config: Mapping[str, Any], source: str
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """``(ema_state, raw_state, step)`` from a DiffusionMBIR checkpoint dict (EMA shadow applied)."""
    if not isinstance(ckpt, Mapping):
        raise DataError(f"{source}: expected a DiffusionMBIR checkpoint dict with 'model' and 'ema' "
                        f"entries, got {type(ckpt).__name__}")
    for entry in ("model", "ema"):
        if entry not in ckpt:
            raise DataError(f"{source}: no {entry!r} entry (expected a DiffusionMBIR checkpoint "
                            f"with 'model', 'ema', 'optimizer', 'step'; found {sorted(map(str, ckpt))})")
    raw = _strip_module(_tensor_dict(ckpt["model"], f"{source} ['model']"))
    net = build_network("ncsnpp", config, "meta")
    if "sigmas" not in raw:            # unused by the forward pass; the published loader drops it
        with torch.device("cpu"):
            raw = {"sigmas": ve_sigmas(net.config), **raw}
    check_state(net, raw, f"{source} ['model']")
    ema = ckpt["ema"]
    if not isinstance(ema, Mapping) or "shadow_params" not in ema:
        raise DataError(f"{source}: the 'ema' entry has no 'shadow_params' list")
    shadow = ema["shadow_params"]
    # the shadow list follows model.parameters() of the published net, skipping frozen ones;
    # medrecon's NCSNpp registers its parameters in the same order (checked by the key tests)
    order = [n for n, p in net.named_parameters() if p.requires_grad]
    if not isinstance(shadow, (list, tuple)) or len(shadow) != len(order):
        n = len(shadow) if isinstance(shadow, (list, tuple)) else type(shadow).__name__
        raise DataError(f"{source}: ema shadow_params has {n} entries, expected {len(order)} "
                        "(one per trainable parameter)")
    ema_state = dict(raw)
    for j, (name, value) in enumerate(zip(order, shadow)):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(raw[name].shape):
            got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise DataError(f"{source}: ema shadow_params[{j}] has shape {got}, expected "
                            f"{list(raw[name].shape)} for {name}")
        ema_state[name] = value
    step = ckpt.get("step", 0)
    step = int(step.item()) if isinstance(step, torch.Tensor) else int(step or 0)
    return ema_state, raw, step


def adm_state(obj: Any, config: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The plain state dict of a DDS ADM checkpoint, checked against the configured architecture."""
    if isinstance(obj, Mapping) and obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{source}: expected a plain ADM state dict (as DDS's AAPM256_1M.pt), found "
                        f"a dict with entries {sorted(map(str, obj))[:6]}")
    state = _strip_module(_tensor_dict(obj, source))
    check_state(build_network("adm", config, "meta"), state, source)
    return state


# ------------------------------------------------------------------------------------------------
# Writing the prior directory
# ------------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _contiguous(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def write_prior_dir(directory: str | Path, card: dict, ema_state: Mapping[str, torch.Tensor],
                    raw_state: Optional[Mapping[str, torch.Tensor]] = None,
                    overwrite: bool = False) -> Path:
    """Write ``model_card.json`` + ``ema.safetensors`` (+ ``raw.safetensors``) atomically.

    Uses :func:`medrecon.prior.card.save_prior` when that module exists; otherwise writes a
    temporary directory beside the target and renames it into place (format "medrecon-prior/1").
    """
    try:
        from medrecon.prior.card import save_prior
    except ImportError:
        save_prior = None
    if save_prior is not None:
        return Path(save_prior(directory, card, _contiguous(ema_state),
                               _contiguous(raw_state) if raw_state is not None else None,
                               overwrite=overwrite))
    from safetensors.torch import save_file

    target = Path(directory)
    if target.exists() and not overwrite:
        raise UserError(f"{target}: already exists (use --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        save_file(_contiguous(ema_state), str(tmp / "ema.safetensors"))
        if raw_state is not None:
            save_file(_contiguous(raw_state), str(tmp / "raw.safetensors"))
        (tmp / "model_card.json").write_text(json_text(card))
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old.{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# ------------------------------------------------------------------------------------------------
# The import itself
# ------------------------------------------------------------------------------------------------

def split_card_options(config: Mapping[str, Any]) -> tuple[dict, dict, Optional[str]]:
    """Separate the card-only sections (``intensity``, ``name``) from the network config."""
    net_cfg = {k: v for k, v in config.items() if k not in ("intensity", "name")}
    intensity = config.get("intensity") or {}
    if not isinstance(intensity, Mapping):
        raise UserError("--config: 'intensity' must be a mapping")
    name = config.get("name")
    return net_cfg, dict(intensity), (str(name) if name is not None else None)


def make_card(fmt: str, net_config: Mapping[str, Any], intensity: Mapping[str, Any], name: str,
              source: Path, sha256: str, step: Optional[int], parameters: int,
              has_raw: bool) -> dict:
    """The ``medrecon-prior/1`` model card of an imported published network."""
    flat = flatten(net_config)
    if fmt == "ncsnpp":
        cfg = NCSNppConfig.from_dict(net_config)
        arch = cfg.to_dict()
        noise = {"sigma_min": cfg.sigma_min, "sigma_max": cfg.sigma_max,
                 "num_scales": cfg.num_scales, "sde": "vesde"}
        size, param = cfg.image_size, "ve-score"
        data = "AAPM 256x256 CT slices (DiffusionMBIR training data)"
    else:
        acfg = ADMConfig.from_dict(net_config)
        arch = acfg.to_dict()
        schedule = str(flat.get("diffusion.beta_schedule", "linear"))
        if schedule != "linear":
            raise UserError(f"adm config: diffusion.beta_schedule={schedule!r} is not supported "
                            "(only 'linear', as in DDS)")
        b0 = float(flat.get("diffusion.beta_start", 1e-4))
        b1 = float(flat.get("diffusion.beta_end", 0.02))
        steps_t = int(flat.get("diffusion.num_diffusion_timesteps", 1000))
        s_min, s_max = vp_sigma_range(b0, b1, steps_t)
        noise = {"sigma_min": s_min, "sigma_max": s_max, "beta_start": b0, "beta_end": b1,
                 "timesteps": steps_t, "beta_schedule": "linear",
                 "learned_sigma": acfg.learn_sigma}
        size, param = acfg.image_size, "vp-eps"
        data = "AAPM 256x256 CT slices (DDS training data)"
    inten = {**DEFAULT_INTENSITY[fmt], **intensity}
    if inten["convention"] not in ("window01", "raw"):
        raise UserError(f"--config intensity.convention {inten['convention']!r}: expected window01 or raw")
    return {
        "format": PRIOR_FORMAT,
        "name": name,
        "architecture": {"family": fmt, "config": arch},
        "parameterisation": param,
        "noise": noise,
        "image_size": size,
        "intensity": inten,
        "training": {"data": data, "provenance": f"imported from {source.name} "
                     f"(sha256 {sha256}); published by {_PROVENANCE[fmt]}",
                     "licence": "see the publishing repository; not redistributed by medrecon",
                     "command": f"medrecon prior import --format {fmt} {source.name}",
                     "steps": step, "final_loss": None, "git_revision": None,
                     "source_sha256": sha256, "ema_applied": fmt == "ncsnpp"},
        "weights": {"ema": "ema.safetensors", "raw": "raw.safetensors" if has_raw else None},
        "parameters": parameters,
    }


def import_published(fmt: str, checkpoint: str | Path, output: str | Path,
                     config: Optional[Mapping[str, Any]] = None, name: Optional[str] = None,
                     overwrite: bool = False, provenance: Optional[Mapping[str, Any]] = None) -> Path:
    """Convert a published checkpoint into a medrecon prior directory; returns its path.

    ``config``: the network configuration (published key names accepted; optional ``intensity``
    and ``name`` sections for the card); default: the published AAPM-256 config of ``fmt``.
    ``provenance``: the block recorded as the card's ``"provenance"`` (:mod:`medrecon.provenance`).
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    src = Path(checkpoint)
    out = Path(output)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (use --overwrite to replace it)")
    net_cfg, intensity, cfg_name = split_card_options(config if config is not None
                                                       else read_config(None, fmt))
    obj = load_published(src)
    if fmt == "ncsnpp":
        ema_state, raw_state, step = ncsnpp_states(obj, net_cfg, str(src))
    else:
        ema_state, raw_state, step = adm_state(obj, net_cfg, str(src)), None, None
    _check_finite(ema_state, str(src))
    parameters = sum(p.numel() for p in build_network(fmt, net_cfg, "meta").parameters())
    card = make_card(fmt, net_cfg, intensity, name or cfg_name or out.name, src, _sha256(src),
                     step, parameters, raw_state is not None)
    if provenance is not None:
        card["provenance"] = dict(provenance)
    return write_prior_dir(out, card, ema_state, raw_state, overwrite=overwrite)
