"""Small building blocks shared by the published-network re-implementations.

FIR resampling follows the description in shared/fixtures/published_checkpoints/README.md
(StyleGAN2-style ``upfirdn``): a separable kernel ``K = outer(k, k) / sum(outer(k, k))``.
All functions take ``[B, C, H, W]`` tensors and work on any device and float dtype.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def fir_kernel_2d(k: Sequence[float], device=None, dtype=None) -> torch.Tensor:
    """Normalised 2D FIR kernel ``outer(k, k) / sum`` of shape ``[n, n]``."""
    k1 = torch.as_tensor(list(k), dtype=torch.float32, device=device)
    k2 = torch.outer(k1, k1)
    k2 = k2 / k2.sum()
    return k2 if dtype is None else k2.to(dtype)


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Filter every channel of ``x`` with the same 2D ``kernel`` (valid convolution, no padding)."""
    c = x.shape[1]
    w = kernel.to(dtype=x.dtype, device=x.device)
    w = w.flip((0, 1))[None, None].expand(c, 1, *kernel.shape)  # convolution, as upfirdn does
    return F.conv2d(x, w, stride=stride, groups=c)


def fir_upsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """x2 FIR upsampling ``[B, C, H, W] -> [B, C, 2H, 2W]``.

    Defined as: insert zeros (samples on even positions), zero-pad ``(n - 2 + 1) // 2 + 1`` before
    and ``(n - 2) // 2`` after (2 and 1 for a 4-tap kernel), filter with ``4 K``. Computed as the
    equivalent stride-2 transposed convolution, which never builds the zero-filled 2H x 2W input.
    """
    c, n = x.shape[1], kernel.shape[0]
    before, after = (n - 1) // 2 + 1, (n - 2) // 2
    crop_lo, crop_hi = n - 1 - before, n - 2 - after
    w = (kernel * 4).to(dtype=x.dtype, device=x.device)[None, None].expand(c, 1, n, n)
    y = F.conv_transpose2d(x, w, stride=2, groups=c)         # [B, C, 2H + n - 2, ...]
    return y[:, :, crop_lo: y.shape[2] - crop_hi, crop_lo: y.shape[3] - crop_hi]


def fir_downsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """x2 FIR downsampling ``[B, C, H, W] -> [B, C, H/2, W/2]``: zero-pad ``(n-2+1)//2`` before and
    ``(n-2)//2`` after, filter with ``K``, keep every second sample from 0 (a stride-2 filter)."""
    p = kernel.shape[0] - 2
    x = F.pad(x, ((p + 1) // 2, p // 2, (p + 1) // 2, p // 2))
    return fir_filter(x, kernel, stride=2)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype (safe under autocast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().forward(x.float()).type(x.dtype)

