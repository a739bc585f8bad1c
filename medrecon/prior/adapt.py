"""Test-time adaptation of a prior: low-rank (LoRA) adapters and bias offsets on a frozen denoiser.

:class:`LoraDenoiser` wraps a :class:`~medrecon.prior.denoiser.Denoiser` and adds, for every
``Conv2d`` of the network with weight ``W`` ``[O, I, kh, kw]``, a rank-``r`` update

    W' = W + (alpha / r) (B A).reshape(O, I, kh, kw),   A: [r, I kh kw] (seeded),  B: [O, r] = 0

and for every bias ``b`` of the network (convolutions, linear layers, normalisations) an offset
``b' = b + d`` with ``d = 0`` at the start (after DDIP3D, Chung & Ye, ECCV 2024: one LoRA adapter
on the convolutions plus the biases). Because ``B`` and ``d`` start at zero, the adapted network
equals the base network before the first optimiser step. The base network is evaluated through
:func:`torch.func.functional_call` with the merged tensors: its parameters are never written and
receive no gradients.

The wrapper owns its AdamW optimiser and a seeded CPU generator (for the caller's random choices,
e.g. which slices to adapt on). :meth:`LoraDenoiser.state_tensors` and
:meth:`LoraDenoiser.load_state_tensors` move the adapter, the optimiser moments and the generator
into and out of a flat dict of tensors (a sampler state), so a resumed run continues bit for bit.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from medrecon.errors import UserError
from medrecon.prior.denoiser import Denoiser

STATE_PREFIX = "adapt."
_COPIED = ("image_size", "fixed_size", "size_multiple", "bytes_per_pixel", "sigma_min", "sigma_max")


def _key(name: str) -> str:
    return name.replace(".", "__")


class LoraDenoiser(Denoiser):
    """``base`` with LoRA adapters of ``rank`` on its convolutions and trainable bias offsets.

    Args:
        base: the prior (left unchanged).
        rank: the rank ``r`` of every adapter (>= 1).
        lr, weight_decay: AdamW's learning rate and decoupled weight decay.
        seed: seeds the down-projections ``A`` and :attr:`generator`.
        alpha: LoRA scale numerator (the update is multiplied by ``alpha / rank``; default ``rank``).
    """

    def __init__(self, base: Denoiser, rank: int = 4, lr: float = 1e-3, weight_decay: float = 0.0,
                 seed: int = 0, alpha: Optional[float] = None) -> None:
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise UserError(f"adapter rank must be a positive integer, got {rank!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise UserError(f"adapter learning rate must be a positive number, got {lr!r}")
        self.base = base
        for name in _COPIED:
            if hasattr(base, name):
                setattr(self, name, getattr(base, name))
        if hasattr(base, "card"):
            self.card = base.card
        self.rank, self.scale = rank, float(alpha if alpha is not None else rank) / rank
        init = torch.Generator(device="cpu").manual_seed(seed)
        self.down, self.up, self.bias = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
        self._conv_weights: dict[str, str] = {}     # parameter name -> adapter key
        self._biases: dict[str, str] = {}
        for mod_name, mod in base.named_modules():
            if isinstance(mod, nn.Conv2d):
                w = mod.weight
                name, key = f"{mod_name}.weight", _key(mod_name)
                fan_in = w[0].numel()
                a = torch.randn((rank, fan_in), generator=init, dtype=torch.float32) / math.sqrt(fan_in)
                self.down[key] = nn.Parameter(a.to(device=w.device, dtype=w.dtype))
                self.up[key] = nn.Parameter(torch.zeros((w.shape[0], rank), device=w.device,
                                                        dtype=w.dtype))
                self._conv_weights[name] = key
        for name, p in base.named_parameters():
            if name.endswith(".bias") or name == "bias":
                key = _key(name)
                self.bias[key] = nn.Parameter(torch.zeros_like(p.detach()))
                self._biases[name] = key
        if not self._conv_weights:
            raise UserError(f"prior {type(base).__name__} has no 2D convolutions to adapt")
        self.generator = torch.Generator(device="cpu").manual_seed(seed + 1)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.optimizer = torch.optim.AdamW(self.adapter_parameters(), lr=self.lr,
                                           weight_decay=self.weight_decay, foreach=False)

    # -- the network --------------------------------------------------------------------------
    def adapter_parameters(self) -> list[nn.Parameter]:
        """The trainable tensors, in a fixed order (down, up, bias; names sorted)."""
        return ([self.down[k] for k in sorted(self.down)] + [self.up[k] for k in sorted(self.up)]
                + [self.bias[k] for k in sorted(self.bias)])

    def merged_parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter of the base network, the adapted ones with their updates added (the
        base tensors themselves are detached: no gradient reaches them)."""
        out: dict[str, torch.Tensor] = {}
        for name, p in self.base.named_parameters():
            w = p.detach()
            if name in self._conv_weights:
                k = self._conv_weights[name]
                w = w + self.scale * (self.up[k] @ self.down[k]).reshape(w.shape)
            if name in self._biases:
                w = w + self.bias[self._biases[name]]
            out[name] = w
        return out

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The adapted network's ``D(x, sigma)`` ``[B, 1, H, W]`` (differentiable in the adapter)."""
        return torch.func.functional_call(self.base, self.merged_parameters(), (x, sigma),
                                          strict=False)

    # -- optimisation -------------------------------------------------------------------------
    def optimizer_step(self, loss: Optional[torch.Tensor],
                       reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        """One AdamW step on ``loss`` (a scalar built from :meth:`denoise`; None: this process has
        no term, its gradient is zero). ``reduce`` sums the flattened gradient over processes
        (e.g. :meth:`~medrecon.distributed.slab.Slab.sum`), so that all hold the same adapter."""
        params = self.adapter_parameters()
        self.optimizer.zero_grad(set_to_none=False)
        if loss is not None:
            loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if reduce is not None:
            flat = reduce(torch.cat([g.reshape(-1) for g in grads]))
            grads = list(torch.split(flat, [p.numel() for p in params]))
        for p, g in zip(params, grads):
            p.grad = g.reshape(p.shape).clone()
        self.optimizer.step()

    # -- state --------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Adapter tensors, AdamW moments and the generator as ``{"adapt.<...>": tensor}``."""
        out = {}
        for group, params in (("down", self.down), ("up", self.up), ("bias", self.bias)):
            for k, p in params.items():
                out[f"{STATE_PREFIX}{group}.{k}"] = p.detach().clone()
        for j, st in self.optimizer.state_dict()["state"].items():
            for field, v in st.items():
                out[f"{STATE_PREFIX}opt.{j}.{field}"] = torch.as_tensor(v).detach().clone()
        out[f"{STATE_PREFIX}rng"] = self.generator.get_state()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` produced (keys without the prefix are ignored)."""
        mine = {k[len(STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
        with torch.no_grad():
            for group, params in (("down", self.down), ("up", self.up), ("bias", self.bias)):
                for k, p in params.items():
                    if f"{group}.{k}" not in mine:
                        raise UserError(f"the saved adapter state has no tensor {group}.{k}")
                    p.copy_(mine[f"{group}.{k}"])
        saved = self.optimizer.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, v in mine.items():
            if key.startswith("opt."):
                _, j, field = key.split(".", 2)
                state.setdefault(int(j), {})[field] = v.clone()
        self.optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        self.generator.set_state(mine["rng"].to("cpu", torch.uint8))


def adapted_parameter_count(adapter: LoraDenoiser) -> int:
    """Number of trainable numbers in ``adapter``."""
    return sum(p.numel() for p in adapter.adapter_parameters())
