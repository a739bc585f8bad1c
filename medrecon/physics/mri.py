"""Slice-wise 2D Cartesian multi-coil MRI: the SENSE operator ``A x = M F (S x)``.

- ``x``: complex64 images ``[Z, Y, X]`` (Z slices, the batch axis).
- ``S``: coil sensitivity maps, complex64 ``[C, Y, X]`` shared by all slices or ``[Z, C, Y, X]``.
- ``F``: orthonormal centred 2D FFT over the last two axes (:func:`fft2c`), so ``F^H F = I``.
- ``M``: binary sampling mask ``[Y, X]`` or ``[Z, Y, X]`` in centred k-space (DC at
  ``(Y // 2, X // 2)``; ``Y`` is the phase-encode axis ``ky``); unsampled entries of ``A x`` are 0.
- ``A x``: complex64 k-space ``[Z, C, Y, X]``.

Single-coil MRI is ``C = 1`` with unit maps (:meth:`SenseOperator.single_coil`). The operator is
pure torch (any device, autograd); it is tested against ``sigpy.mri.linop.Sense``. Masks and coil
maps come from :mod:`medrecon.physics.mri_masks` and :mod:`medrecon.physics.coils`, re-exported here.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from medrecon.physics.coils import birdcage_maps, espirit_maps
from medrecon.physics.mri_masks import (MASK_KINDS, MRIInputError, SamplingMask, center_lines,
                                        gaussian_1d, make_mask, poisson_2d, uniform_1d)
from medrecon.physics.operator import LinearOperator

__all__ = ["SenseOperator", "coil_combine", "fft2c", "ifft2c", "SamplingMask", "MASK_KINDS",
           "MRIInputError", "uniform_1d", "gaussian_1d", "poisson_2d", "make_mask",
           "center_lines", "birdcage_maps", "espirit_maps"]

_AXES = (-2, -1)


def _checkerboard(ny: int, nx: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(-1)^(i + j)`` as a [ny, nx] tensor (cached per shape, dtype and device)."""
    key = (ny, nx, dtype, device)
    board = _BOARDS.get(key)
    if board is None:
        i = torch.arange(ny, device=device).reshape(-1, 1)
        j = torch.arange(nx, device=device).reshape(1, -1)
        board = (1 - 2 * ((i + j) % 2)).to(dtype)
        _BOARDS[key] = board
    return board


_BOARDS: dict = {}


def _centred(x: torch.Tensor, transform) -> torch.Tensor:
    """``fftshift(transform(ifftshift(x)))`` over the last two axes.

    For even sizes the shifts are modulations: with ``c = (-1)^(i + j)``,
    ``fftshift(F(ifftshift(x))) = (-1)^((ny + nx) / 2) c F(c x)``, which avoids two copies
    (the rolls cost four times the FFT itself on the CPU).
    """
    ny, nx = x.shape[-2], x.shape[-1]
    if ny % 2 or nx % 2:
        return torch.fft.fftshift(transform(torch.fft.ifftshift(x, dim=_AXES)), dim=_AXES)
    board = _checkerboard(ny, nx, x.dtype, x.device)
    if ((ny + nx) // 2) % 2:
        board = -board
    return transform(x * _checkerboard(ny, nx, x.dtype, x.device)) * board


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal centred 2D FFT over the last two axes: ifftshift -> fft2(ortho) -> fftshift."""
    return _centred(x, lambda v: torch.fft.fft2(v, norm="ortho"))


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (and its adjoint): ifftshift -> ifft2(ortho) -> fftshift."""
    return _centred(k, lambda v: torch.fft.ifft2(v, norm="ortho"))


def _as_tensor(a: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach()
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))
    raise MRIInputError(f"{what} must be a numpy array or torch tensor, got {type(a).__name__}")


def coil_combine(images: torch.Tensor, maps: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``S^H``: coil images ``[Z, C, Y, X]`` to one image ``[Z, Y, X]``, ``sum_c conj(S_c) I_c``.

    ``maps`` is ``[C, Y, X]`` (shared) or ``[Z, C, Y, X]``; it is moved to the images' device.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_complex():
        raise MRIInputError("coil_combine: images must be a complex torch tensor [Z, C, Y, X], got "
                            f"{getattr(images, 'dtype', type(images).__name__)} "
                            f"{tuple(getattr(images, 'shape', ()))}")
    m = _as_tensor(maps, "coil maps").to(device=images.device, dtype=images.dtype)
    if m.dim() == 3:
        m = m.unsqueeze(0)
    if m.dim() != 4 or m.shape[1:] != images.shape[1:] or m.shape[0] not in (1, images.shape[0]):
        raise MRIInputError(f"coil_combine: maps of shape {tuple(maps.shape)} do not match images "
                            f"{tuple(images.shape)} (expected [C, Y, X] or [Z, C, Y, X])")
    return (m.conj() * images).sum(dim=1)


class SenseOperator(LinearOperator):
    """``A x = M F (S x)``: complex64 images ``[Z, Y, X]`` -> k-space ``[Z, C, Y, X]``.

    Args:
        maps: coil maps, complex ``[C, Y, X]`` (shared; Z free) or ``[Z, C, Y, X]`` (per slice;
            Z fixed). Cast to complex64.
        mask: sampling mask ``[Y, X]`` or ``[Z, Y, X]`` (per slice; fixes Z), bool or 0/1, a
            :class:`SamplingMask`, or None for full sampling.
        device: torch device; defaults to the maps' device (CPU for numpy maps).
    """

    def __init__(self, maps: np.ndarray | torch.Tensor,
                 mask: Optional[np.ndarray | torch.Tensor | SamplingMask] = None,
                 device: Optional[torch.device | str] = None) -> None:
        m = _as_tensor(maps, "coil maps")
        if device is None:
            device = m.device
        if m.dim() not in (3, 4) or min(m.shape) < 1:
            raise MRIInputError(f"coil maps must be [C, Y, X] or [Z, C, Y, X], got shape "
                                f"{tuple(m.shape)}")
        if not (m.is_complex() or m.is_floating_point()):
            raise MRIInputError(f"coil maps must be complex (or real) numbers, got {m.dtype}")
        if not bool(torch.isfinite(m).all()):
            raise MRIInputError("coil maps contain NaN or infinite values")
        maps_per_slice = m.dim() == 4
        m = m.to(device=device, dtype=torch.complex64)
        if not maps_per_slice:
            m = m.unsqueeze(0)
        n_coils, ny, nx = (int(s) for s in m.shape[1:])

        k = self._mask_tensor(mask, (ny, nx)).to(device)
        mask_per_slice = k.dim() == 3
        if maps_per_slice and mask_per_slice and k.shape[0] != m.shape[0]:
            raise MRIInputError(f"per-slice mask has {k.shape[0]} slices but per-slice coil maps "
                                f"have {m.shape[0]}")
        n_z: Optional[int] = None
        if maps_per_slice:
            n_z = int(m.shape[0])
        elif mask_per_slice:
            n_z = int(k.shape[0])
        super().__init__((n_z, ny, nx), (n_z, n_coils, ny, nx), torch.complex64, torch.complex64,
                         device)
        self._maps = m.contiguous()                                   # [1 or Z, C, Y, X]
        self._mask = k.unsqueeze(-3) if mask_per_slice else k[None, None]  # [1 or Z, 1, Y, X]
        self._mask = self._mask.to(torch.float32).contiguous()
        self.maps_per_slice, self.mask_per_slice = maps_per_slice, mask_per_slice

    @staticmethod
    def _mask_tensor(mask: Optional[np.ndarray | torch.Tensor | SamplingMask],
                     image_shape: tuple[int, int]) -> torch.Tensor:
        if mask is None:
            return torch.ones(image_shape, dtype=torch.bool)
        if isinstance(mask, SamplingMask):
            mask = mask.mask
        k = _as_tensor(mask, "sampling mask")
        if k.dim() not in (2, 3) or tuple(k.shape[-2:]) != image_shape or k.shape[0] < 1:
            raise MRIInputError(f"sampling mask has shape {tuple(k.shape)}, expected [Y, X] or "
                                f"[Z, Y, X] with (Y, X) = {image_shape} as the coil maps")
        if k.dtype != torch.bool:
            if k.is_complex() or not bool(((k == 0) | (k == 1)).all()):
                raise MRIInputError("sampling mask must be boolean or contain only 0 and 1")
            k = k != 0
        return k

    @classmethod
    def single_coil(cls, image_shape: tuple[int, int],
                    mask: Optional[np.ndarray | torch.Tensor | SamplingMask] = None,
                    device: torch.device | str = "cpu") -> "SenseOperator":
        """Single-coil Cartesian MRI ``A x = M F x``: one unit coil map (``C = 1``)."""
        ny, nx = (int(s) for s in image_shape)
        return cls(torch.ones((1, ny, nx), dtype=torch.complex64), mask, device=device)

    # -- properties ---------------------------------------------------------------------------
    @property
    def maps(self) -> torch.Tensor:
        """Coil maps, complex64 ``[C, Y, X]`` (shared) or ``[Z, C, Y, X]`` (per slice)."""
        return self._maps if self.maps_per_slice else self._maps[0]

    @property
    def mask(self) -> torch.Tensor:
        """Sampling mask, bool ``[Y, X]`` or ``[Z, Y, X]`` (per slice)."""
        k = self._mask[:, 0] > 0.5
        return k if self.mask_per_slice else k[0]

    @property
    def n_coils(self) -> int:
        return int(self.out_shape[1])  # type: ignore[arg-type]

    @property
    def image_shape(self) -> tuple[int, int]:
        return (int(self.in_shape[1]), int(self.in_shape[2]))  # type: ignore[arg-type]

    @property
    def sampled_fraction(self) -> float:
        """Fraction of k-space acquired (averaged over slices for per-slice masks)."""
        return float(self._mask.mean())

    @property
    def acceleration(self) -> float:
        """Effective acceleration ``1 / sampled_fraction``."""
        frac = self.sampled_fraction
        return float("inf") if frac == 0.0 else 1.0 / frac

    # -- the maps -----------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return fft2c(x.unsqueeze(1) * self._maps) * self._mask

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (ifft2c(y * self._mask) * self._maps.conj()).sum(dim=1)

    def _subset(self, sl: slice) -> "SenseOperator":
        if self.in_shape[0] is None:
            return self
        idx = range(int(self.in_shape[0]))[sl]
        if len(idx) == 0:
            raise ValueError(f"{self.name}.subset: {sl!r} selects no slice of {self.in_shape[0]}")
        maps = self._maps[sl] if self.maps_per_slice else self._maps[0]
        mask = self._mask[sl, 0] if self.mask_per_slice else self._mask[0, 0]
        return SenseOperator(maps, mask > 0.5, device=self.device)

    def __repr__(self) -> str:
        return (f"SenseOperator(Z={self.in_shape[0] or 'free'}, C={self.n_coils}, "
                f"image={self.image_shape}, per-slice maps={self.maps_per_slice}, per-slice mask="
                f"{self.mask_per_slice}, acceleration=x{self.acceleration:.2f}, device={self.device})")
