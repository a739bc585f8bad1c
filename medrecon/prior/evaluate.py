"""Measurable prior quality: one-step denoising PSNR against a best-weight TV denoiser, and
unconditional samples.

Denoising: held-out slices ``x0`` in prior units, ``x = x0 + sigma n`` (seeded), PSNR of
``D(x, sigma)`` with data range 1, averaged over slices. The TV reference is scikit-image's
Chambolle TV denoiser with its weight chosen per sigma from a grid (the best mean PSNR on the same
slices, i.e. an oracle weight, which favours TV).

Samples: the EDM (Karras et al. 2022) deterministic Heun sampler with rho = 7 from the prior's
sigma_max to its sigma_min.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from skimage.restoration import denoise_tv_chambolle

from medrecon.metrics import psnr
from medrecon.prior.denoiser import Denoiser

SIGMAS = (0.05, 0.1, 0.2, 0.4)
TV_WEIGHT_FACTORS = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@torch.no_grad()
def denoise_in_chunks(denoiser: Denoiser, x: torch.Tensor, sigma: float, chunk: int = 16) -> torch.Tensor:
    """``D(x, sigma)`` for ``[N, H, W]`` slices, ``chunk`` at a time."""
    out = []
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk, None]
        out.append(denoiser.denoise(part, torch.full((part.shape[0],), sigma, dtype=part.dtype, device=part.device))[:, 0])
    return torch.cat(out)


def _mean_psnr(images: np.ndarray, refs: np.ndarray) -> float:
    return float(np.mean([psnr(a, r, 1.0) for a, r in zip(images, refs)]))


def best_tv_denoise(noisy: np.ndarray, ref: np.ndarray, sigma: float) -> tuple[float, float]:
    """``(mean PSNR, weight)`` of scikit-image's Chambolle TV on ``[N, H, W]`` slices at the best
    weight of ``TV_WEIGHT_FACTORS * sigma`` (an oracle choice on the same slices)."""
    best, best_w = -math.inf, None
    for factor in TV_WEIGHT_FACTORS:
        w = factor * sigma
        value = _mean_psnr(np.stack([denoise_tv_chambolle(s, weight=w) for s in noisy]), ref)
        if value > best:
            best, best_w = value, w
    return best, best_w


def denoising_table(denoiser: Denoiser, slices: torch.Tensor, sigmas: Sequence[float] = SIGMAS,
                    seed: int = 0, device: torch.device | str = "cpu") -> list[dict]:
    """Per sigma: the noisy, prior and best-TV PSNR (dB) and the TV weight, on ``[N, H, W]`` slices in [0, 1]."""
    rows = []
    clean = slices.float()
    ref = clean.numpy()
    for k, sigma in enumerate(sigmas):
        gen = torch.Generator().manual_seed(seed * 1000 + k)
        noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
        prior = denoise_in_chunks(denoiser, noisy.to(device), sigma).cpu().numpy()
        best_tv, best_w = best_tv_denoise(noisy.numpy(), ref, sigma)
        rows.append({"sigma": sigma, "noisy_psnr": _mean_psnr(noisy.numpy(), ref),
                     "prior_psnr": _mean_psnr(prior, ref), "tv_psnr": best_tv, "tv_weight": best_w,
                     "gain_over_tv_db": _mean_psnr(prior, ref) - best_tv})
    return rows


@torch.no_grad()
def edm_samples(denoiser: Denoiser, n: int, steps: int = 18, seed: int = 0, rho: float = 7.0,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` unconditional samples ``[n, H, W]`` (EDM Heun sampler, 2 steps - 1 evaluations)."""
    size = denoiser.image_size
    smin, smax = float(denoiser.sigma_min), float(denoiser.sigma_max)
    i = torch.arange(steps, dtype=torch.float64)
    sig = (smax ** (1 / rho) + i / (steps - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    sig = torch.cat([sig, torch.zeros(1, dtype=torch.float64)]).tolist()
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, 1, size, size, generator=gen) * sig[0]).to(device)

    def d(v: torch.Tensor, s: float) -> torch.Tensor:
        return (v - denoiser.denoise(v, torch.full((n,), s, device=device))) / s

    for s, s_next in zip(sig[:-1], sig[1:]):
        slope = d(x, s)
        x_next = x + (s_next - s) * slope
        if s_next > 0:
            x_next = x + (s_next - s) * 0.5 * (slope + d(x_next, s_next))
        x = x_next
    return x[:, 0].cpu()


def samples_figure(samples: torch.Tensor, real: torch.Tensor, title: str = "") -> bytes:
    """PNG bytes: a row of unconditional samples above a row of real held-out slices (window
    [0, 1]); the caller writes them."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = samples.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.3), squeeze=False)
    for row, (images, label) in enumerate(((samples, "sample"), (real, "held-out slice"))):
        for k in range(n):
            axes[row, k].imshow(images[k].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, k].set_title(label, fontsize=8)
            axes[row, k].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=80)
    plt.close(fig)
    return png.getvalue()
