"""NCSN++ as used by DiffusionMBIR (score_sde, VE-SDE, continuous), written from its description.

Weight-compatible with the published checkpoints: parameter names are ``all_modules.{i}.*`` in
the published registration order (plus the unused ``sigmas`` buffer), so a published state dict
(with the DataParallel ``module.`` prefix removed) loads with ``strict=True``.

Call: ``net(x, sigma)`` with ``x`` ``[B, C, H, W]`` in [0, 1] data units (not centred) plus noise and
``sigma`` ``[B]`` the noise standard deviation. Returns the score estimate ``[B, C, H, W]``
(the last convolution divided by ``sigma``).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from medrecon.published.config import NCSNppConfig
from medrecon.published.layers import fir_downsample, fir_filter, fir_kernel_2d, fir_upsample

_SQRT2 = math.sqrt(2.0)


def ve_sigmas(cfg: NCSNppConfig) -> torch.Tensor:
    """The (unused) ``sigmas`` buffer: ``num_scales`` geometric levels sigma_max -> sigma_min, float64."""
    levels = torch.exp(torch.linspace(math.log(cfg.sigma_max), math.log(cfg.sigma_min),
                                      cfg.num_scales, dtype=torch.float64, device="cpu"))
    return levels.to(torch.empty(0).device)      # honours a ``with torch.device(...)`` context


def _gn(channels: int) -> nn.GroupNorm:
    """NCSN++ GroupNorm: ``min(channels // 4, 32)`` groups, eps 1e-6."""
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=1e-6)


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class FourierProjection(nn.Module):
    """Gaussian Fourier features of ``log sigma``: ``[sin(2 pi log(s) W), cos(...)]`` -> ``[B, 2n]``."""

    def __init__(self, size: int, scale: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(size) * scale, requires_grad=False)

    def forward(self, log_sigma: torch.Tensor) -> torch.Tensor:
        """``[B]`` float log-sigma -> ``[B, 2 n]`` float32 features (phases can be large: keep fp32)."""
        e = log_sigma.float()[:, None] * self.W.float()[None, :] * 2 * math.pi
        return torch.cat([torch.sin(e), torch.cos(e)], dim=-1)


class NIN(nn.Module):
    """Per-pixel affine map with weight stored ``[in, out]`` (transpose of a 1x1 conv)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(cin, cout))
        self.b = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bchw,cd->bdhw", x, self.W.to(x.dtype))
        return y + self.b.to(x.dtype)[None, :, None, None]


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, residual with ``/ sqrt(2)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.GroupNorm_0 = _gn(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.GroupNorm_0(x)
        q = self.NIN_0(hn).reshape(b, c, h * w)
        k = self.NIN_1(hn).reshape(b, c, h * w)
        v = self.NIN_2(hn).reshape(b, c, h * w)
        logits = torch.bmm(q.transpose(1, 2), k) * (c ** -0.5)          # [B, HW(query), HW(key)]
        weights = torch.softmax(logits, dim=-1)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, h, w)  # [B, C, HW(query)]
        return (x + self.NIN_3(out)) / _SQRT2


class ResBlockBigGAN(nn.Module):
    """BigGAN++ residual block (optional FIR up/down), time-conditioned, ``(skip + h) / sqrt(2)``."""

    def __init__(self, cin: int, cout: int, temb_dim: int, fir_kernel: tuple[int, ...],
                 up: bool = False, down: bool = False):
        super().__init__()
        self.up, self.down = up, down
        self.GroupNorm_0 = _gn(cin)
        self.Conv_0 = _conv3(cin, cout)
        self.Dense_0 = nn.Linear(temb_dim, cout)
        self.GroupNorm_1 = _gn(cout)
        self.Conv_1 = _conv3(cout, cout)
        if cin != cout or up or down:
            self.Conv_2 = nn.Conv2d(cin, cout, 1)
        else:
            self.Conv_2 = None
        self.fir_taps = tuple(fir_kernel)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.GroupNorm_0(x))
        if self.up or self.down:
            k = fir_kernel_2d(self.fir_taps, device=x.device)
            resample = fir_upsample if self.up else fir_downsample
            h, x = resample(h, k), resample(x, k)
        h = self.Conv_0(h)
        h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(F.silu(self.GroupNorm_1(h)))
        if self.Conv_2 is not None:
            x = self.Conv_2(x)
        return (x + h) / _SQRT2


class _Conv2dWeights(nn.Module):
    """Holder of a ``[out, in, 3, 3]`` weight and ``[out]`` bias, used by :class:`PyramidDown`."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))


class PyramidDown(nn.Module):
    """Input-pyramid downsampler: FIR blur with zero padding 2, stride-2 3x3 conv, plus bias."""

    def __init__(self, cin: int, cout: int, fir_kernel: tuple[int, ...]):
        super().__init__()
        self.Conv2d_0 = _Conv2dWeights(cin, cout)
        self.fir_taps = tuple(fir_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = fir_kernel_2d(self.fir_taps, device=x.device)
        p = (k.shape[0] - 2) + 2                          # FIR taps - factor + conv taps - 1
        x = fir_filter(F.pad(x, ((p + 1) // 2, p // 2, (p + 1) // 2, p // 2)), k)
        x = F.conv2d(x, self.Conv2d_0.weight.to(x.dtype), stride=2)
        return x + self.Conv2d_0.bias.to(x.dtype)[None, :, None, None]


class NCSNpp(nn.Module):
    """NCSN++ score network ``(x [B,C,H,W], sigma [B]) -> score [B,C,H,W]`` built from a config."""

    def __init__(self, config: NCSNppConfig | dict):
        super().__init__()
        cfg = config if isinstance(config, NCSNppConfig) else NCSNppConfig.from_dict(config)
        self.config = cfg
        nf, k = cfg.nf, cfg.fir_kernel
        self.register_buffer("sigmas", ve_sigmas(cfg))
        temb_dim = 4 * nf
        mods: list[nn.Module] = [FourierProjection(nf, cfg.fourier_scale),
                                 nn.Linear(2 * nf, temb_dim), nn.Linear(temb_dim, temb_dim),
                                 _conv3(cfg.num_channels, nf)]
        levels = len(cfg.ch_mult)
        res = [cfg.image_size // 2 ** i for i in range(levels)]
        skips, width, pyramid = [nf], nf, cfg.num_channels
        for i in range(levels):
            out = nf * cfg.ch_mult[i]
            for _ in range(cfg.num_res_blocks):
                mods.append(ResBlockBigGAN(width, out, temb_dim, k))
                width = out
                if res[i] in cfg.attn_resolutions:
                    mods.append(AttnBlock(width))
                skips.append(width)
            if i != levels - 1:
                mods.append(ResBlockBigGAN(width, width, temb_dim, k, down=True))
                mods.append(PyramidDown(pyramid, width, k))
                pyramid = width
                skips.append(width)
        mods += [ResBlockBigGAN(width, width, temb_dim, k), AttnBlock(width),
                 ResBlockBigGAN(width, width, temb_dim, k)]
        for i in reversed(range(levels)):
            out = nf * cfg.ch_mult[i]
            for _ in range(cfg.num_res_blocks + 1):
                mods.append(ResBlockBigGAN(width + skips.pop(), out, temb_dim, k))
                width = out
            if res[i] in cfg.attn_resolutions:
                mods.append(AttnBlock(width))
            if i != 0:
                mods.append(ResBlockBigGAN(width, width, temb_dim, k, up=True))
        assert not skips
        mods += [_gn(width), _conv3(width, cfg.num_channels)]
        self.all_modules = nn.ModuleList(mods)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Score estimate; ``x`` ``[B, C, H, W]``, ``sigma`` ``[B]`` (noise std, data units)."""
        cfg = self.config
        if x.shape[-2:] != (cfg.image_size, cfg.image_size):
            # attention placement follows the tensor width, so other sizes change the graph
            raise ValueError(f"NCSN++ built for {cfg.image_size}x{cfg.image_size} slices, got "
                             f"{tuple(x.shape[-2:])}")
        it: Iterator[nn.Module] = iter(self.all_modules)
        sigma = sigma.reshape(-1)
        temb = next(it)(torch.log(sigma.float()))            # [B, 2 nf], float32
        dense0 = next(it)
        temb = dense0(temb.to(dense0.weight.dtype))
        temb = next(it)(F.silu(temb))
        if not cfg.centered:
            x = 2 * x - 1.0
        pyramid = x
        hs = [next(it)(x)]
        levels = len(cfg.ch_mult)
        for i in range(levels):
            for _ in range(cfg.num_res_blocks):
                h = next(it)(hs[-1], temb)
                if h.shape[-1] in cfg.attn_resolutions:
                    h = next(it)(h)
                hs.append(h)
            if i != levels - 1:
                h = next(it)(hs[-1], temb)
                pyramid = (next(it)(pyramid) + h) / _SQRT2
                hs.append(pyramid)
        h = next(it)(hs[-1], temb)
        h = next(it)(h)
        h = next(it)(h, temb)
        for i in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(it)(torch.cat([h, hs.pop()], dim=1), temb)
            if h.shape[-1] in cfg.attn_resolutions:
                h = next(it)(h)
            if i != 0:
                h = next(it)(h, temb)
        h = F.silu(next(it)(h))
        h = next(it)(h)
        if cfg.scale_by_sigma:
            h = h / sigma.to(h.dtype).reshape(-1, *([1] * (h.dim() - 1)))
        return h
