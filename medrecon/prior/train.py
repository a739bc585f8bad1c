"""Training of an ``edm-unet`` prior (EDM loss, AdamW, EMA, gradient clipping, AMP on CUDA,
periodic atomic checkpoints, exact resume, DistributedDataParallel under ``torchrun``).

Loss (Karras et al. 2022): ``log sigma ~ N(p_mean, p_std^2)`` and the network regresses the
unit-variance target ``(x0 - c_skip x) / c_out`` from ``c_in x``, which is the EDM weighting
``(sigma^2 + sd^2) / (sigma sd)^2 ||D(x, sigma) - x0||^2``.

Under ``torchrun`` every rank draws its own share of the global batch (seeded by step and rank),
gradients are averaged by DDP, so the ranks hold identical weights after every step and the loss
equals a single process run on the same global batch.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from medrecon.progress import tqdm

from medrecon.jsontext import json_text
from medrecon.prior.data import SliceSet, draw_batch, draw_multiscale_batch
from medrecon.prior.network import EDMUNetDenoiser, UNetConfig
from medrecon.prior.slice_groups import draw_group_batch, validation_groups

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings (the network's are in ``network``)."""

    network: UNetConfig = field(default_factory=UNetConfig)
    steps: int = 20000
    batch_size: int = 16             # global batch (split over ranks)
    lr: float = 2e-4
    lr_final: Optional[float] = None  # cosine decay from lr to lr_final over the last steps
    lr_decay_steps: int = 0           # length of that decay (0: constant lr)
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    p_mean: float = -1.6
    p_std: float = 1.4
    max_rotation_deg: float = 10.0
    max_zoom: float = 0.0            # isotropic zoom augmentation, factor in [1/(1+z), 1+z]
    crop: int = 0                    # train on random crop x crop windows (0: whole slices)
    pixel_spacings: list = field(default_factory=list)  # mm; multi-scale training levels (sample sets)
    z_strides: list = field(default_factory=lambda: [1])  # slice-group priors: strides along z
    checkpoint_every: int = 200
    val_every: int = 500
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        net = UNetConfig.from_dict(d.pop("network", {}))
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training config keys {sorted(unknown)}")
        config = cls(network=net, **d)
        spacings = config.pixel_spacings
        if not isinstance(spacings, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     and v > 0 for v in spacings):
            raise ValueError(f"pixel_spacings must be a list of positive numbers (mm), got {spacings!r}")
        if spacings and not config.crop:
            raise ValueError("pixel_spacings (multi-scale training) needs crop > 0")
        strides = config.z_strides
        if not isinstance(strides, list) or not strides or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in strides):
            raise ValueError(f"z_strides must be a non-empty list of integers >= 1, got {strides!r}")
        if config.network.slice_group > 1 and not spacings:
            raise ValueError("a slice-group prior (network.slice_group > 1) is trained multi-scale: "
                             "give pixel_spacings and crop")
        decay, final = config.lr_decay_steps, config.lr_final
        if isinstance(decay, bool) or not isinstance(decay, int) or decay < 0:
            raise ValueError(f"lr_decay_steps must be an integer >= 0, got {decay!r}")
        if decay and (isinstance(final, bool) or not isinstance(final, (int, float))
                      or not 0 <= final <= config.lr):
            raise ValueError(f"lr_final must be a number in [0, lr] with lr_decay_steps, got {final!r}")
        return config

    def to_dict(self) -> dict:
        d = asdict(self)
        d["network"] = self.network.to_dict()
        return d


class RawNet(torch.nn.Module):
    """``forward = model.raw``: the module DDP wraps, so that it sees the network's forward call."""

    def __init__(self, model: EDMUNetDenoiser) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, sigma: torch.Tensor,
                z_spacing_mm: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.model.raw(x, sigma, z_spacing_mm)


def edm_loss(model: EDMUNetDenoiser, x0: torch.Tensor, generator: torch.Generator, p_mean: float,
             p_std: float, raw: Optional[Callable[..., torch.Tensor]] = None,
             z_spacing_mm: Optional[torch.Tensor] = None) -> torch.Tensor:
    """EDM denoising loss of a batch ``[B, C, H, W]`` in prior units (noise drawn from
    ``generator``; one sigma per group of C slices).

    ``raw`` computes the network output (default ``model.raw``; a DDP-wrapped :class:`RawNet`
    when distributed); ``z_spacing_mm`` ``[B]``: the groups' slice spacings (group priors)."""
    b = x0.shape[0]
    sigma = torch.exp(p_mean + p_std * torch.randn(b, generator=generator)).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    s = sigma.reshape(-1, 1, 1, 1)
    sd = model.config.sigma_data
    x = x0 + s * noise
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / torch.sqrt(s**2 + sd**2)
    target = ((model.output_slices(x0) - model.config.centre) - c_skip * model.skip_input(x)) / c_out
    return (((raw or model.raw)(x, sigma, z_spacing_mm) - target) ** 2).mean()


def inflate_to_group(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A 2D prior's weights fitted to a slice-group network of C channels: the first
    convolution's single input channel goes to the centre slice (the others start at 0) and the
    last convolution's single output channel is repeated for every slice, so the group network
    starts as the 2D prior applied to the centre slice (a ``centre_output`` network keeps the
    single output channel). Other tensors are returned unchanged."""
    out = dict(source)
    for k, t in source.items():
        want = tuple(target[k].shape) if k in target else None
        if want is None or tuple(t.shape) == want or t.dim() != len(want):
            continue
        if t.dim() == 4 and t.shape[1] == 1 and want[1] > 1 and (t.shape[0],) + tuple(t.shape[2:]) == (want[0],) + want[2:]:
            grown = torch.zeros(want, dtype=t.dtype)
            grown[:, want[1] // 2] = t[:, 0]
            out[k] = grown
        elif t.shape[0] == 1 and want[0] > 1 and tuple(t.shape[1:]) == want[1:]:
            out[k] = t.expand(want).clone()
    return out


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> None:
    """Start the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


class Trainer:
    """Holds the model, its EMA copy, the optimiser and the step; checkpoints and resumes."""

    def __init__(self, config: TrainConfig, data: SliceSet, run_dir: str | Path,
                 device: torch.device | str = "cpu") -> None:
        self.config, self.data = config, data
        self.device = torch.device(device)
        self.run_dir = Path(run_dir)
        self.rank, self.world = _rank_world()
        if config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the {self.world} ranks")
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model = EDMUNetDenoiser(config.network).to(self.device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.raw = RawNet(self.model)
        if self.world > 1:
            self.raw = torch.nn.parallel.DistributedDataParallel(self.raw)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        self.step = 0
        self.losses: list[tuple[int, float]] = []
        self.val_losses: list[tuple[int, float]] = []

    # -- one optimisation step -------------------------------------------------------------
    def _generator(self, purpose: int) -> torch.Generator:
        """Seeded by (seed, step, rank, purpose): a resumed run draws exactly the same numbers."""
        return torch.Generator().manual_seed(
            ((self.config.seed * 1_000_003 + self.step) * 64 + self.rank) * 4 + purpose)

    def learning_rate(self) -> float:
        """Learning rate of the current step: ``lr`` until the last ``lr_decay_steps`` of the
        recipe's ``steps``, then a cosine decay to ``lr_final`` (a function of the step alone,
        so a resumed or interrupted run follows the same schedule)."""
        cfg = self.config
        if not cfg.lr_decay_steps or cfg.lr_final is None:
            return cfg.lr
        start = cfg.steps - cfg.lr_decay_steps
        t = min(max((self.step - start) / cfg.lr_decay_steps, 0.0), 1.0)
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1.0 + math.cos(math.pi * t))

    def train_step(self) -> float:
        cfg = self.config
        for group in self.opt.param_groups:
            group["lr"] = self.learning_rate()
        gen = self._generator(0)
        z_spacing = None
        if cfg.network.slice_group > 1:
            x0, z_spacing = draw_group_batch(self.data.stacks, cfg.batch_size // self.world, gen, cfg.crop,
                                             cfg.network.slice_group, cfg.z_strides, cfg.max_rotation_deg,
                                             cfg.max_zoom)
            x0 = x0.to(self.device)
        elif self.data.levels:
            x0 = draw_multiscale_batch(self.data.levels, cfg.batch_size // self.world, gen, cfg.crop,
                                       cfg.max_rotation_deg, cfg.max_zoom).to(self.device)
        else:
            x0 = draw_batch(self.data.train, cfg.batch_size // self.world, gen, cfg.max_rotation_deg,
                            cfg.crop, cfg.max_zoom).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = edm_loss(self.model, x0, gen, cfg.p_mean, cfg.p_std, raw=self.raw, z_spacing_mm=z_spacing)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.model.parameters()):
                e.lerp_(p, 1.0 - cfg.ema_decay)
        value = loss.detach()
        if self.world > 1:
            dist.all_reduce(value)
            value /= self.world
        self.step += 1
        return float(value)

    @torch.no_grad()
    def validation_loss(self, n: int = 32) -> float:
        """EMA model's EDM loss on fixed validation slices and noise (seed fixed, no augmentation)."""
        gen = torch.Generator().manual_seed(12345)
        group = self.config.network.slice_group
        if group > 1:
            groups, spacing = validation_groups(self.data.val_stacks, group, 2 * self.config.crop)
            idx = torch.randint(0, groups.shape[0], (n,), generator=gen)
            return float(edm_loss(self.ema, groups[idx].to(self.device), gen, self.config.p_mean,
                                  self.config.p_std, z_spacing_mm=spacing[idx]))
        idx = torch.randint(0, self.data.val.shape[0], (n,), generator=gen)
        x0 = self.data.val[idx][:, None].to(self.device)
        return float(edm_loss(self.ema, x0, gen, self.config.p_mean, self.config.p_std))

    # -- checkpoints -----------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        """Atomic: write ``checkpoint.pt.tmp`` then rename (rank 0 only)."""
        if self.rank != 0:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                 "opt": self.opt.state_dict(), "step": torch.tensor(self.step),
                 "losses": torch.tensor(self.losses, dtype=torch.float64).reshape(-1, 2),
                 "val_losses": torch.tensor(self.val_losses, dtype=torch.float64).reshape(-1, 2)}
        tmp = self.checkpoint_path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)
        (self.run_dir / "train_config.json").write_text(json_text(self.config.to_dict()))

    def init_from_prior(self, name_or_path: str) -> dict:
        """Start from a prior's weights (raw if shipped, else EMA) for both the model and its EMA:
        a run continues on a fresh machine from what was committed. Parameters whose name and
        shape match are copied; the rest (e.g. attention blocks a new recipe removes) keep their
        seeded initial values. Returns what was copied and left."""
        from safetensors.torch import load_file

        from medrecon.checks import require_finite_tensors
        from medrecon.prior.card import training_lineage
        from medrecon.prior.checkpoint import read_card, resolve, weights_path

        directory = resolve(name_or_path)
        card = read_card(directory)
        weights = card["weights"].get("raw") or card["weights"]["ema"]
        raw_path = weights_path(directory, card, "raw" if card["weights"].get("raw") else "ema")
        ema_path = weights_path(directory, card, "ema")
        raw, ema = load_file(str(raw_path)), load_file(str(ema_path))
        require_finite_tensors(raw.items(), str(raw_path))
        require_finite_tensors(ema.items(), str(ema_path))
        own = self.model.state_dict()
        raw, ema = inflate_to_group(raw, own), inflate_to_group(ema, own)
        copied = [k for k in own if k in raw and tuple(raw[k].shape) == tuple(own[k].shape)]
        if not copied:
            from medrecon.errors import DataError
            raise DataError(f"{directory}: no parameter matches the recipe's network; cannot start from it")
        for target, source in ((self.model, raw), (self.ema, ema)):
            state = target.state_dict()
            state.update({k: source[k].to(state[k].dtype) for k in copied if k in source})
            target.load_state_dict(state)
        total_steps, total_samples = training_lineage(card)
        return {"prior": card.get("name"), "directory": str(directory), "weights": weights,
                "steps_before": card.get("training", {}).get("steps"),
                "total_steps_before": total_steps, "total_samples_before": total_samples,
                "copied": len(copied), "fresh": sorted(set(own) - set(copied)),
                "dropped": sorted(set(raw) - set(copied))}

    def load_checkpoint(self) -> bool:
        """Resume from ``checkpoint.pt`` if present (weights_only: no code runs)."""
        if not self.checkpoint_path.exists():
            return False
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        self.losses = [(int(s), float(v)) for s, v in state["losses"].tolist()]
        self.val_losses = [(int(s), float(v)) for s, v in state["val_losses"].tolist()]
        return True

    # -- the loop --------------------------------------------------------------------------
    def fit(self, steps: Optional[int] = None, progress: bool = True,
            on_checkpoint: Optional[Callable[["Trainer"], None]] = None) -> None:
        """Train until ``steps`` (default: config.steps) with periodic checkpoints."""
        cfg, total = self.config, steps or self.config.steps
        self.model.train()
        bar = tqdm(total=total, initial=self.step, desc="train", disable=not progress or self.rank != 0)
        start = time.perf_counter()
        while self.step < total:
            loss = self.train_step()
            self.losses.append((self.step, loss))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if self.step % cfg.val_every == 0 or self.step == total:
                self.val_losses.append((self.step, self.validation_loss()))
            if self.step % cfg.checkpoint_every == 0 or self.step == total:
                self.save_checkpoint()
                if on_checkpoint is not None and self.rank == 0:
                    on_checkpoint(self)
        bar.close()
        log.info("trained %d steps in %.0f s", total, time.perf_counter() - start)
