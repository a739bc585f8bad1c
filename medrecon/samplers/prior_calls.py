"""The 2D prior applied to a volume: the prior batch, network calls in chunks that fit memory,
the network's precision.

- Volumes are ``[Z, Y, X]`` in the operator's dtype: real for CT, complex64 for MRI.
- The 2D prior sees a *prior batch* ``[B, Y, X]`` of real images: the slices themselves for real
  volumes, and for complex volumes the real and imaginary part of every slice as two separate
  images (``B = 2 Z``, ordered re(0), im(0), re(1), im(1), ...). ``chunk`` counts prior images.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Optional

import torch

from medrecon.errors import UserError
from medrecon.prior.denoiser import Denoiser
from medrecon.prior.precision import Precision, network_autocast, resolve_precision

log = logging.getLogger(__name__)


def to_prior_batch(x: torch.Tensor) -> torch.Tensor:
    """``[Z, Y, X]`` volume -> real prior batch ``[B, Y, X]`` (``B = 2 Z`` for complex)."""
    if not x.is_complex():
        return x
    z, ny, nx = x.shape
    return torch.view_as_real(x).permute(0, 3, 1, 2).reshape(2 * z, ny, nx)


def from_prior_batch(b: torch.Tensor, complex_dtype: Optional[torch.dtype]) -> torch.Tensor:
    """Inverse of :func:`to_prior_batch`; ``complex_dtype`` None for real volumes."""
    if complex_dtype is None:
        return b
    z2, ny, nx = b.shape
    pairs = b.reshape(z2 // 2, 2, ny, nx).permute(0, 2, 3, 1).contiguous()
    return torch.view_as_complex(pairs).to(complex_dtype)


def _net_dtype(denoiser: Denoiser, fallback: torch.dtype) -> torch.dtype:
    for t in list(denoiser.parameters()) + list(denoiser.buffers()):
        if t.is_floating_point():
            return t.dtype
    return fallback


def available_memory(device: torch.device) -> Optional[int]:
    """Bytes free for new tensors on ``device``: CUDA's free memory, or the host's available
    memory (``MemAvailable``) on the CPU; None when it cannot be read."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "cpu":
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
    except (OSError, RuntimeError, ValueError):
        return None
    return None


_CHUNK_NOTED: set = set()


def memory_chunk(denoiser: Denoiser, image: tuple[int, int], chunk: int, device: torch.device,
                 fraction: float = 0.5, available: Optional[int] = None) -> int:
    """The number of images per network call: ``chunk``, lowered so that the call's estimated
    peak memory (``denoiser.bytes_per_pixel`` x pixels x images) stays within ``fraction`` of
    the device's free memory (estimated before allocating; never below 1). Images of one call
    are independent, so the result does not depend on it."""
    per_image = int(getattr(denoiser, "bytes_per_pixel", 0) or 0) * int(image[0]) * int(image[1])
    free = available if available is not None else available_memory(torch.device(device))
    if per_image <= 0 or free is None:
        return chunk
    fits = max(1, int(fraction * free) // per_image)
    if fits < chunk and (image, chunk, fits) not in _CHUNK_NOTED:
        _CHUNK_NOTED.add((image, chunk, fits))
        log.info("network calls take %d slices of %dx%d at a time (not %d): about %.0f MB each, "
                 "%.0f MB free", fits, image[0], image[1], chunk, per_image / 2**20, free / 2**20)
    return min(chunk, fits)


@torch.no_grad()
def prior_chunked(denoiser: Denoiser, x: torch.Tensor, sigma: float, chunk: int,
                  kind: str = "denoise", precision: Optional[Precision] = None) -> torch.Tensor:
    """``D(x, sigma)`` (``kind="denoise"``) or the VE score (``kind="score"``) of a prior batch
    ``[B, Y, X]``, ``chunk`` images per network call, under ``precision``'s autocast (None:
    float32); output in ``x``'s dtype and device."""
    if chunk < 1:
        raise UserError(f"chunk must be a positive number of slices, got {chunk}")
    fn = denoiser.denoise if kind == "denoise" else denoiser.score
    dtype = _net_dtype(denoiser, x.dtype)
    chunk = memory_chunk(denoiser, tuple(x.shape[-2:]), chunk, x.device)
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk].unsqueeze(1).to(dtype)
        s = torch.full((part.shape[0],), float(sigma), dtype=dtype, device=x.device)
        with network_autocast(precision, x.device) if precision is not None else nullcontext():
            value = fn(part, s)
        out[start:start + chunk] = value[:, 0].to(x.dtype)
    return out


def network_precision(setting: str, denoiser: Denoiser, device: torch.device) -> Precision:
    """The precision ``setting`` resolves to on ``device``; a published network's own CUDA
    autocast is switched off when it resolves to float32."""
    precision = resolve_precision(setting, device)
    if getattr(denoiser, "precision", None) in ("auto", "fp32"):
        denoiser.precision = "fp32" if precision.dtype is None else "auto"
    return precision
