"""Put one volume on another volume's voxel grid, from the two affines.

Used by ``medrecon evaluate`` when the reference is the original study (e.g. 64 x 512 x 512 at
0.84 mm) and the reconstruction is a resampled slab of it (24 x 128 x 128 at 3.37 mm): every
voxel centre of the target grid is mapped through ``inv(A_ref) @ A_target`` into the reference's
index space and the reference is interpolated there (trilinear). Where the target's voxels are
larger than the reference's along a reference axis (by a factor r), the reference is first
smoothed along that axis by a Gaussian of variance ``(r^2 - 1) / 12`` voxels^2, the variance a
box average over r voxels adds, so that a coarser grid sees averages, not aliased samples.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

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


def resample_onto(source: Volume, shape: tuple[int, int, int], affine: np.ndarray, where: str = "the volume"
                  ) -> Volume:
    """``source`` resampled onto the grid ``shape`` / ``affine`` (LPS), with antialiasing along
    axes that get coarser; :class:`UserError` when the grid is not inside ``source``."""
    from scipy import ndimage

    coords = grid_coordinates(shape, affine, source.affine)
    why = outside_reason(coords, source.shape)
    if why:
        raise UserError(f"{where}: the target grid is not inside it ({why})")
    to_ref = np.linalg.inv(np.asarray(source.affine, np.float64)) @ np.asarray(affine, np.float64)
    ratio = np.abs(to_ref[:3, :3]).max(axis=1)      # reference voxels per target voxel, per reference axis
    sigma = np.sqrt(np.maximum(ratio ** 2 - 1.0, 0.0) / 12.0)
    data = np.asarray(source.array)
    magnitude = np.abs(data) if np.iscomplexobj(data) else data
    smooth = ndimage.gaussian_filter(magnitude.astype(np.float64), sigma, mode="nearest") \
        if np.any(sigma > 0) else magnitude.astype(np.float64)
    out = ndimage.map_coordinates(smooth, coords, order=1, mode="nearest").astype(np.float32)
    spacing = tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
    return replace(source, array=out, spacing=spacing, affine=np.asarray(affine, np.float64).copy(),
                   source=dict(source.source), description=f"{source.description} (resampled)".strip())


__all__ = ["resample_onto", "grid_coordinates", "outside_reason"]
