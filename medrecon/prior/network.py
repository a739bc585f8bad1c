"""medrecon's own 2D prior: MONAI's ``DiffusionModelUNet`` with EDM preconditioning.

Karras et al. (2022) write the denoiser of ``x = x0 + sigma n`` as

    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),  c_in = 1 / sqrt(sigma^2 + sd^2)

with ``F`` the network and ``sd`` the data standard deviation, so that the network's input and
target both have unit variance at every noise level. Prior units are a [0, 1] window; the network
sees them centred (``x - 0.5``), which commutes with adding noise. The noise level enters MONAI's
sinusoidal timestep embedding as ``c_noise`` = log(sigma) mapped linearly from
[log sigma_min, log sigma_max] to [0, 1000], the range of DDPM timesteps that embedding is made for.

A *slice-group* prior (``slice_group = C > 1``) denoises C slices at once, stacked as channels
``[B, C, H, W]`` (C neighbouring axial slices, one noise level per group), so that each slice's
estimate sees its neighbours along z. The distance between the group's slices (mm) enters as a
class label added to the timestep embedding: class ``k`` stands for ``2^(k / 2)`` mm (half-octave
bins, 1 mm to ``2^((z_classes - 1) / 2)`` mm), the nearest class in log spacing is used.
With ``centre_output`` the network sees the C slices but returns only the centre one
(``[B, 1, H, W]``): a 2D denoiser of the centre slice conditioned on its noisy neighbours.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from monai.networks.nets import DiffusionModelUNet

from medrecon.errors import DataError
from medrecon.prior.card import CARD
from medrecon.prior.denoiser import Denoiser

FAMILY = "edm-unet"


@dataclass
class UNetConfig:
    """Architecture and preconditioning of an ``edm-unet`` prior (all sizes from here)."""

    image_size: int = 128
    channels: tuple[int, ...] = (32, 64, 64, 64)
    attention_levels: tuple[bool, ...] = (False, False, False, True)
    mid_attention: bool = True       # MONAI's middle block always has self-attention; False removes it
    num_res_blocks: int = 1
    num_head_channels: int = 64
    norm_num_groups: int = 8
    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    centre: float = 0.5
    slice_group: int = 1             # C: slices per group (channels); 1 = an ordinary 2D prior
    z_classes: int = 0               # group priors: number of half-octave slice-spacing classes
    centre_output: bool = False      # group priors: output only the centre slice ([B, 1, H, W])

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        if len(self.channels) != len(self.attention_levels):
            raise ValueError("channels and attention_levels must have the same length")
        if self.image_size % (2 ** (len(self.channels) - 1)):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^(levels - 1)")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        if isinstance(self.slice_group, bool) or not isinstance(self.slice_group, int) or self.slice_group < 1:
            raise ValueError(f"slice_group must be an integer >= 1, got {self.slice_group!r}")
        if isinstance(self.z_classes, bool) or not isinstance(self.z_classes, int) or self.z_classes < 0:
            raise ValueError(f"z_classes must be an integer >= 0, got {self.z_classes!r}")
        if self.z_classes and self.slice_group == 1:
            raise ValueError("z_classes (a slice-spacing input) needs slice_group > 1")
        if not isinstance(self.centre_output, bool):
            raise ValueError(f"centre_output must be true or false, got {self.centre_output!r}")
        if self.centre_output and (self.slice_group == 1 or self.slice_group % 2 == 0):
            raise ValueError("centre_output needs an odd slice_group > 1 (a centre slice)")

    @property
    def out_channels(self) -> int:
        """Slices the network outputs: the centre one, or all of the group's."""
        return 1 if self.centre_output else self.slice_group

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["attention_levels"] = list(self.channels), list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown edm-unet config keys {sorted(unknown)}")
        return cls(**d)


def z_spacing_class(spacing_mm: float, classes: int) -> int:
    """The class of a slice spacing (mm): nearest half-octave ``2^(k / 2)`` mm, clamped to the
    ``classes`` the network has."""
    if not spacing_mm > 0:
        raise ValueError(f"slice spacing must be > 0 mm, got {spacing_mm!r}")
    return int(min(max(round(2.0 * math.log2(spacing_mm)), 0), classes - 1))


class EDMUNetDenoiser(Denoiser):
    """A sigma-conditioned denoiser ``[B, C, H, W] -> [B, C', H, W]`` in prior units (C = C' = 1
    for a 2D prior; C = ``slice_group`` for a slice-group prior, C' = C or 1 with
    ``centre_output``)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.image_size = config.image_size  # the size it was trained at; it applies to any size
        self.fixed_size = False
        self.size_multiple = 2 ** (len(config.channels) - 1)
        # about 16 float32 feature maps of the first level's width alive at the peak (measured:
        # 1.0 KB per pixel for channels[0] = 16, one 512 x 512 slice, CPU, no grad)
        self.bytes_per_pixel = 64 * config.channels[0]
        self.sigma_min, self.sigma_max = config.sigma_min, config.sigma_max
        self.slice_group = config.slice_group
        self.centre_output = config.centre_output
        self.net = DiffusionModelUNet(
            spatial_dims=2, in_channels=config.slice_group, out_channels=config.out_channels,
            channels=config.channels, attention_levels=config.attention_levels,
            num_res_blocks=config.num_res_blocks, num_head_channels=config.num_head_channels,
            norm_num_groups=config.norm_num_groups, num_class_embeds=config.z_classes or None)
        if config.z_classes:
            # no spacing information at the start: a 2D prior's weights carry over unchanged
            torch.nn.init.zeros_(self.net.class_embedding.weight)
        if not config.mid_attention:
            # a fully convolutional network: what it learns on crops is what it applies to whole slices
            self.net.middle_block.attention = torch.nn.Identity()

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        """log(sigma) mapped from [log sigma_min, log sigma_max] to [0, 1000]."""
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return 1000.0 * (torch.log(sigma) - lo) / (hi - lo)

    def z_labels(self, z_spacing_mm: Optional[torch.Tensor | float], batch: int,
                 device: torch.device) -> Optional[torch.Tensor]:
        """Class labels ``[B]`` of the groups' slice spacings (None for a 2D prior)."""
        if not self.config.z_classes:
            return None
        if z_spacing_mm is None:
            raise ValueError("a slice-group prior needs the slice spacing (z_spacing_mm)")
        values = torch.as_tensor(z_spacing_mm, dtype=torch.float64).reshape(-1).expand(batch)
        return torch.tensor([z_spacing_class(float(v), self.config.z_classes) for v in values],
                            dtype=torch.long, device=device)

    def raw(self, x: torch.Tensor, sigma: torch.Tensor,
            z_spacing_mm: Optional[torch.Tensor | float] = None) -> torch.Tensor:
        """``F(c_in (x - centre), c_noise)``: the network's own output (training target space)."""
        sd = self.config.sigma_data
        s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        c_in = 1.0 / torch.sqrt(s**2 + sd**2)
        labels = self.z_labels(z_spacing_mm, x.shape[0], x.device)
        return self.net((x - self.config.centre) * c_in, self.c_noise(sigma.to(x.dtype).reshape(-1)),
                        class_labels=labels)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor,
                z_spacing_mm: Optional[torch.Tensor | float] = None) -> torch.Tensor:
        """``[B, C, H, W]`` of any H, W: padded (edge values repeated) to a multiple of
        ``size_multiple`` for the network, cropped back after; ``z_spacing_mm`` (group priors):
        the distance between a group's slices, one value or ``[B]``."""
        h, w = x.shape[-2:]
        m = self.size_multiple
        ph, pw = -h % m, -w % m
        if ph or pw:
            padded = torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
            return self.denoise(padded, sigma, z_spacing_mm)[..., ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        sd = self.config.sigma_data
        s = sigma.reshape(-1, 1, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / torch.sqrt(s**2 + sd**2)
        return self.config.centre + c_skip * self.skip_input(x) + c_out * self.raw(x, sigma, z_spacing_mm)

    def output_slices(self, x: torch.Tensor) -> torch.Tensor:
        """The slices of ``[B, C, H, W]`` the output stands for: all of them, or with
        ``centre_output`` the centre one ``[B, 1, H, W]``."""
        if self.config.centre_output:
            c = self.config.slice_group // 2
            return x[:, c:c + 1]
        return x

    def skip_input(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`output_slices` of ``x``, centred (the skip connection's input)."""
        return self.output_slices(x) - self.config.centre


def build(config: dict | UNetConfig) -> EDMUNetDenoiser:
    """An untrained network from a config (dict from a model card, or a UNetConfig)."""
    cfg = config if isinstance(config, UNetConfig) else UNetConfig.from_dict(dict(config))
    return EDMUNetDenoiser(cfg)


def check_state(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse (DataError naming ``source``) weights whose names or shapes differ from ``module``'s."""
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


def from_card(card: dict, state: dict[str, torch.Tensor], *, directory: Path, weights: Path,
              device: torch.device | str = "cpu") -> EDMUNetDenoiser:
    """The ``edm-unet`` denoiser a model card describes, with ``state`` loaded (the builder
    :mod:`medrecon.prior.families` registers for this family; ``device`` is the loader's)."""
    try:
        model = build(card["architecture"]["config"])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{directory / CARD}: bad edm-unet architecture config ({exc})") from None
    check_state(model, state, weights)
    model.load_state_dict(state)
    return model
