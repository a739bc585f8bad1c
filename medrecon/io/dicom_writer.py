"""Write a reconstruction as a new derived DICOM series (one file per slice, int16 + rescale).

- Fresh SeriesInstanceUID and SOPInstanceUIDs (``pydicom.uid.generate_uid``); patient and
  study identity and the FrameOfReferenceUID are copied from the reference series when given
  (else from ``volume.source``; else a new anonymous study).
- ImageType ``DERIVED\\SECONDARY``; SeriesDescription names the method and the task.
- Per-slice geometry from the volume's affine (ImagePositionPatient, ImageOrientationPatient,
  PixelSpacing, SliceThickness), so the series reads back with the same affine. (A volume
  whose slice axis points against the row x column normal, possible for NIfTI input, reads
  back with its slices in reverse order: every voxel keeps its patient position.)
- CT is written in HU (window01 or 1/mm volumes are converted first) with slope 1 when the
  HU range fits int16 (error <= 0.5 HU), otherwise with a slope covering the range; MR and
  other data use a slope mapping the volume's range onto int16.
- Never writes into (or above) an input directory; refuses a non-empty output directory
  unless ``overwrite``; writes into a temporary directory and renames (atomic per file, and
  atomic as a whole when the output directory is new).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, MRImageStorage,
                         PYDICOM_IMPLEMENTATION_UID, SecondaryCaptureImageStorage, generate_uid)

import medrecon
from medrecon.errors import UserError
from medrecon.io.outputs import new_temp_dir
from medrecon.volume import Volume

FILE_PATTERN = "medrecon_{index:05d}.dcm"
_CREATOR = "medrecon"
_IDENTITY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
             "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "StudyDescription",
             "AccessionNumber", "ReferringPhysicianName")
_INT16 = (-32768, 32767)


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


def _input_dirs(reference: Optional[Volume], volume: Volume,
                input_dirs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(input directories, folders holding input files) that the output must keep out of."""
    dirs = [Path(d) for d in input_dirs]
    file_parents: list[Path] = []
    for vol in (reference, volume):
        if vol is None:
            continue
        src = vol.source.get("path")
        if src:
            p = Path(src)
            (dirs if p.is_dir() else file_parents).append(p if p.is_dir() else p.parent)
        file_parents += [Path(f).parent for f in vol.source.get("files", [])]
    return ([d.resolve() for d in dirs if str(d)],
            sorted({d.resolve() for d in file_parents if str(d)}))


def check_output_dir(out_dir: Path, inputs: Sequence[Path], overwrite: bool,
                     file_parents: Sequence[Path] = ()) -> None:
    """Refuse an output directory that is, contains or lies inside an input directory, that
    is a folder holding input files, or that already holds files (unless ``overwrite``)."""
    out = out_dir.resolve()
    for d in inputs:
        if _inside(out, d):
            raise UserError(f"DICOM output directory {out_dir} is inside the input directory "
                            f"{d}; choose a directory outside your input data")
        if _inside(d, out):
            raise UserError(f"DICOM output directory {out_dir} contains the input directory "
                            f"{d}; choose a separate directory")
    for d in file_parents:
        if out == d:
            raise UserError(f"DICOM output directory {out_dir} holds input files; choose a "
                            f"separate directory")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"DICOM output {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"DICOM output directory {out_dir} is not empty; pass overwrite "
                        f"(--overwrite) to replace a previous medrecon series there")


def _stored_values(hu_or_values: np.ndarray, ct: bool) -> tuple[np.ndarray, float, float]:
    """int16 stored values, slope, intercept with ``value = stored * slope + intercept``."""
    lo, hi = float(hu_or_values.min()), float(hu_or_values.max())
    if ct and lo >= _INT16[0] and hi <= _INT16[1]:
        slope, intercept = 1.0, 0.0
    else:
        span = max(hi - lo, 1e-6)
        slope = span / (_INT16[1] - _INT16[0] - 2)
        intercept = lo - (_INT16[0] + 1) * slope
    stored = np.rint((hu_or_values.astype(np.float64) - intercept) / slope)
    return np.clip(stored, *_INT16).astype(np.int16), slope, intercept


def _ds_str(v: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    s = f"{v:.10g}"
    if len(s) > 16:
        s = f"{v:.6e}"
    return s


def _prepare(volume: Volume) -> tuple[np.ndarray, str, bool]:
    """The values to store, the RescaleType, and whether the series is CT in HU."""
    vol = volume
    if vol.units == "window01":
        vol = vol.from_window()
    data = np.abs(vol.array) if np.iscomplexobj(vol.array) else vol.array
    if vol.modality == "CT" and vol.units in ("HU", "1/mm"):
        if vol.units == "1/mm":
            data = vol.with_array(data).to_units("HU").array
        return data, "HU", True
    return data, "US", False


def write_dicom_series(volume: Volume, out_dir: str | os.PathLike,
                       reference: Optional[Volume] = None, method: str = "recon",
                       task: str = "", overwrite: bool = False,
                       input_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Write ``volume`` as a derived DICOM series into ``out_dir``; return the file paths in
    z order. ``reference``: the series the reconstruction came from (identity source);
    ``input_dirs``: further directories that must never be written into."""
    out_dir = Path(out_dir)
    inputs, file_parents = _input_dirs(reference, volume, input_dirs)
    check_output_dir(out_dir, inputs, overwrite, file_parents)
    data, rescale_type, is_ct = _prepare(volume)
    stored, slope, intercept = _stored_values(data, is_ct)
    ident = dict(volume.source)
    if reference is not None:
        ident.update({k: v for k, v in reference.source.items() if k in _IDENTITY
                      or k in ("FrameOfReferenceUID", "SeriesNumber", "SeriesInstanceUID",
                               "SOPClassUID")})
    modality = volume.modality
    sop_class = {"CT": CTImageStorage, "MR": MRImageStorage}.get(modality,
                                                                  SecondaryCaptureImageStorage)
    series_uid = generate_uid()
    study_uid = str(ident.get("StudyInstanceUID") or generate_uid())
    for_uid = str(ident.get("FrameOfReferenceUID") or generate_uid())
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ref_series = (reference or volume).source.get("SeriesInstanceUID")
    ref_number = ident.get("SeriesNumber") if reference is not None else None
    series_number = int(ref_number) + 1000 if isinstance(ref_number, int) else 9001
    aff = volume.affine
    dz, dy, dx = volume.spacing
    row_dir = aff[:3, 2] / dx
    col_dir = aff[:3, 1] / dy
    normal = np.cross(row_dir, col_dir)
    desc = f"medrecon {method}" + (f" {task}" if task else "")
    window = _window_for(volume, data, is_ct)

    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = new_temp_dir(out_dir)  # honours the umask (mkdtemp would make it private)
    try:
        names: list[str] = []
        for k in range(volume.shape[0]):
            ds = _slice_dataset(sop_class, modality)
            for key in _IDENTITY:
                if ident.get(key) not in (None, ""):
                    setattr(ds, key, ident[key])
            if "PatientID" not in ds:
                ds.PatientID, ds.PatientName = "ANONYMOUS", "Anonymous^medrecon"
            ds.StudyInstanceUID = study_uid
            ds.StudyDate = ds.get("StudyDate", date)
            ds.StudyTime = ds.get("StudyTime", time)
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_number
            ds.SeriesDescription = desc[:64]
            ds.SeriesDate, ds.SeriesTime = date, time
            ds.ContentDate, ds.ContentTime = date, time
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            ds.DerivationDescription = (f"Reconstructed by medrecon {medrecon.__version__} "
                                        f"with {method}" + (f" ({task})" if task else ""))[:1024]
            if ref_series:
                item = Dataset()
                item.SeriesInstanceUID = ref_series
                ds.ReferencedSeriesSequence = DicomSequence([item])
            ds.InstanceNumber = k + 1
            ipp = aff[:3, 3] + k * aff[:3, 0]
            ds.ImagePositionPatient = [_ds_str(v) for v in ipp]
            ds.ImageOrientationPatient = [_ds_str(v) for v in np.concatenate([row_dir, col_dir])]
            ds.PixelSpacing = [_ds_str(dy), _ds_str(dx)]
            ds.SliceThickness = _ds_str(abs(aff[:3, 0] @ normal))
            ds.SpacingBetweenSlices = _ds_str(abs(aff[:3, 0] @ normal))
            ds.SliceLocation = _ds_str(float(ipp @ normal))
            ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
            ds.RescaleSlope, ds.RescaleIntercept = _ds_str(slope), _ds_str(intercept)
            ds.RescaleType = rescale_type
            if window is not None:
                ds.WindowCenter = _ds_str((window[0] + window[1]) / 2)
                ds.WindowWidth = _ds_str(window[1] - window[0])
            ds.PixelData = np.ascontiguousarray(stored[k].astype("<i2")).tobytes()
            name = FILE_PATTERN.format(index=k + 1)
            ds.save_as(tmp_dir / name, enforce_file_format=True)
            names.append(name)
        return _publish(tmp_dir, out_dir, names, overwrite)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _window_for(volume: Volume, data: np.ndarray, is_ct: bool) -> Optional[tuple[float, float]]:
    if volume.units == "window01" and volume.window is not None:
        return volume.window
    if volume.window is not None and volume.units in ("HU", "a.u."):
        return volume.window
    if is_ct:
        return (-160.0, 240.0)
    lo, hi = np.percentile(data, [0.5, 99.5])
    return (float(lo), float(hi)) if hi > lo else None


def _slice_dataset(sop_class: str, modality: str) -> Dataset:
    sop_uid = generate_uid()
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDRECON_{medrecon.__version__}"[:16]
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality = modality
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Manufacturer = _CREATOR
    ds.SoftwareVersions = f"{_CREATOR} {medrecon.__version__}"
    if sop_class == SecondaryCaptureImageStorage:
        ds.ConversionType = "WSD"
    if modality == "MR":
        ds.ScanningSequence, ds.SequenceVariant = "RM", "NONE"
        ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    return ds


def is_medrecon_file(path: Path) -> bool:
    """True for a DICOM file this writer made (Manufacturer "medrecon")."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError,
            KeyError, IndexError, OverflowError):
        return False
    return str(ds.get("Manufacturer", "")) == _CREATOR


def medrecon_dicom_only(path: Path) -> Optional[str]:
    """``accept`` for a DICOM output folder (:class:`medrecon.io.outputs.OutputPlan`): only DICOM
    files written by medrecon may be replaced."""
    return None if is_medrecon_file(path) else "a file medrecon did not write"


def _publish(tmp_dir: Path, out_dir: Path, names: list[str], overwrite: bool) -> list[Path]:
    """Move the finished files into place: rename the directory when new; otherwise replace
    file by file and remove earlier medrecon slices the new series does not overwrite."""
    if not out_dir.exists():
        try:
            os.rename(tmp_dir, out_dir)
            return [out_dir / n for n in names]
        except OSError:
            out_dir.mkdir(parents=True, exist_ok=True)
    if not overwrite and any(out_dir.iterdir()):
        raise UserError(f"DICOM output directory {out_dir} became non-empty while writing")
    stale = [p for p in out_dir.glob("medrecon_*.dcm") if p.name not in set(names)
             and is_medrecon_file(p)]
    for n in names:
        os.replace(tmp_dir / n, out_dir / n)
    for p in stale:
        p.unlink()
    return [out_dir / n for n in names]


__all__ = ["write_dicom_series", "check_output_dir", "is_medrecon_file", "FILE_PATTERN"]
