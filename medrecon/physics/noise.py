"""Measurement noise: Poisson photon counts for CT, circular complex Gaussian noise for MRI.

Both draw their random numbers on the CPU from a ``torch.Generator`` seeded with ``seed`` and
then move them to the input's device, so a seed gives the same noise on any device.
"""

from __future__ import annotations

import math
import operator
from typing import Optional

import torch

from medrecon.errors import UserError


def _generator(seed: int) -> torch.Generator:
    try:
        value = operator.index(seed)
    except TypeError:
        raise UserError(f"noise seed must be an integer, got {seed!r}") from None
    return torch.Generator(device="cpu").manual_seed(value)


def transmission_counts(line_integrals: torch.Tensor, i0: float, seed: int,
                        mu_scale: float = 1.0) -> torch.Tensor:
    """Detected photon counts ``~ Poisson(i0 * exp(-mu_scale * p))`` (float64, CPU, same shape).

    Args:
        line_integrals: ``p``, any shape; ``mu_scale * p`` is the dimensionless attenuation
            exponent (e.g. ``p`` in mm with attenuation in 1/mm and ``mu_scale = 1``).
        i0: incident photons per detector bin (unattenuated ray), > 0.
        seed: integer seed of the CPU generator.
        mu_scale: converts ``p`` to attenuation exponents (1 / units of ``p``), > 0.
    """
    if not (isinstance(i0, (int, float)) and math.isfinite(i0) and i0 > 0):
        raise UserError(f"photon count i0 must be a positive number, got {i0!r}")
    if not (math.isfinite(mu_scale) and mu_scale > 0):
        raise UserError(f"mu_scale must be a positive number, got {mu_scale!r}")
    p = line_integrals.detach().to(device="cpu", dtype=torch.float64)
    rate = float(i0) * torch.exp(-float(mu_scale) * p)
    return torch.poisson(rate, generator=_generator(seed))


def poisson_transmission(line_integrals: torch.Tensor, i0: Optional[float], seed: int,
                         mu_scale: float = 1.0) -> torch.Tensor:
    """Noisy line integrals from a Poisson transmission measurement.

    ``counts ~ Poisson(i0 exp(-mu_scale p))`` and the result is
    ``-log(max(counts, 1) / i0) / mu_scale``: a ray that detects no photon is clamped to one
    photon, so the largest possible value is ``log(i0) / mu_scale`` (finite, no ``inf``).
    Same shape, dtype and device as ``line_integrals``. ``i0=None`` means noiseless: a copy of
    ``line_integrals`` is returned.
    """
    if i0 is None:
        return line_integrals.clone()
    counts = transmission_counts(line_integrals, i0, seed, mu_scale)
    noisy = -torch.log(counts.clamp_min(1.0) / float(i0)) / float(mu_scale)
    return noisy.to(device=line_integrals.device, dtype=line_integrals.dtype)


def complex_gaussian(kspace: torch.Tensor, sigma: Optional[float], seed: int) -> torch.Tensor:
    """``kspace + n`` with circular complex Gaussian ``n``: ``E|n|^2 = sigma^2``.

    The real and imaginary parts of ``n`` are independent ``N(0, sigma^2 / 2)``. Every entry
    of ``kspace`` gets noise (mask the result if unsampled entries must stay zero).
    ``sigma`` in the units of ``kspace``; ``None`` or 0 returns a copy (noiseless).
    """
    if not kspace.is_complex():
        raise UserError(f"complex_gaussian expects complex k-space, got {kspace.dtype}")
    if sigma is None or sigma == 0:
        return kspace.clone()
    if not (math.isfinite(sigma) and sigma > 0):
        raise UserError(f"noise sigma must be >= 0, got {sigma!r}")
    real = torch.float64 if kspace.dtype == torch.complex128 else torch.float32
    parts = torch.randn((*kspace.shape, 2), dtype=real, generator=_generator(seed))
    noise = torch.view_as_complex(parts) * (float(sigma) / math.sqrt(2.0))
    return kspace + noise.to(kspace.device)
