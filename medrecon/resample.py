"""Put one volume on another volume's voxel grid, from the two affines.

Used by ``medrecon evaluate`` when the reference is the original study (e.g. 64 x 512 x 512 at
0.84 mm) and the reconstruction is a resampled slab of it (24 x 128 x 128 at 3.37 mm): every
voxel centre of the target grid is mapped through ``inv(A_ref) @ A_target`` into the reference's
index space. When the two grids share their orientation (only scaled and shifted axes), each
axis is resampled on its own: a target voxel larger than the reference's takes the mean of the
reference over the interval it covers (exact block means for integer factors, as ``simulate
--size`` computes them), a smaller one is interpolated linearly. Otherwise the reference is
smoothed by a Gaussian of variance ``(r^2 - 1) / 12`` voxels^2 along axes r times coarser and
interpolated trilinearly, so that a coarser grid sees averages, not aliased samples.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np
import torch

from medrecon.errors import UserError
from medrecon.volume import Volume

INSIDE_TOLERANCE = 0.51
"""How far (in reference voxels) a target voxel centre may lie beyond the reference's outermost
voxel centres (half a voxel: the outer voxels' extent, plus rounding)."""


def grid_coordinates(shape: tuple[int, int, int], affine: np.ndarray, reference_affine: np.ndarray) -> np.ndarray:
    """``[3, Z, Y, X]``: the reference-index coordinates of every voxel centre of a grid of
    ``shape`` with ``affine`` (both affines: voxel index (z, y, x) -> LPS mm)."""
    to_ref = np.linalg.inv(np.asarray(reference_affine, np.float64)) @ np.asarray(affine, np.float64)
    index = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij"))
    return np.einsum("ij,j...->i...", to_ref[:3, :3], index) + to_ref[:3, 3].reshape(3, 1, 1, 1)


def outside_reason(coords: np.ndarray, shape: tuple[int, int, int]) -> Optional[str]:
    """Why target voxels fall outside the reference grid, or None when all lie inside."""
    names = ("z", "y", "x")
    for axis, n in enumerate(shape):
        lo, hi = float(coords[axis].min()), float(coords[axis].max())
        if lo < -INSIDE_TOLERANCE or hi > n - 1 + INSIDE_TOLERANCE:
            return (f"along the reference's {names[axis]} axis the reconstruction spans voxels "
                    f"{lo:.1f}..{hi:.1f}, the reference 0..{n - 1}")
    return None


def _axis_resample(array: np.ndarray, axis: int, coords: np.ndarray, width: float) -> np.ndarray:
    """``array`` resampled along ``axis`` at the (source-index) positions ``coords``: the mean of
    the piecewise-constant source over ``[c - width/2, c + width/2]`` when ``width > 1`` (the
    area a target voxel covers; exact block means for integer factors), else linear
    interpolation. Intervals are clipped to the source's extent."""
    a = np.moveaxis(np.asarray(array, np.float64), axis, 0)
    n = a.shape[0]
    if width > 1.0:
        cumulative = np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, axis=0)])

        def integral(x: np.ndarray) -> np.ndarray:      # of the source from -0.5 to x
            x = np.clip(x, -0.5, n - 0.5)
            i = np.minimum(np.floor(x + 0.5).astype(int), n - 1)
            frac = (x + 0.5 - i).reshape(-1, *([1] * (a.ndim - 1)))
            return cumulative[i] + frac * a[i]

        lo = np.clip(coords - width / 2, -0.5, n - 0.5)
        hi = np.clip(coords + width / 2, -0.5, n - 0.5)
        span = np.maximum(hi - lo, 1e-12).reshape(-1, *([1] * (a.ndim - 1)))
        out = (integral(hi) - integral(lo)) / span
    else:
        x = np.clip(coords, 0, n - 1)
        i = np.minimum(np.floor(x).astype(int), max(n - 2, 0))
        frac = (x - i).reshape(-1, *([1] * (a.ndim - 1)))
        out = a[i] * (1 - frac) + a[np.minimum(i + 1, n - 1)] * frac
    return np.moveaxis(out, 0, axis)


def _axis_aligned(to_ref: np.ndarray) -> Optional[list[int]]:
    """For a target->reference index map that only scales and shifts each axis (same orientation,
    axes possibly permuted), the reference axis of each target axis; else None."""
    m = np.abs(to_ref[:3, :3])
    order = [int(np.argmax(m[:, j])) for j in range(3)]
    if sorted(order) != [0, 1, 2]:
        return None
    off = m.copy()
    for j, i in enumerate(order):
        off[i, j] = 0.0
    return order if off.max() <= 1e-6 * m.max() else None


def resample_onto(source: Volume, shape: tuple[int, int, int], affine: np.ndarray, where: str = "the volume"
                  ) -> Volume:
    """``source`` resampled onto the grid ``shape`` / ``affine`` (LPS); :class:`UserError` when
    the grid is not inside ``source``. Grids of the same orientation (the usual case: a slab of a
    study, resampled in-plane) are resampled axis by axis with area means where the target voxels
    are larger; others by antialiased trilinear interpolation."""
    from scipy import ndimage

    coords = grid_coordinates(shape, affine, source.affine)
    why = outside_reason(coords, source.shape)
    if why:
        raise UserError(f"{where}: the target grid is not inside it ({why})")
    to_ref = np.linalg.inv(np.asarray(source.affine, np.float64)) @ np.asarray(affine, np.float64)
    data = np.asarray(source.array)
    magnitude = (np.abs(data) if np.iscomplexobj(data) else data).astype(np.float64)
    order = _axis_aligned(to_ref)
    if order is not None:
        out = np.transpose(magnitude, order)            # reference axes in target order
        for j in range(3):
            i = order[j]
            positions = to_ref[i, j] * np.arange(shape[j]) + to_ref[i, 3]
            out = _axis_resample(out, j, positions, abs(float(to_ref[i, j])))
        out = out.astype(np.float32)
    else:
        ratio = np.abs(to_ref[:3, :3]).max(axis=1)  # reference voxels per target voxel, per reference axis
        sigma = np.sqrt(np.maximum(ratio ** 2 - 1.0, 0.0) / 12.0)
        smooth = ndimage.gaussian_filter(magnitude, sigma, mode="nearest") if np.any(sigma > 0) else magnitude
        out = ndimage.map_coordinates(smooth, coords, order=1, mode="nearest").astype(np.float32)
    spacing = tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
    return replace(source, array=out, spacing=spacing, affine=np.asarray(affine, np.float64).copy(),
                   source=dict(source.source), description=f"{source.description} (resampled)".strip())


__all__ = ["resample_onto", "grid_coordinates", "outside_reason"]


def resample_slices(array: np.ndarray, size: int) -> np.ndarray:
    """Resample every axial slice of ``[Z, Y, X]`` to ``[Z, size, size]``: block means for integer
    reduction factors (each new pixel averages the old pixels it covers), otherwise antialiased
    bilinear interpolation."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[:, None]
    y, x = array.shape[1:]
    if y % size == 0 and x % size == 0:
        out = torch.nn.functional.interpolate(t, size=(size, size), mode="area")
    else:
        out = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                                              align_corners=False)
    return out[:, 0].numpy()
