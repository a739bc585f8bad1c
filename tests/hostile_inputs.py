"""Generators of hostile input for the CLI suite (tests/test_hostile_cli.py).

Each generator writes one kind of bad (or unusual but valid) file into a folder and returns its
path. They write raw files (nibabel, pynrrd, h5py, pydicom) without going through medrecon's
writers, which refuse such content.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Optional

import h5py
import nibabel as nib
import numpy as np

FORMAT = "medrecon-measurement/1"


# -- volumes --------------------------------------------------------------------------------------
def phantom_array(shape: tuple[int, int, int] = (4, 32, 32)) -> np.ndarray:
    from medrecon.phantoms import shepp_logan_3d

    return shepp_logan_3d(shape).astype(np.float32)


def nifti(path: Path, array: np.ndarray, affine: Optional[np.ndarray] = None) -> Path:
    """``array`` [Z, Y, X] as a NIfTI file (data [X, Y, Z]), 1 mm voxels unless ``affine``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0))
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def nifti_with(path: Path, value: float, shape=(4, 32, 32)) -> Path:
    """A phantom with ``value`` (NaN, Inf, ...) in a few voxels."""
    a = phantom_array(shape)
    a[1, 5:7, 9] = value
    return nifti(path, a)


def nifti_huge_header(path: Path) -> Path:
    """A NIfTI-1 header claiming 30000 x 30000 x 30000 float32 voxels over a tiny file."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(np.eye(4), code=1)
    hdr.set_qform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = hdr.binaryblock + b"\0" * 4 + b"\0" * 1024  # no extension, then a few data bytes
    path.write_bytes(raw)
    return path


def nrrd_with_nan(path: Path) -> Path:
    import nrrd

    a = phantom_array().transpose(2, 1, 0).copy()
    a[3, 4, 1] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    nrrd.write(str(path), a, {"space": "left-posterior-superior",
                              "space directions": np.eye(3), "space origin": np.zeros(3)})
    return path


# -- measurement files ----------------------------------------------------------------------------
def raw_measurement(path: Path, task: str, data: Any, arrays: Optional[dict] = None,
                    geometry: Optional[dict] = None, attrs: Optional[dict] = None,
                    data_as_group: bool = False) -> Path:
    """A medrecon measurement file written with h5py directly (no validation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["task"] = task
        f.attrs["geometry"] = json.dumps(geometry or {})
        f.attrs["attrs"] = json.dumps(attrs or {})
        if data_as_group:
            f.create_group("data").create_dataset("inner", data=np.zeros(3))
        else:
            f.create_dataset("data", data=data)
        grp = f.create_group("arrays")
        for name, arr in (arrays or {}).items():
            grp.create_dataset(name, data=arr)
    return path


def copy_measurement(src: Path, dst: Path, data=None, arrays: Optional[dict] = None,
                     geometry: Optional[dict] = None, drop: tuple[str, ...] = ()) -> Path:
    """``src`` rewritten with some parts replaced (``drop``: array names to leave out)."""
    from medrecon.io.measurements import load_measurement

    m = load_measurement(src)
    merged = {k: v for k, v in m.arrays.items() if k not in drop}
    merged.update(arrays or {})
    return raw_measurement(dst, m.task, m.data if data is None else data, merged,
                           m.geometry if geometry is None else geometry, m.attrs)


def fastmri(path: Path, kspace: Optional[np.ndarray] = None, as_group: bool = False,
            rss: Optional[np.ndarray] = None) -> Path:
    """A fastMRI-style file: ``kspace`` [slices, coils, ky, kx] (no coil maps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if as_group:
            f.create_group("kspace").create_dataset("slice0", data=np.zeros((4, 8, 8), np.complex64))
        else:
            f.create_dataset("kspace", data=kspace)
        if rss is not None:
            f.create_dataset("reconstruction_rss", data=rss)
    return path


def noise_free_kspace(shape=(2, 4, 32, 32)) -> np.ndarray:
    """Noise-free multi-coil k-space of a phantom with birdcage coils (centred orthonormal FFT)."""
    import torch

    from medrecon.physics.mri import SenseOperator, birdcage_maps

    z, c, ny, nx = shape
    img = torch.from_numpy(phantom_array((z, ny, nx))).to(torch.complex64)
    op = SenseOperator(birdcage_maps(c, (ny, nx)), None)
    with torch.no_grad():
        return op.forward(img).numpy().astype(np.complex64)


# -- priors ---------------------------------------------------------------------------------------
def prior_copy(dst: Path, name: str = "phantom", poison: Optional[str] = None,
               window: Optional[list] = None, weights_path: Optional[str] = None,
               scale: Optional[float] = None, family: Optional[str] = None) -> Path:
    """A copy of a shipped prior: ``poison`` "nan" puts NaN in one tensor; ``scale`` multiplies
    one tensor (other weights, same architecture); ``window`` rewrites the card's intensity
    window; ``weights_path`` rewrites the card's weights entry; ``family`` the card's
    architecture family (the weights stay those of the shipped network)."""
    import torch
    from safetensors.torch import load_file, save_file

    from medrecon.prior.checkpoint import SHIPPED_DIR

    shutil.copytree(SHIPPED_DIR / name, dst)
    if poison or scale is not None:
        state = load_file(str(dst / "ema.safetensors"))
        key = sorted(k for k, v in state.items() if v.is_floating_point() and v.numel() > 8)[0]
        t = state[key].clone()
        if poison == "nan":
            t.view(-1)[3] = float("nan")
        if scale is not None:
            t = t * scale
        state[key] = t.contiguous()
        save_file(state, str(dst / "ema.safetensors"))
    if window is not None or weights_path is not None or family is not None:
        card = json.loads((dst / "model_card.json").read_text())
        if family is not None:
            card["architecture"]["family"] = family
        if window is not None:
            card["intensity"]["window"] = window
        if weights_path is not None:
            card["weights"]["ema"] = weights_path
        (dst / "model_card.json").write_text(json.dumps(card, indent=2))
    _ = torch  # the copy is read by medrecon through safetensors only
    return dst


# -- DICOM ----------------------------------------------------------------------------------------
def dicom_with_huge_rows(folder: Path, rows: int = 65535) -> Path:
    """A 3-slice CT series whose middle file's header claims ``rows`` rows over 32 x 32 pixels."""
    import pydicom

    from dicom_factory import phantom_hu, write_series

    write_series(folder, phantom_hu((3, 32, 32)), spacing=(2.0, 1.0, 1.0))
    middle = sorted(folder.iterdir())[1]
    ds = pydicom.dcmread(middle)
    ds.Rows = rows
    ds.save_as(middle)
    return middle


def pydicom_file(name: str) -> Optional[Path]:
    """A file bundled with pydicom (offline), or None."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    return Path(found) if found else None


# -- checks ---------------------------------------------------------------------------------------
def tree_checksums(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` and every folder (as "dir")."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link->" + str(p.readlink())
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
