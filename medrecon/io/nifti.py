"""NIfTI-1 read and write (nibabel), converting between medrecon's and NIfTI's conventions.

medrecon: array ``[Z, Y, X]``, affine (z, y, x) -> LPS mm. NIfTI: data ``[i, j, k] = [X, Y, Z]``,
affine (i, j, k) -> RAS mm. Hence ``data = array.transpose(2, 1, 0)`` and
``nifti_affine = diag(-1, -1, 1, 1) @ affine @ P`` with ``P`` swapping index 0 and 2.
Modality, units, window and the source identity ride along in a JSON header extension
(code 6, "comment", prefixed ``medrecon:``) so a round trip keeps them; NIfTI files from
elsewhere load as modality "OT", units "a.u." unless told otherwise.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import nibabel as nib
import numpy as np

from medrecon.errors import DataError, UserError
from medrecon.io.atomic import atomic_path
from medrecon.checks import require_finite, require_memory
from medrecon.io.jsonio import json_text
from medrecon.volume import Volume

log = logging.getLogger("medrecon.io.nifti")

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ZYX_TO_XYZ = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
_EXT_CODE = 6  # NIFTI_ECODE_COMMENT
_EXT_PREFIX = b"medrecon:"
_SOURCE_KEEP_OUT = ("files",)  # long file lists stay out of the header


def is_nifti_path(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def lps_zyx_to_ras_ijk(affine: np.ndarray) -> np.ndarray:
    """medrecon affine ((z, y, x) -> LPS) to NIfTI affine ((i, j, k) = (x, y, z) -> RAS)."""
    return LPS_TO_RAS @ np.asarray(affine, float) @ ZYX_TO_XYZ


def ras_ijk_to_lps_zyx(affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lps_zyx_to_ras_ijk` (both matrices are their own inverses)."""
    return LPS_TO_RAS @ np.asarray(affine, float) @ ZYX_TO_XYZ


def _is_orthogonal(affine: np.ndarray) -> bool:
    m = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.allclose(m.T @ m, np.eye(3), atol=1e-5))


def save_nifti(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``volume`` as ``.nii`` or ``.nii.gz`` (float32; complex volumes as magnitude),
    atomically. Refuses an existing file unless ``overwrite``."""
    path = Path(path)
    if not is_nifti_path(path):
        raise UserError(f"output {path}: NIfTI files must end in .nii or .nii.gz")
    data = volume.array
    require_finite(data, f"volume to write to {path}", "nothing written")
    if np.iscomplexobj(data):
        log.info("%s: complex volume written as magnitude", path)
        data = np.abs(data).astype(np.float32)
    aff = lps_zyx_to_ras_ijk(volume.affine)
    img = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), aff)
    code = 1 if volume.source.get("FrameOfReferenceUID") else 2  # scanner / aligned anatomy
    img.set_sform(aff, code=code)
    if _is_orthogonal(aff):
        img.set_qform(aff, code=code)
    else:  # sheared (gantry tilt): only the sform can hold it
        img.set_qform(None, code=0)
    img.header.set_xyzt_units(xyz="mm")
    img.header["descrip"] = f"medrecon {volume.modality} {volume.units}"[:79].encode()
    meta = {"modality": volume.modality, "units": volume.units,
            "window": list(volume.window) if volume.window else None,
            "window_units": volume.window_units, "description": volume.description,
            "source": {k: v for k, v in volume.source.items() if k not in _SOURCE_KEEP_OUT}}
    payload = _EXT_PREFIX + json_text(_plain(meta), indent=None).encode("utf-8")
    img.header.extensions.append(nib.nifti1.Nifti1Extension(_EXT_CODE, payload))
    with atomic_path(path, overwrite=overwrite, what="NIfTI output") as tmp:
        nib.save(img, str(tmp))
    return path


def _plain(obj: Any) -> Any:
    """``obj`` with values JSON cannot hold (dates, UIDs, person names) as text."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str, np.generic, np.ndarray)):
        return obj
    return str(obj)


def _read_meta(img: Any) -> dict[str, Any]:
    for ext in img.header.extensions:
        if ext.get_code() == _EXT_CODE:
            content = ext.get_content()
            if isinstance(content, bytes) and content.startswith(_EXT_PREFIX):
                try:
                    return json.loads(content[len(_EXT_PREFIX):].rstrip(b"\x00").decode())
                except (ValueError, UnicodeDecodeError):
                    return {}
    return {}


def load_nifti(path: str | os.PathLike, modality: Optional[str] = None) -> Volume:
    """Read a 3D NIfTI file (a 4D file with one volume is accepted) into a :class:`Volume`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"NIfTI file {path} does not exist")
    try:
        img = nib.load(str(path))
        shape = tuple(int(n) for n in img.shape)
        itemsize = max(int(np.dtype(img.get_data_dtype()).itemsize), 4)
        require_memory(float(np.prod(shape, dtype=np.float64)) * itemsize * 2,
                       f"{path}: reading its {' x '.join(map(str, shape))} voxels")
        data = np.asarray(img.dataobj)
    except DataError:
        raise
    except Exception as exc:  # nibabel raises several types on damaged files
        raise DataError(f"{path} is not a readable NIfTI file: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number):
        raise DataError(f"{path}: unsupported data type {data.dtype}")
    if data.size == 0:
        raise DataError(f"{path}: the volume is empty (shape {data.shape})")
    require_finite(data, f"{path}: voxel data")
    affine = img.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"{path}: the affine (sform/qform) is missing or singular")
    aff = ras_ijk_to_lps_zyx(affine)
    meta = _read_meta(img)
    array = data.transpose(2, 1, 0)
    array = array.astype(np.complex64 if np.iscomplexobj(array) else np.float32)
    units = meta.get("units") or "a.u."
    window = meta.get("window")
    try:
        return Volume(
            array=array, spacing=tuple(np.linalg.norm(aff[:3, :3], axis=0)), affine=aff,
            modality=modality or meta.get("modality") or "OT", units=units,
            window=tuple(window) if window else None, window_units=meta.get("window_units"),
            source={**(meta.get("source") or {}), "path": str(path)},
            description=meta.get("description") or "")
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from exc


__all__ = ["save_nifti", "load_nifti", "is_nifti_path", "lps_zyx_to_ras_ijk",
           "ras_ijk_to_lps_zyx"]
