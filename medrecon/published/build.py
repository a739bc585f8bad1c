"""Build a published network or its denoiser from a model card and a state dict (no code execution)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from medrecon.errors import DataError, UserError
from medrecon.prior.denoiser import Denoiser
from medrecon.prior.families import register_family
from medrecon.published.adapters import ADMDenoiser, NCSNppDenoiser
from medrecon.published.adm import ADMUNet
from medrecon.published.config import ADMConfig, NCSNppConfig
from medrecon.published.inference import prepare_for_inference
from medrecon.published.ncsnpp import NCSNpp

PARAMETERISATION = {"ncsnpp": "ve-score", "adm": "vp-eps"}


def build_network(family: str, config: Mapping[str, Any], device: torch.device | str = "meta") -> nn.Module:
    """The bare network of ``family`` ("ncsnpp" | "adm") from a config dict, on ``device``
    (default ``meta``: shapes only, no memory, no initialisation cost)."""
    with torch.device(device):
        if family == "ncsnpp":
            return NCSNpp(NCSNppConfig.from_dict(config))
        if family == "adm":
            return ADMUNet(ADMConfig.from_dict(config))
    raise UserError(f"unknown published architecture family {family!r} (expected ncsnpp or adm)")


def _short(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def check_state(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse a state dict whose key set or shapes differ from ``net``'s, naming what differs."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_short(unexpected)}")
    wrong = [f"{k} {list(state[k].shape)} (expected {list(v.shape)})"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        problems.append(f"shape mismatch in {len(wrong)} tensor(s): {_short(wrong, 3)}")
    not_float = [k for k in expected if k in state and not torch.is_floating_point(state[k])]
    if not_float:
        problems.append(f"non-floating tensors: {_short(not_float)}")
    if problems:
        raise DataError(f"{source}: weights do not match the configured architecture: "
                        + "; ".join(problems))


def load_network(family: str, config: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                 device: torch.device | str = "cpu", source: str = "state dict") -> nn.Module:
    """Network with ``state`` loaded (checked first), on ``device``, in eval mode, parameters frozen."""
    net = build_network(family, config, "meta")
    check_state(net, state, source)
    expected = net.state_dict()
    typed = {k: v.detach().to(dtype=expected[k].dtype, device="cpu") for k, v in state.items()}
    net.load_state_dict(typed, strict=True, assign=True)
    return prepare_for_inference(net, device, channels_last=None)


def build_denoiser(card: dict, state: dict[str, torch.Tensor], device: torch.device | str = "cpu",
                   precision: str = "auto") -> Denoiser:
    """Denoiser for an imported published prior: ``card`` is the model card (model_card.json),
    ``state`` the EMA state dict (ema.safetensors). ``precision="auto"``: bf16/fp16 autocast and
    channels-last on CUDA, float32 on CPU; ``"fp32"`` forces float32 everywhere."""
    try:
        family = card["architecture"]["family"]
        config = card["architecture"]["config"]
        param = card["parameterisation"]
    except (KeyError, TypeError) as exc:
        raise DataError(f"model card: missing architecture/parameterisation entry ({exc})") from None
    if family not in PARAMETERISATION:
        raise DataError(f"model card: architecture family {family!r} is not a published network "
                        "(expected ncsnpp or adm)")
    if param != PARAMETERISATION[family]:
        raise DataError(f"model card: parameterisation {param!r} does not fit family {family!r} "
                        f"(expected {PARAMETERISATION[family]!r})")
    source = f"{card.get('name', 'prior')} weights"
    net = load_network(family, config, state, device, source)
    den: Denoiser
    if family == "ncsnpp":
        den = NCSNppDenoiser(net, precision=precision)
    else:
        noise = card.get("noise", {})
        try:
            den = ADMDenoiser(net, beta_start=float(noise["beta_start"]),
                              beta_end=float(noise["beta_end"]), timesteps=int(noise["timesteps"]),
                              precision=precision)
        except KeyError as exc:
            raise DataError(f"model card: noise.{exc.args[0]} missing (needed for vp-eps)") from None
    den.card = card
    return den.to(device)


def from_card(card: dict, state: dict[str, torch.Tensor], *, directory: Path, weights: Path,
              device: torch.device | str = "cpu") -> Denoiser:
    """:func:`build_denoiser` as the builder of the ``ncsnpp`` and ``adm`` families
    (:mod:`medrecon.prior.families`; the loader names the card in messages)."""
    return build_denoiser(card, state, device=device)


def register_families() -> None:
    """Make imported published priors loadable by :func:`medrecon.prior.checkpoint.load_prior`."""
    for family in PARAMETERISATION:
        register_family(family, from_card)
