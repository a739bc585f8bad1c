"""Synthetic DICOM series for the I/O tests, written with pydicom.

File names and InstanceNumbers are deliberately shuffled (seeded) so that a reader sorting by
either instead of by position along the slice normal gets the wrong order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian,
                         MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def phantom_hu(shape: tuple[int, int, int] = (6, 12, 10), seed: int = 0) -> np.ndarray:
    """Integer-valued HU test volume [Z, Y, X]: air background, a water ellipse, bright dots
    placed differently on every slice (so a wrong slice order is detected)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    ell = ((yy - y / 2) / (0.4 * y)) ** 2 + ((xx - x / 2) / (0.4 * x)) ** 2 <= 1
    vol = np.full(shape, -1000.0)
    vol[:, ell] = 0.0
    for k in range(z):
        vol[k, rng.integers(0, y), rng.integers(0, x)] = 200.0 + 100.0 * k
    vol += rng.integers(-20, 21, size=shape)
    return vol.astype(np.float32)


def directions(iop: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return row, col, np.cross(row, col)


def oblique_iop(angle_deg: float = 20.0) -> tuple[float, ...]:
    """Row/column directions rotated by ``angle_deg`` about the L axis (an oblique stack)."""
    a = np.radians(angle_deg)
    row = (1.0, 0.0, 0.0)
    col = (0.0, float(np.cos(a)), float(np.sin(a)))
    return row + col


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _common(ds: Dataset, modality: str, series_uid: str, study_uid: str, for_uid: str,
            description: str, series_number: int) -> None:
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "MEDRECON-TEST"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyID = "1"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyDescription = "synthetic study"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.FrameOfReferenceUID = for_uid
    ds.Modality = modality
    ds.Manufacturer = "medrecon-tests"


def _pixels(ds: Dataset, stored: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.ascontiguousarray(stored.astype("<i2")).tobytes()


def write_series(out_dir: Path, volume: np.ndarray, spacing: Sequence[float] = (2.0, 0.5, 0.5),
                 origin: Sequence[float] = (-10.0, -20.0, 30.0),
                 iop: Sequence[float] = AXIAL, positions: Optional[Sequence[float]] = None,
                 tilt_deg: float = 0.0, modality: str = "CT",
                 series_uid: Optional[str] = None, study_uid: Optional[str] = None,
                 for_uid: Optional[str] = None, description: str = "synthetic series",
                 series_number: int = 1, slope: float = 1.0, intercept: float = -1024.0,
                 seed: int = 0, prefix: str = "IM", skip: Sequence[int] = ()) -> list[Path]:
    """Write ``volume`` [Z, Y, X] (HU for CT) as single-frame files; returns their paths in
    z order (the files are named in a shuffled order).

    positions: slice offsets along the normal in mm (default ``k * dz``); tilt_deg: shear of
    the stack along the column direction (gantry tilt); skip: z indices not written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    z, ny, nx = volume.shape
    dz, dy, dx = spacing
    row, col, normal = directions(iop)
    offs = np.arange(z) * dz if positions is None else np.asarray(positions, float)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    for_uid = for_uid or generate_uid()
    rng = np.random.default_rng(seed)
    names = rng.permutation(z)
    instances = rng.permutation(z) + 1
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    paths: list[Path] = []
    for k in range(z):
        if k in skip:
            continue
        sop_uid = generate_uid()
        ds = Dataset()
        ds.file_meta = _file_meta(sop_class, sop_uid)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        _common(ds, modality, series_uid, study_uid, for_uid, description, series_number)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = int(instances[k])
        shift = np.tan(np.radians(tilt_deg)) * offs[k] * col
        ipp = np.asarray(origin, float) + offs[k] * normal + shift
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
        ds.PixelSpacing = [f"{dy:g}", f"{dx:g}"]
        ds.SliceThickness = f"{dz:g}"
        if tilt_deg:
            ds.GantryDetectorTilt = f"{tilt_deg:g}"
        ds.Rows, ds.Columns = ny, nx
        if modality == "CT":
            ds.RescaleSlope = f"{slope:g}"
            ds.RescaleIntercept = f"{intercept:g}"
            ds.RescaleType = "HU"
            ds.WindowCenter, ds.WindowWidth = "40", "400"
            stored = np.rint((volume[k] - intercept) / slope)
        else:
            stored = np.rint(volume[k])
        _pixels(ds, stored)
        path = out_dir / f"{prefix}{names[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced_ct(path: Path, volume: np.ndarray, spacing: Sequence[float] = (2.0, 0.5, 0.5),
                      origin: Sequence[float] = (-10.0, -20.0, 30.0),
                      iop: Sequence[float] = AXIAL, frame_order: Optional[Sequence[int]] = None,
                      intercept: float = -1024.0,
                      frame_rescale: Optional[Sequence[tuple[float, float]]] = None) -> Path:
    """One enhanced multi-frame CT file; ``frame_order[i]`` is the z index stored as frame i
    (shuffled frames check that the reader sorts by per-frame position). The shared functional
    groups hold slope 1 and ``intercept``; ``frame_rescale[k]`` = ``(slope, intercept)`` of z
    index ``k`` puts a per-frame PixelValueTransformationSequence in every frame, which overrides
    the shared one (stored values ``rint((HU - intercept) / slope)``)."""
    z, ny, nx = volume.shape
    dz, dy, dx = spacing
    row, col, normal = directions(iop)
    order = list(range(z)) if frame_order is None else list(frame_order)
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(EnhancedCTImageStorage, sop_uid)
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = sop_uid
    _common(ds, "CT", generate_uid(), generate_uid(), generate_uid(), "enhanced synthetic", 7)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = z
    ds.Rows, ds.Columns = ny, nx
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [f"{dy:g}", f"{dx:g}"]
    pm.SliceThickness = f"{dz:g}"
    shared.PixelMeasuresSequence = DicomSequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
    shared.PlaneOrientationSequence = DicomSequence([po])
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = "1", f"{intercept:g}", "HU"
    shared.PixelValueTransformationSequence = DicomSequence([pvt])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in order:
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [f"{v:.6f}" for v in np.asarray(origin) + k * dz * normal]
        item.PlanePositionSequence = DicomSequence([pp])
        if frame_rescale is not None:
            own = Dataset()
            own.RescaleSlope, own.RescaleIntercept = (f"{v:g}" for v in frame_rescale[k])
            own.RescaleType = "HU"
            item.PixelValueTransformationSequence = DicomSequence([own])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    rescale = [(1.0, intercept)] * z if frame_rescale is None else list(frame_rescale)
    _pixels(ds, np.stack([np.rint((volume[k] - rescale[k][1]) / rescale[k][0]) for k in order]))
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def truncate(path: Path, keep_fraction: float = 0.6, drop_bytes: Optional[int] = None) -> Path:
    """Cut a file to ``keep_fraction`` of its bytes, or drop its last ``drop_bytes`` (a
    broken download)."""
    data = Path(path).read_bytes()
    keep = len(data) - drop_bytes if drop_bytes is not None else int(len(data) * keep_fraction)
    Path(path).write_bytes(data[:keep])
    return Path(path)


def read_header(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)
