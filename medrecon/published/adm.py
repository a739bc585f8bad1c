"""ADM UNet (guided-diffusion) as used by DDS, written from its description.

Weight-compatible with the published ``AAPM256_1M.pt``: parameter names ``time_embed.*``,
``input_blocks.{i}.{j}.*``, ``middle_block.{j}.*``, ``output_blocks.{i}.{j}.*``, ``out.*``.
Options covered: scale-shift norm, resblock up/down, legacy multi-head attention order,
learned-sigma output (``out_channels = 2 * in_channels``).

Call: ``net(x, t)`` with ``x`` ``[B, C, H, W]`` (no input scaling) and ``t`` ``[B]`` float
timesteps of the 1000-step schedule (fractional values allowed). Returns ``[B, out_channels, H, W]``:
the first ``in_channels`` channels are epsilon, the rest the learned-variance output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medrecon.published.config import ADMConfig
from medrecon.published.layers import GroupNorm32


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=1e-5)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[B] -> [B, dim]``, ``[cos(t f), sin(t f)]`` with ``f_j = exp(-ln(P) j / half)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """Residual block with scale-shift timestep conditioning and optional nearest-up / avg-pool-down."""

    def __init__(self, cin: int, cout: int, emb_dim: int, up: bool = False, down: bool = False):
        super().__init__()
        self.up, self.down = up, down
        self.in_layers = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout))
        self.out_layers = nn.Sequential(_norm(cout), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[1](self.in_layers[0](x))
        h = self.in_layers[2](self._resample(h))
        x = self._resample(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        scale, shift = torch.chunk(e, 2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        for layer in self.out_layers[1:]:
            h = layer(h)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention, legacy head split (per head: q, k, v contiguous), residual."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))                       # [B, 3C, T]
        t = qkv.shape[-1]
        d = c // self.heads
        q, k, v = qkv.reshape(b * self.heads, 3 * d, t).split(d, dim=1)
        scale = 1 / math.sqrt(math.sqrt(d))
        w = torch.bmm((q * scale).transpose(1, 2), k * scale)   # [B*heads, T(query), T(key)]
        w = torch.softmax(w.float(), dim=-1).type(w.dtype)
        a = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, t)
        return (x + self.proj_out(a)).reshape(b, c, *spatial)


class EmbedSequential(nn.ModuleList):
    """A numbered block: layers applied in order; residual blocks also receive the embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttentionBlock)) else layer(x)
        return x


class ADMUNet(nn.Module):
    """ADM UNet ``(x [B,C,H,W], t [B]) -> [B, out_channels, H, W]`` built from a config."""

    def __init__(self, config: ADMConfig | dict):
        super().__init__()
        cfg = config if isinstance(config, ADMConfig) else ADMConfig.from_dict(config)
        self.config = cfg
        mc = cfg.model_channels
        emb_dim = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        ch = int(cfg.channel_mult[0] * mc)
        first = ch
        blocks = [EmbedSequential([nn.Conv2d(cfg.in_channels, ch, 3, padding=1)])]
        skips, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                out = int(mult * mc)
                layers: list[nn.Module] = [ResBlock(ch, out, emb_dim)]
                ch = out
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(ch, cfg.heads(ch)))
                blocks.append(EmbedSequential(layers))
                skips.append(ch)
            if level != len(cfg.channel_mult) - 1:
                blocks.append(EmbedSequential([ResBlock(ch, ch, emb_dim, down=True)]))
                skips.append(ch)
                ds *= 2
        self.input_blocks = nn.ModuleList(blocks)
        self.middle_block = EmbedSequential([ResBlock(ch, ch, emb_dim),
                                             AttentionBlock(ch, cfg.heads(ch)),
                                             ResBlock(ch, ch, emb_dim)])
        blocks = []
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                out = int(mult * mc)
                layers = [ResBlock(ch + skips.pop(), out, emb_dim)]
                ch = out
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(ch, cfg.heads(ch, upsample=True)))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, ch, emb_dim, up=True))
                    ds //= 2
                blocks.append(EmbedSequential(layers))
        assert not skips
        self.output_blocks = nn.ModuleList(blocks)
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(first, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, C, H, W]``, ``t`` ``[B]`` (float timesteps) -> ``[B, out_channels, H, W]``."""
        emb = timestep_embedding(t.reshape(-1), self.config.model_channels)
        emb = self.time_embed(emb.to(self.time_embed[0].weight.dtype))
        hs = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
