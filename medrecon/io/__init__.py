"""Volumes and measurements in and out: DICOM series, NIfTI, HDF5 measurement files, manifests.

``load_volume`` accepts a NIfTI or NRRD (``.nrrd``, ``.nhdr``) file, a DICOM directory (searched recursively), a single DICOM
file, or a list of DICOM files; ``save_volume`` writes NIfTI; ``write_dicom_series`` writes a
derived DICOM series. Conventions (array ``[Z, Y, X]``, affine to LPS) are in
:mod:`medrecon.volume`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

from medrecon.errors import DataError, UserError
from medrecon.io.dicom_reader import read_dicom, scan_dicom
from medrecon.io.dicom_writer import write_dicom_series
from medrecon.io.measurements import (Measurement, is_measurement_file, load_fastmri_kspace,
                                      load_measurement, save_measurement)
from medrecon.io.nifti import is_nifti_path, load_nifti, save_nifti
from medrecon.io.nrrd import is_nrrd_path, load_nrrd
from medrecon.volume import Volume

_MEASUREMENT_SUFFIXES = (".h5", ".hdf5")


def load_volume(path: str | os.PathLike | Sequence[str | os.PathLike],
                series: Optional[str | int] = None, allow_incomplete: bool = False,
                spacing_tolerance: float = 0.01) -> Volume:
    """Read a volume from a NIfTI or NRRD file, a DICOM directory or file, or a list of DICOM files.

    series: SeriesInstanceUID or 0-based index when a DICOM input holds several series.
    allow_incomplete: load a DICOM series despite unusable files / missing slices (warned).
    spacing_tolerance: relative tolerance on DICOM slice-gap uniformity.
    """
    if not isinstance(path, (str, os.PathLike)):
        return read_dicom(list(path), series, allow_incomplete, spacing_tolerance)
    p = Path(path)
    if not p.exists():
        raise UserError(f"volume {p} does not exist")
    if p.is_file() and is_nifti_path(p):
        if series is not None:
            raise UserError(f"--series applies to DICOM input, not to the NIfTI file {p}")
        return load_nifti(p)
    if p.is_file() and is_nrrd_path(p):
        if series is not None:
            raise UserError(f"--series applies to DICOM input, not to the NRRD file {p}")
        return load_nrrd(p)
    if p.is_file() and (p.suffix.lower() in _MEASUREMENT_SUFFIXES or is_measurement_file(p)):
        if not is_measurement_file(p):
            raise DataError(f"{p} is named like an HDF5 file but is not one (damaged, or "
                            f"another format); expected a volume: NIfTI, NRRD or DICOM")
        raise UserError(f"{p} is an HDF5 measurement file, not a volume; reconstruct it with "
                        f"`medrecon reconstruct --input {p}`, or give a DICOM folder or a "
                        f"NIfTI / NRRD file here")
    return read_dicom(p, series, allow_incomplete, spacing_tolerance)


def save_volume(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``volume`` to ``path`` (.nii or .nii.gz), atomically; refuses to overwrite
    unless asked. Use :func:`write_dicom_series` for DICOM output."""
    p = Path(path)
    if not is_nifti_path(p):
        raise UserError(f"output {p}: volumes are saved as NIfTI (.nii or .nii.gz); use "
                        f"--dicom-out for a DICOM series")
    return save_nifti(volume, p, overwrite=overwrite)


__all__ = ["Volume", "load_volume", "save_volume", "write_dicom_series", "read_dicom",
           "scan_dicom", "load_nifti", "save_nifti", "load_nrrd", "Measurement", "save_measurement",
           "load_measurement", "load_fastmri_kspace", "is_measurement_file"]


def add_volume_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that reads a VOLUME (see :func:`load_volume_arg`)."""
    parser.add_argument("--series", default=None, metavar="UID|INDEX",
                        help="DICOM input holding several series: SeriesInstanceUID or 0-based "
                             "index from `medrecon info DIR`")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="load a DICOM series despite unusable files (not DICOM, truncated, "
                             "no pixel data) and fill missing slices by interpolation (warned)")
    parser.add_argument("--spacing-tolerance", type=float, default=0.01, metavar="FRACTION",
                        help="allowed relative deviation of DICOM slice gaps from the nominal gap")


def load_volume_arg(path: str | os.PathLike, args: argparse.Namespace) -> Volume:
    """:func:`load_volume` with the options added by :func:`add_volume_arguments` (missing
    options fall back to the defaults)."""
    return load_volume(path, series=getattr(args, "series", None),
                       allow_incomplete=getattr(args, "allow_incomplete", False),
                       spacing_tolerance=getattr(args, "spacing_tolerance", 0.01))


__all__ += ["add_volume_arguments", "load_volume_arg"]
