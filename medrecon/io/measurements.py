"""Measurement files (HDF5 via h5py): sinograms and k-space with what rebuilds their operator.

Layout of a medrecon measurement file ("medrecon-measurement/1")::

    /                attrs: format, task, medrecon_version, geometry (JSON), attrs (JSON)
    /data            float32 sinogram [Z, A, D] (CT) or complex64 k-space [Z, C, ky, kx] (MRI)
    /arrays/<name>   named arrays: "mask" [ky, kx] or [Z, ky, kx], "coil_maps" [C, Y, X] or
                     [Z, C, Y, X], "reference" [Z, Y, X], ...

``geometry`` holds the operator parameters (e.g. ``CTGeometry.to_dict()``); ``attrs`` the rest
(noise model and seed, window, units, spacing, affine, source identity). Both must be
JSON-serialisable.

fastMRI files (dataset ``kspace`` [slices, coils, ky, kx], optional ``reconstruction_rss`` and
``ismrmrd_header``) are read by :func:`load_fastmri_kspace`. fastMRI stores the readout
(frequency-encode) direction along the rows and undersamples columns, so the sampling mask is
the set of non-zero k-space columns, broadcast over the rows to ``[ky, kx]``.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import h5py
import numpy as np

import medrecon
from medrecon.errors import DataError, UserError
from medrecon.io.atomic import atomic_path
from medrecon.checks import require_finite, require_memory
from medrecon.io.jsonio import json_text

FORMAT = "medrecon-measurement/1"
TASKS = ("sparse-view-ct", "limited-angle-ct", "cs-mri")


@dataclass
class Measurement:
    """Measured data plus everything needed to rebuild the forward operator.

    task: "sparse-view-ct" | "limited-angle-ct" | "cs-mri".
    data: float32 sinogram [Z, A, D] or complex64 k-space [Z, C, ky, kx].
    geometry: JSON-serialisable operator parameters.
    arrays: named NumPy arrays ("mask", "coil_maps", "reference", ...).
    attrs: JSON-serialisable metadata (noise, seed, window, units, spacing, affine, source).
    """
    task: str
    data: np.ndarray
    geometry: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = field(default=None, compare=False, repr=False)  # file it was read from

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        data = np.asarray(self.data)
        if self.task == "cs-mri":
            if data.ndim != 4:
                raise ValueError(f"cs-mri data must be k-space [Z, C, ky, kx], got {data.shape}")
            data = data.astype(np.complex64, copy=False)
        else:
            if data.ndim != 3 or np.iscomplexobj(data):
                raise ValueError(f"CT data must be a real sinogram [Z, A, D], got "
                                 f"{data.dtype} {data.shape}")
            data = data.astype(np.float32, copy=False)
        self.data = data
        self.arrays = {k: np.asarray(v) for k, v in (self.arrays or {}).items()}

    def summary(self) -> str:
        kind = "k-space [Z, C, ky, kx]" if self.task == "cs-mri" else "sinogram [Z, A, D]"
        arrays = ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in self.arrays.items())
        return (f"{self.task} measurement: {kind} = {list(self.data.shape)} {self.data.dtype}"
                + (f"; arrays: {arrays}" if arrays else ""))


def _json(obj: Any, what: str, path: Path) -> str:
    try:
        return json_text(obj, indent=None)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: measurement {what} is not JSON-serialisable: {exc}") from exc


def save_measurement(path: str | os.PathLike, m: Measurement, overwrite: bool = False) -> Path:
    """Write ``m`` to an HDF5 file atomically; refuses an existing file unless ``overwrite``."""
    path = Path(path)
    geometry = _json(m.geometry, "geometry", path)
    attrs = _json(m.attrs, "attrs", path)
    with atomic_path(path, overwrite=overwrite, what="measurement file") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["task"] = m.task
            f.attrs["medrecon_version"] = medrecon.__version__
            f.attrs["geometry"] = geometry
            f.attrs["attrs"] = attrs
            f.create_dataset("data", data=m.data, compression="gzip", compression_opts=4)
            grp = f.create_group("arrays")
            for name, arr in m.arrays.items():
                if "/" in name or not name:
                    raise UserError(f"{path}: array name {name!r} is not a valid HDF5 name")
                grp.create_dataset(name, data=arr, compression="gzip", compression_opts=4)
    return path


def is_measurement_file(path: str | os.PathLike) -> bool:
    """True for an HDF5 file (medrecon measurement or fastMRI k-space)."""
    p = Path(path)
    return p.is_file() and h5py.is_hdf5(str(p))


def _dataset(f: h5py.File, name: str, path: Path) -> h5py.Dataset:
    """``f[name]`` when it is a dataset with at least one element; else a DataError."""
    obj = f.get(name)
    if obj is None:
        raise DataError(f"{path}: no dataset {name!r}")
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{path}: {name!r} is an HDF5 {type(obj).__name__.lower()}, expected a "
                        f"dataset (an array)")
    if obj.shape is None or obj.size == 0:
        raise DataError(f"{path}: dataset {name!r} is empty (shape {obj.shape}, e.g. 0 slices)")
    return obj


def _read_size(datasets: Sequence[h5py.Dataset], path: Path) -> None:
    """Refuse datasets whose in-memory size (complex64 / float32 or wider) cannot fit."""
    total = sum(float(np.prod(d.shape, dtype=np.float64)) * max(d.dtype.itemsize, 4) * 2
                for d in datasets)
    require_memory(total, f"{path}: reading " + ", ".join(f"{d.name} {list(d.shape)}"
                                                           for d in datasets))


def load_measurement(path: str | os.PathLike) -> Measurement:
    """Read a medrecon measurement file (or a fastMRI k-space file, detected by its
    ``kspace`` dataset). :class:`DataError` names the file and what is wrong with it:
    damaged or empty datasets, non-finite values, arrays that do not fit the data."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"measurement file {path} does not exist")
    if not h5py.is_hdf5(str(path)):
        raise DataError(f"{path} is not an HDF5 file (expected a medrecon measurement file)")
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
            if isinstance(fmt, bytes):
                fmt = fmt.decode()
            if fmt is None and "kspace" in f:
                return _read_fastmri(f, path, None)
            if fmt != FORMAT:
                raise DataError(f"{path} is not a medrecon measurement file (attribute "
                                f"'format' is {fmt!r}, expected {FORMAT!r})")
            if "data" not in f:
                raise DataError(f"{path}: medrecon measurement file lacks the 'data' dataset")
            task = f.attrs.get("task")
            task = task.decode() if isinstance(task, bytes) else str(task)
            geometry = json.loads(f.attrs.get("geometry", "{}"))
            attrs = json.loads(f.attrs.get("attrs", "{}"))
            if not isinstance(geometry, dict) or not isinstance(attrs, dict):
                raise DataError(f"{path}: the 'geometry' and 'attrs' attributes must be JSON "
                                f"objects")
            ds = _dataset(f, "data", path)
            if task == "cs-mri" and not np.issubdtype(ds.dtype, np.complexfloating):
                raise DataError(f"{path}: 'data' is {ds.dtype}, but CS-MRI k-space must be complex "
                                f"(complex64 [Z, C, ky, kx]); real-valued k-space has lost its phase")
            group = f.get("arrays", {})
            if not isinstance(group, (h5py.Group, dict)):
                raise DataError(f"{path}: 'arrays' must be an HDF5 group")
            named = {k: _dataset(group, k, path) for k in group}
            _read_size([ds, *named.values()], path)
            data = ds[()]
            arrays = {k: v[()] for k, v in named.items()}
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: damaged measurement file: {exc}") from exc
    try:
        m = Measurement(task=task, data=data, geometry=geometry, arrays=arrays, attrs=attrs,
                        path=path)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from exc
    return check_measurement(m, path)


def check_measurement(m: Measurement, path: str | os.PathLike) -> Measurement:
    """Refuse a measurement that cannot be reconstructed: no slices, NaN / Inf in the data or
    any array, coil maps / mask / reference whose shape does not fit the data, a mask that
    samples nothing, k-space without signal. Returns ``m``."""
    where = str(path)
    if min(m.data.shape) < 1:
        raise DataError(f"{where}: data has shape {list(m.data.shape)}: no slices or no samples")
    require_finite(m.data, f"{where}: measured data ('data')")
    for name, arr in m.arrays.items():
        if np.issubdtype(arr.dtype, np.number):
            require_finite(arr, f"{where}: array {name!r}")
    z = m.data.shape[0]
    ref = m.arrays.get("reference")
    if ref is not None and (ref.ndim != 3 or ref.shape[0] != z):
        raise DataError(f"{where}: reference has shape {list(ref.shape)}, expected [Z, Y, X] with "
                        f"Z = {z} slices like the data")
    if m.task != "cs-mri":
        return m
    _, c, ky, kx = m.data.shape
    maps = m.arrays.get("coil_maps")
    if maps is not None:
        expect = "[C, Y, X] or [Z, C, Y, X]"
        if maps.ndim not in (3, 4) or tuple(maps.shape[-3:]) != (c, ky, kx) or \
                (maps.ndim == 4 and maps.shape[0] != z):
            raise DataError(f"{where}: coil_maps have shape {list(maps.shape)} but the k-space "
                            f"[Z, C, ky, kx] is {list(m.data.shape)}: expected {expect} = "
                            f"{[c, ky, kx]} (one map per coil, {c} coils)")
    mask = m.arrays.get("mask")
    if mask is not None:
        if mask.ndim not in (2, 3) or tuple(mask.shape[-2:]) != (ky, kx) or \
                (mask.ndim == 3 and mask.shape[0] != z):
            raise DataError(f"{where}: mask has shape {list(mask.shape)}, expected [ky, kx] = "
                            f"{[ky, kx]} (or per slice [Z, ky, kx])")
        if not np.any(mask):
            raise DataError(f"{where}: the sampling mask samples no k-space point (all zero)")
    if not np.any(m.data):
        raise DataError(f"{where}: the k-space data are all zero (no signal to reconstruct)")
    shape = m.geometry.get("image_shape")
    if shape is not None and list(shape) != [ky, kx]:
        raise DataError(f"{where}: geometry image_shape {shape} differs from the k-space matrix "
                        f"{[ky, kx]}")
    coils = m.geometry.get("n_coils", m.geometry.get("coils"))
    if coils is not None and coils != c:
        raise DataError(f"{where}: geometry says {coils} coils, the k-space holds {c}")
    return m


def _slice_index(slices: Optional[slice | Sequence[int] | int], n: int, path: Path) -> Any:
    if slices is None:
        return slice(None)
    if isinstance(slices, slice):
        return slices
    if isinstance(slices, int):
        slices = [slices]
    idx = sorted({int(i) for i in slices})
    if not idx or idx[0] < 0 or idx[-1] >= n:
        raise UserError(f"{path}: slice indices {list(slices)} out of range 0..{n - 1}")
    return idx


def _header_info(f: h5py.File) -> dict[str, Any]:
    """Encoded/recon matrix and field of view from fastMRI's ISMRMRD XML header, if present."""
    if "ismrmrd_header" not in f:
        return {}
    try:
        raw = f["ismrmrd_header"][()]
        root = ET.fromstring(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (ET.ParseError, UnicodeDecodeError, TypeError):
        return {}
    ns = {"m": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
    pre = "m:" if ns else ""
    out: dict[str, Any] = {}
    for space in ("encodedSpace", "reconSpace"):
        node = root.find(f".//{pre}encoding/{pre}{space}", ns)
        if node is None:
            continue
        try:
            mat = [int(node.find(f"{pre}matrixSize/{pre}{a}", ns).text) for a in "xyz"]
            fov = [float(node.find(f"{pre}fieldOfView_mm/{pre}{a}", ns).text) for a in "xyz"]
        except (AttributeError, TypeError, ValueError):
            continue
        key = "encoded" if space == "encodedSpace" else "recon"
        out[f"{key}_matrix"], out[f"{key}_fov_mm"] = mat, fov
    return out


def _read_fastmri(f: h5py.File, path: Path, slices: Any) -> Measurement:
    ds = _dataset(f, "kspace", path)
    if ds.ndim == 3:  # single-coil fastMRI: [slices, ky, kx]
        shape4 = (ds.shape[0], 1) + ds.shape[1:]
    elif ds.ndim == 4:
        shape4 = ds.shape
    else:
        raise DataError(f"{path}: dataset 'kspace' has shape {ds.shape}; expected "
                        f"[slices, coils, ky, kx] (or [slices, ky, kx] single-coil)")
    if not np.issubdtype(ds.dtype, np.complexfloating):
        raise DataError(f"{path}: dataset 'kspace' is {ds.dtype}, expected complex")
    sel = _slice_index(slices, shape4[0], path)
    _read_size([ds] + ([f["reconstruction_rss"]] if isinstance(f.get("reconstruction_rss"),
                                                             h5py.Dataset) else []), path)
    k = ds[sel]
    k = k.reshape((-1,) + shape4[1:]).astype(np.complex64)
    require_finite(k, f"{path}: dataset 'kspace'")
    sampled = np.abs(k).reshape(-1, k.shape[-1]).max(axis=0) > 0
    if not sampled.any():
        raise DataError(f"{path}: dataset 'kspace' is all zeros")
    mask = np.broadcast_to(sampled[None, :], k.shape[-2:]).astype(np.float32)
    arrays: dict[str, np.ndarray] = {"mask": mask}
    if "reconstruction_rss" in f:
        arrays["reference"] = _dataset(f, "reconstruction_rss", path)[sel].astype(np.float32)
    attrs: dict[str, Any] = {"source_format": "fastmri", "path": str(path),
                             "mask_from": "non-zero k-space columns",
                             "readout_axis": "ky (rows, fully sampled)",
                             "slices": "all" if sel == slice(None) else
                             (list(sel) if isinstance(sel, list) else str(sel))}
    for key, val in f.attrs.items():
        if isinstance(val, bytes):
            val = val.decode(errors="replace")
        if isinstance(val, np.generic):
            val = val.item()
        if isinstance(val, (str, int, float, bool)):
            attrs[f"fastmri_{key}"] = val
    attrs.update(_header_info(f))
    geometry = {"kind": "sense", "shape": list(k.shape[-2:]), "coils": int(k.shape[1]),
                "fft": "centred orthonormal 2D"}
    return check_measurement(Measurement(task="cs-mri", data=k, geometry=geometry, arrays=arrays,
                                         attrs=attrs, path=path), path)


def load_fastmri_kspace(path: str | os.PathLike,
                        slices: Optional[slice | Sequence[int] | int] = None) -> Measurement:
    """Read multi-coil k-space from a fastMRI HDF5 file as a cs-mri :class:`Measurement`.

    data: complex64 [slices, coils, ky, kx]; arrays["mask"]: float32 [ky, kx] (columns that
    hold any non-zero sample); arrays["reference"]: fastMRI's RSS image when present. Coil
    maps are not in fastMRI files (estimate them, e.g. ESPIRiT). ``slices``: an index, a
    list of indices or a slice.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"k-space file {path} does not exist")
    if not h5py.is_hdf5(str(path)):
        raise DataError(f"{path} is not an HDF5 file (expected fastMRI k-space)")
    try:
        with h5py.File(path, "r") as f:
            if "kspace" not in f:
                raise DataError(f"{path} has no 'kspace' dataset (datasets: "
                                f"{', '.join(f.keys()) or 'none'}); not a fastMRI file")
            return _read_fastmri(f, path, slices)
    except OSError as exc:
        raise DataError(f"{path}: damaged HDF5 file: {exc}") from exc


__all__ = ["Measurement", "FORMAT", "TASKS", "save_measurement", "load_measurement",
           "check_measurement",
           "load_fastmri_kspace", "is_measurement_file"]
