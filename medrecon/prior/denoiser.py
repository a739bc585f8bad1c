"""The one interface every diffusion prior implements: a sigma-conditioned denoiser.

``denoise(x, sigma)`` returns the MMSE estimate of a clean slice ``x0`` from
``x = x0 + sigma * n`` (variance-exploding scaling, ``n ~ N(0, I)``). Images are ``[B, 1, H, W]``
in the prior's own intensity units (recorded in its model card, usually a [0, 1] window);
``sigma`` is a ``[B]`` tensor in the same units. From this one function follow the VE score
used by DiffusionMBIR and the VP epsilon used by DDIM/DDS (ALGORITHMS.md section 6):

    score(x, sigma) = (D(x, sigma) - x) / sigma^2
    VP: x_vp = sqrt(abar) x_ve,  sigma = sqrt((1 - abar) / abar),  eps = (x_ve - D(x_ve, sigma)) / sigma
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class Denoiser(nn.Module, ABC):
    """A 2D prior as a denoiser. Subclasses implement :meth:`denoise` and set the attributes."""

    image_size: int = 0          # H = W the prior was trained at (pixels)
    fixed_size: bool = True      # True: applies to image_size x image_size slices only
    size_multiple: int = 1       # any-size priors: H and W are padded to a multiple of this
    bytes_per_pixel: int = 0     # peak inference memory per pixel of one image (0: not known)
    sigma_min: float = 0.002     # smallest noise level it is reliable at (prior units)
    sigma_max: float = 80.0      # largest noise level it was trained on (prior units)

    @abstractmethod
    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """MMSE estimate ``x0_hat`` ``[B, 1, H, W]`` of ``x = x0 + sigma n``; ``sigma`` is ``[B]``."""

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.denoise(x, sigma)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """VE score ``grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2``."""
        s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        return (self.denoise(x, sigma) - x) / s**2

    def eps_vp(self, x_vp: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """VP epsilon prediction for ``x_vp = sqrt(abar) x0 + sqrt(1 - abar) eps``; ``alpha_bar`` is ``[B]``."""
        a = alpha_bar.reshape(-1, 1, 1, 1).to(x_vp.dtype)
        sigma = torch.sqrt((1 - a) / a)
        x_ve = x_vp / torch.sqrt(a)
        return (x_ve - self.denoise(x_ve, sigma.reshape(-1))) / sigma
