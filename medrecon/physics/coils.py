"""Coil sensitivity maps: birdcage maps for simulation and ESPIRiT calibration from k-space.

Maps are complex64 torch tensors ``[C, Y, X]`` (or ``[Z, C, Y, X]`` per slice). SigPy does the
work; it runs on the CPU (NumPy) and the result is moved to the requested torch device.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from medrecon.physics.mri_masks import MRIInputError


def _support(support: Optional[np.ndarray | torch.Tensor], shape: tuple[int, int]) -> np.ndarray:
    if support is None:
        return np.ones(shape, dtype=bool)
    arr = support.detach().cpu().numpy() if isinstance(support, torch.Tensor) else np.asarray(support)
    if arr.shape != shape:
        raise MRIInputError(f"coil-map support has shape {arr.shape}, expected {shape}")
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise MRIInputError("coil-map support must be boolean or 0/1")
    return arr.astype(bool)


def birdcage_maps(n_coils: int, shape: tuple[int, int], radius: float = 1.5,
                  support: Optional[np.ndarray | torch.Tensor] = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Simulated birdcage sensitivities (``sigpy.mri.birdcage_maps``), complex64 ``[C, Y, X]``.

    ``n_coils`` coils sit evenly on a circle of ``radius`` (in units of the half field of view).
    Normalisation: ``sum_c |S_c|^2 = 1`` at every pixel of ``support`` (bool ``[Y, X]``; the
    whole field of view when None) and ``S = 0`` outside it, so that ``S^H S`` is the indicator
    of the support and SENSE is well conditioned (a fully sampled ``A^H A`` is the identity there).
    """
    if isinstance(n_coils, bool) or not isinstance(n_coils, (int, np.integer)) or n_coils < 1:
        raise MRIInputError(f"n_coils must be a positive integer, got {n_coils!r}")
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise MRIInputError(f"coil-map shape must be two integers (Y, X), got {shape!r}") from None
    if ny < 2 or nx < 2:
        raise MRIInputError(f"coil-map shape must be at least 2x2, got {(ny, nx)}")
    if not float(radius) > 1.0:
        raise MRIInputError(f"birdcage radius must be > 1 (coils outside the field of view), "
                            f"got {radius!r}")
    mask = _support(support, (ny, nx))
    import sigpy.mri  # heavy import: only when maps are made

    maps = sigpy.mri.birdcage_maps((int(n_coils), ny, nx), r=float(radius), dtype=np.complex128)
    rss = np.sqrt((np.abs(maps) ** 2).sum(axis=0))
    maps = np.where(mask, maps / np.maximum(rss, 1e-30), 0.0)
    return torch.from_numpy(maps.astype(np.complex64)).to(device)


def espirit_maps(kspace: np.ndarray | torch.Tensor, calib_width: int = 24, thresh: float = 0.02,
                 crop: float = 0.95, kernel_width: int = 6, max_iter: int = 100,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """ESPIRiT maps (``sigpy.mri.app.EspiritCalib``) from centred k-space ``[C, Y, X]`` or
    ``[Z, C, Y, X]`` (each slice calibrated on its own); complex64 torch, same shape.

    The central ``calib_width`` square must be fully sampled. Maps are unit-norm over coils where
    the ESPIRiT eigenvalue exceeds ``crop`` and zero elsewhere. Their phase is referenced to
    coil 0, so they equal the true maps up to a per-pixel phase: a SENSE image made with them
    matches the true image in magnitude, and in phase up to that reference phase.
    """
    arr = kspace.detach().cpu().numpy() if isinstance(kspace, torch.Tensor) else np.asarray(kspace)
    if arr.ndim not in (3, 4):
        raise MRIInputError(f"k-space for ESPIRiT must be [C, Y, X] or [Z, C, Y, X], got shape "
                            f"{arr.shape}")
    if not np.iscomplexobj(arr):
        raise MRIInputError(f"k-space for ESPIRiT must be complex, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise MRIInputError("k-space for ESPIRiT contains NaN or infinite values")
    ny, nx = arr.shape[-2:]
    if not (isinstance(kernel_width, (int, np.integer)) and kernel_width >= 1):
        raise MRIInputError(f"kernel_width must be a positive integer, got {kernel_width!r}")
    if not (isinstance(calib_width, (int, np.integer)) and kernel_width < calib_width <= min(ny, nx)):
        raise MRIInputError(f"calib_width must be an integer in ({kernel_width}, {min(ny, nx)}] "
                            f"(kernel width, image size), got {calib_width!r}")
    if not 0.0 <= float(thresh) < 1.0 or not 0.0 <= float(crop) <= 1.0:
        raise MRIInputError(f"ESPIRiT needs 0 <= thresh < 1 and 0 <= crop <= 1, got thresh="
                            f"{thresh!r}, crop={crop!r}")
    import sigpy as sp
    import sigpy.mri.app

    def one(ksp: np.ndarray) -> np.ndarray:
        app = sigpy.mri.app.EspiritCalib(
            np.ascontiguousarray(ksp, dtype=np.complex64), calib_width=int(calib_width),
            thresh=float(thresh), kernel_width=int(kernel_width), crop=float(crop),
            max_iter=int(max_iter), device=sp.cpu_device, show_pbar=False)
        return np.asarray(app.run(), dtype=np.complex64)

    maps = one(arr) if arr.ndim == 3 else np.stack([one(k) for k in arr])
    return torch.from_numpy(np.ascontiguousarray(maps)).to(device)
