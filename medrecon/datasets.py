"""The sample datasets medrecon's benchmarks and shipped priors use, read from local files.

Nothing here downloads anything. ``scripts/fetch_chest_ct.py`` fetches and verifies the sample
chest CT series (see ``data_manifests/chest-ct-sample.yaml``); the MNI152 template ships inside
the nilearn package.

- Sample chest CT: 64 axial slices ``1-01.dcm`` .. ``1-64.dcm`` (512x512, 0.842 mm pixels, 5 mm
  slices). Files 1-40 are for training, files 41-64 the held-out test slab of every CT benchmark.
  Slices are selected by file name, then ordered by position along the slice normal.
- Data root: ``$MEDRECON_DATA`` or ``~/.cache/medrecon``; the chest CT lives in ``ROOT/chest-ct``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from medrecon.errors import UserError
from medrecon.volume import Volume

CHEST_CT_TRAIN = range(1, 41)
CHEST_CT_TEST = range(41, 65)
_CHEST_NAME = re.compile(r"^1-(\d\d)\.dcm$")


def data_root() -> Path:
    """``$MEDRECON_DATA`` or ``~/.cache/medrecon``."""
    return Path(os.environ.get("MEDRECON_DATA", Path.home() / ".cache" / "medrecon"))


def chest_ct_dir(root: Optional[str | Path] = None) -> Path:
    """Folder holding ``1-01.dcm`` .. ``1-64.dcm`` (``ROOT/chest-ct``)."""
    return Path(root) if root is not None else data_root() / "chest-ct"


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


def select_files(volume: Volume, numbers: Sequence[int], pattern: re.Pattern = _CHEST_NAME) -> Volume:
    """The slices of ``volume`` whose source file name carries one of ``numbers`` (see module doc)."""
    files = volume.source.get("files")
    if not isinstance(files, list) or len(files) != volume.shape[0]:
        raise UserError("the volume does not record its source files per slice; cannot select by file name")
    wanted = set(int(n) for n in numbers)
    keep = []
    for k, f in enumerate(files):
        match = pattern.match(Path(f).name)
        if match and int(match.group(1)) in wanted:
            keep.append(k)
    if len(keep) != len(wanted):
        raise UserError(f"expected {len(wanted)} files numbered {min(wanted)}..{max(wanted)} in the series, "
                        f"found {len(keep)}")
    if keep != list(range(keep[0], keep[0] + len(keep))):
        raise UserError("the selected files are not a contiguous slab")
    array = volume.array[keep[0]: keep[-1] + 1]
    affine = volume.affine.copy()
    affine[:3, 3] = (volume.affine @ np.array([keep[0], 0, 0, 1.0]))[:3]
    source = dict(volume.source, files=[files[k] for k in keep])
    return Volume(array=array, spacing=volume.spacing, affine=affine, modality=volume.modality,
                  units=volume.units, window=volume.window, source=source,
                  description=volume.description, window_units=volume.window_units)


def resample_volume(volume: Volume, size: int) -> Volume:
    """``volume`` with every axial slice resampled to ``size x size`` (spacing and affine updated)."""
    z, y, x = volume.shape
    fy, fx = y / size, x / size
    affine = volume.affine.copy()
    affine[:3, 1] *= fy
    affine[:3, 2] *= fx
    # keep the field of view: the first voxel centre moves by half the new minus the old pixel
    affine[:3, 3] += 0.5 * (fy - 1) * volume.affine[:3, 1] + 0.5 * (fx - 1) * volume.affine[:3, 2]
    spacing = (volume.spacing[0], volume.spacing[1] * fy, volume.spacing[2] * fx)
    return Volume(array=resample_slices(volume.array, size), spacing=spacing, affine=affine,
                  modality=volume.modality, units=volume.units, window=volume.window,
                  source=volume.source, description=volume.description, window_units=volume.window_units)


def chest_ct_slab(part: str = "test", size: int = 128, root: Optional[str | Path] = None) -> Volume:
    """The sample chest CT's ``"train"`` (files 1-40) or ``"test"`` (files 41-64) slab in HU,
    slices resampled to ``size x size``."""
    from medrecon.io import load_volume

    numbers = {"train": CHEST_CT_TRAIN, "test": CHEST_CT_TEST}.get(part)
    if numbers is None:
        raise UserError(f"part must be 'train' or 'test', got {part!r}")
    folder = chest_ct_dir(root)
    if not folder.is_dir():
        raise UserError(f"sample chest CT not found in {folder}; fetch it with "
                        f"`python scripts/fetch_chest_ct.py` (or set MEDRECON_DATA)")
    volume = select_files(load_volume(folder), numbers)
    return resample_volume(volume, size)
