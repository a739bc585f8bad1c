"""NRRD read (``.nrrd`` and detached ``.nhdr``) with pynrrd, keeping the geometry.

NRRD stores the array with its fastest axis first (pynrrd's default ``index_order="F"`` gives
``data[i, j, k]``), ``space directions`` (one row per index axis: the step in mm in ``space``) and
``space origin`` (the centre of voxel 0). medrecon's Volume is ``[Z, Y, X]`` with an affine
``(z, y, x) -> LPS``, so ``array = data.transpose(2, 1, 0)`` and the affine's columns are the
space directions of axes k, j, i. RAS or LAS spaces are converted to LPS by flipping the
corresponding coordinates. NRRD carries no modality or units: they come from the caller.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from medrecon.errors import DataError, UserError
from medrecon.checks import require_finite
from medrecon.volume import Volume

NRRD_SUFFIXES = (".nrrd", ".nhdr")
# sign flips taking each NRRD anatomical space to LPS
_TO_LPS = {
    "left-posterior-superior": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
    "LPS": (1.0, 1.0, 1.0), "RAS": (-1.0, -1.0, 1.0), "LAS": (1.0, -1.0, 1.0),
}


def is_nrrd_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NRRD_SUFFIXES)


def nrrd_affine(header: dict, path: Path) -> np.ndarray:
    """The medrecon affine ``(z, y, x) -> LPS`` of a 3D NRRD header."""
    space = header.get("space")
    if space is None:
        raise DataError(f"{path}: NRRD header has no 'space' (anatomical orientation unknown)")
    if space not in _TO_LPS:
        raise DataError(f"{path}: NRRD space {space!r} is not supported (LPS, RAS or LAS)")
    flip = np.asarray(_TO_LPS[space])
    dirs = header.get("space directions")
    if dirs is None:
        raise DataError(f"{path}: NRRD header has no 'space directions'")
    dirs = np.asarray(dirs, dtype=np.float64)
    if dirs.shape != (3, 3) or not np.all(np.isfinite(dirs)):
        raise DataError(f"{path}: NRRD 'space directions' must be three finite 3-vectors, got {dirs.tolist()}")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        raise DataError(f"{path}: NRRD 'space origin' must be a finite 3-vector")
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = flip * dirs[2], flip * dirs[1], flip * dirs[0]
    aff[:3, 3] = flip * origin
    if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise DataError(f"{path}: NRRD 'space directions' are singular")
    return aff


def load_nrrd(path: str | os.PathLike, modality: Optional[str] = None,
              units: Optional[str] = None) -> Volume:
    """Read a 3D scalar NRRD file into a :class:`Volume` (``modality`` "OT" and ``units`` "a.u."
    unless given)."""
    import nrrd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"NRRD file {path} does not exist")
    try:
        data, header = nrrd.read(str(path))
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, OSError, zlib errors ...
        raise DataError(f"{path} is not a readable NRRD file: {exc}") from None
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D scalar NRRD volume, got {data.ndim} dimensions {data.shape}")
    if not np.issubdtype(data.dtype, np.number):
        raise DataError(f"{path}: unsupported NRRD data type {data.dtype}")
    if data.size == 0:
        raise DataError(f"{path}: the volume is empty (shape {data.shape})")
    require_finite(data, f"{path}: voxel data")
    aff = nrrd_affine(header, path)
    array = np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.float32)
    try:
        return Volume(array=array, spacing=tuple(np.linalg.norm(aff[:3, :3], axis=0)), affine=aff,
                      modality=modality or "OT", units=units or "a.u.", source={"path": str(path)})
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None


__all__ = ["load_nrrd", "is_nrrd_path", "nrrd_affine", "NRRD_SUFFIXES"]
