"""Read a DICOM series (single-frame files or enhanced multi-frame CT/MR) into a :class:`Volume`.

Pipeline: collect files (directories recursively) -> read every header (pixel data deferred)
-> group by SeriesInstanceUID -> pick one series -> check geometry (sizes, pixel spacing,
orientations, duplicate positions, missing slices, uniform spacing, gantry tilt) -> decode
pixels (compressed transfer syntaxes through pydicom's pylibjpeg plugins) -> apply
RescaleSlope/RescaleIntercept -> stack ``[Z, Y, X]`` sorted by position along the slice normal
(never by file name or InstanceNumber).

Every problem names the file(s) involved. Files that are not DICOM, have no pixel data or are
truncated make loading fail unless ``allow_incomplete``; then they are skipped with a warning,
and slices missing from the series are filled by linear interpolation of their neighbours
(recorded in ``Volume.source["interpolated_slices"]``). Gantry tilt is loaded exactly (the
affine is then sheared) and reported as a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medrecon.errors import DataError, UserError
from medrecon.volume import Volume

log = logging.getLogger("medrecon.io.dicom")

PathLike = str | os.PathLike
DICOMDIR_SOP = "1.2.840.10008.1.3.10"
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloat
_MAX_LISTED = 8
SOURCE_TAGS = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "StudyDescription",
    "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID",
    "PositionReferenceIndicator", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
    "Modality", "Manufacturer", "ManufacturerModelName", "BodyPartExamined", "PatientPosition",
    "KVP", "ConvolutionKernel", "MagneticFieldStrength", "SOPClassUID",
)


# What pydicom raises for pixel data it cannot decode: no decoder for the transfer syntax
# (RuntimeError, NotImplementedError), corrupt or truncated data (ValueError, OSError, EOFError),
# no pixel data or no file meta (AttributeError), a file that stopped being DICOM (InvalidDicomError).
PIXEL_DECODE_ERRORS = (RuntimeError, NotImplementedError, ValueError, OSError, EOFError,
                       AttributeError, InvalidDicomError)
# What reading a header value that does not parse raises (int('1A'), float('abc'), a missing
# or malformed multi-value, ...): the file is skipped and named, the folder scan goes on.
HEADER_VALUE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError,
                       OverflowError)

def names(paths: Sequence[Any], limit: int = _MAX_LISTED) -> str:
    """Comma-separated file names, shortened to ``limit`` with a count of the rest."""
    items = [str(p) for p in paths]
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" and {more} more" if more > 0 else "")


@dataclass
class Frame:
    """One 2D image: a single-frame file or one frame of a multi-frame file.

    ``ipp``: ImagePositionPatient (mm, LPS) of the first pixel; ``iop``: six direction
    cosines (row direction, then column direction); ``pixel_spacing``: (row spacing = dy,
    column spacing = dx) in mm.
    """
    path: Path
    frame: Optional[int]
    rows: int
    cols: int
    ipp: Optional[np.ndarray]
    iop: Optional[np.ndarray]
    pixel_spacing: Optional[tuple[float, float]]
    slope: float = 1.0
    intercept: float = 0.0
    sop_uid: str = ""
    thickness: Optional[float] = None

    @property
    def label(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame + 1})"


@dataclass
class SeriesInfo:
    """One series found on disk; ``index`` is its position in the listing (0-based)."""
    uid: str
    modality: str
    description: str
    number: Optional[int]
    frames: list[Frame] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    header: Optional[Dataset] = None
    problems: list[tuple[Path, str]] = field(default_factory=list)
    index: int = 0

    def line(self) -> str:
        num = f"#{self.number} " if self.number is not None else ""
        desc = f"'{self.description}'" if self.description else "(no description)"
        rows = {(f.rows, f.cols) for f in self.frames}
        size = ", ".join(f"{r}x{c}" for r, c in sorted(rows)) or "?"
        return (f"[{self.index}] {self.uid}  {self.modality}  {num}{desc}  "
                f"{len(self.files)} file(s), {len(self.frames)} image(s) {size}")


@dataclass
class DicomScan:
    """What a folder holds: image series, files that could not be used, skipped files."""
    series: list[SeriesInfo]
    problems: list[tuple[Path, str]]   # not DICOM / unreadable, not attributable to a series
    non_image: list[tuple[Path, str]]  # DICOM objects without images (SR, RTSTRUCT, ...)
    skipped: list[Path]                # DICOMDIR and hidden files
    unloadable: list[tuple[Path, str]] = field(default_factory=list)  # files of series
    # in which no image is usable (such a series is not listed; other series still load)

    def listing(self) -> str:
        return "\n".join("  " + s.line() for s in self.series)


def collect_files(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """Expand a file, a directory (recursively) or a list of both into sorted file paths."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise UserError("no DICOM input given (empty file list)")
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file())
            if not found:
                raise UserError(f"DICOM folder {p} contains no files")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"DICOM input {p} does not exist")
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def _float_list(value: Any, n: int) -> Optional[np.ndarray]:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _first(seq_owner: Optional[Dataset], seq: str, key: str) -> Any:
    if seq_owner is None or seq not in seq_owner or not seq_owner[seq].value:
        return None
    item = seq_owner[seq].value[0]
    return item.get(key)


def _frames_of(ds: Dataset, path: Path) -> list[Frame]:
    """The 2D images of one file with their geometry and rescale (per frame when enhanced)."""
    rows, cols = _number(ds, "Rows", int, path), _number(ds, "Columns", int, path)
    n_frames = _number(ds, "NumberOfFrames", int, path, 1)
    if rows < 1 or cols < 1 or n_frames < 1:
        raise DataError(f"{path}: Rows {rows}, Columns {cols}, NumberOfFrames {n_frames}: "
                        f"no pixels")
    sop = str(ds.get("SOPInstanceUID", ""))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    if per_frame is not None:
        if len(per_frame) != n_frames:
            raise DataError(f"{path}: PerFrameFunctionalGroupsSequence has {len(per_frame)} "
                            f"items but NumberOfFrames is {n_frames}")
        frames = []
        for i, item in enumerate(per_frame):
            def get(seq: str, key: str) -> Any:
                val = _first(item, seq, key)
                return _first(shared, seq, key) if val is None else val
            ps = get("PixelMeasuresSequence", "PixelSpacing")
            ps_arr = _float_list(ps, 2) if ps is not None else None
            slope = get("PixelValueTransformationSequence", "RescaleSlope")
            icpt = get("PixelValueTransformationSequence", "RescaleIntercept")
            thick = get("PixelMeasuresSequence", "SliceThickness")
            ipp = get("PlanePositionSequence", "ImagePositionPatient")
            iop = get("PlaneOrientationSequence", "ImageOrientationPatient")
            frames.append(Frame(
                path=path, frame=i, rows=rows, cols=cols,
                ipp=_float_list(ipp, 3) if ipp is not None else None,
                iop=_float_list(iop, 6) if iop is not None else None,
                pixel_spacing=None if ps_arr is None else (float(ps_arr[0]), float(ps_arr[1])),
                slope=float(slope) if slope is not None else 1.0,
                intercept=float(icpt) if icpt is not None else 0.0,
                sop_uid=f"{sop}#{i}", thickness=float(thick) if thick else None))
        return frames
    ps = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    ps_arr = _float_list(ps, 2) if ps is not None else None
    ipp = ds.get("ImagePositionPatient")
    iop = ds.get("ImageOrientationPatient")
    base = dict(rows=rows, cols=cols,
                iop=_float_list(iop, 6) if iop is not None else None,
                pixel_spacing=None if ps_arr is None else (float(ps_arr[0]), float(ps_arr[1])),
                slope=_number(ds, "RescaleSlope", float, path, 1.0),
                intercept=_number(ds, "RescaleIntercept", float, path, 0.0),
                thickness=_number(ds, "SliceThickness", float, path, None))
    if "DoseGridScaling" in ds and "RescaleSlope" not in ds:  # RT dose: value = stored * scaling
        base["slope"] = _number(ds, "DoseGridScaling", float, path, 1.0)
    if not (np.isfinite(base["slope"]) and np.isfinite(base["intercept"])):
        raise DataError(f"{path}: RescaleSlope/RescaleIntercept are not finite numbers")
    ipp0 = _float_list(ipp, 3) if ipp is not None else None
    if n_frames == 1:
        return [Frame(path=path, frame=None, sop_uid=sop, ipp=ipp0, **base)]
    offsets = _grid_frame_offsets(ds, n_frames, ipp0, base["iop"], path)
    if offsets is not None:  # RT dose and similar: frames along the normal of one plane
        normal = np.cross(base["iop"][:3], base["iop"][3:])
        return [Frame(path=path, frame=i, sop_uid=f"{sop}#{i}", ipp=ipp0 + off * normal, **base)
                for i, off in enumerate(offsets)]
    # legacy multi-frame without per-frame geometry: frames share one position
    return [Frame(path=path, frame=i, sop_uid=f"{sop}#{i}", ipp=None, **base)
            for i in range(n_frames)]


def _number(ds: Dataset, keyword: str, kind: type, path: Path, default: Any = ...) -> Any:
    """``kind(ds.keyword)``; ``default`` when absent or empty (required when no default).
    A value that does not parse is a DataError naming the element and the value."""
    raw = ds.get(keyword)
    if raw is None or raw == "":
        if default is ...:
            raise DataError(f"{path}: has no {keyword}")
        return default
    try:
        value = kind(raw)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: has an invalid {keyword} {str(raw)!r:.40}") from None
    if kind is float and not np.isfinite(value):
        raise DataError(f"{path}: has a non-finite {keyword} ({value})")
    return value


def _grid_frame_offsets(ds: Dataset, n_frames: int, ipp: Optional[np.ndarray],
                        iop: Optional[np.ndarray], path: Path) -> Optional[np.ndarray]:
    """Per-frame offsets (mm along the plane normal, relative to ImagePositionPatient) from
    GridFrameOffsetVector (RT dose), or None when the file has none. The vector is relative
    when its first value is 0; otherwise it holds each frame's position along the normal."""
    if "GridFrameOffsetVector" not in ds or ipp is None or iop is None:
        return None
    offsets = _float_list(ds.GridFrameOffsetVector, n_frames)
    if offsets is None:
        raise DataError(f"{path}: GridFrameOffsetVector must hold {n_frames} finite numbers "
                        f"(one per frame, NumberOfFrames = {n_frames})")
    if offsets[0] != 0.0:  # absolute: positions along the normal
        normal = np.cross(iop[:3], iop[3:])
        offsets = offsets - float(ipp @ normal)
    return offsets


def _pixel_problem(ds: Dataset, path: Path) -> Optional[str]:
    """Why a file's pixel data cannot be used (absent, colour, truncated), or None."""
    if not any(t in ds for t in _PIXEL_TAGS):
        return (f"has no pixel data (if it should have, the file is truncated: it ends after "
                f"{path.stat().st_size} bytes)")
    if _number(ds, "SamplesPerPixel", int, path, 1) != 1:
        return (f"is a colour image ({ds.get('PhotometricInterpretation', '?')}); medrecon "
                f"reads greyscale CT/MR")
    if str(getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID", "")) == DEFLATED:
        return None  # the file holds a compressed stream: its size says nothing about truncation
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    length = getattr(raw, "length", None)
    tell = getattr(raw, "value_tell", None)
    value = getattr(raw, "value", None)
    if length is not None and length != 0xFFFFFFFF:
        have = None
        if isinstance(value, (bytes, bytearray)):
            have = len(value)
        elif tell is not None:
            have = path.stat().st_size - tell
        if have is not None and have < length:
            return (f"is truncated: pixel data needs {length} bytes but the file holds "
                    f"{max(have, 0)}")
        needed = _pixel_bytes_needed(ds, path)
        if needed is not None and length < needed:
            return (f"has pixel data of {length} bytes but its header (Rows {ds.get('Rows')}, Columns "
                    f"{ds.get('Columns')}, {ds.get('NumberOfFrames') or 1} frame(s), "
                    f"{ds.get('BitsAllocated')} bits) needs {needed}: a damaged header")
    return None


def _pixel_bytes_needed(ds: Dataset, path: Path) -> Optional[int]:
    """Bytes of uncompressed pixel data the header describes (None when it does not say)."""
    try:
        rows, cols = int(ds.get("Rows")), int(ds.get("Columns"))
        bits = int(ds.get("BitsAllocated"))
    except (TypeError, ValueError):
        return None
    try:
        frames = _number(ds, "NumberOfFrames", int, path, 1) or 1
    except DataError:
        return None             # reported where the frames are read
    return (rows * cols * max(int(frames), 1) * bits + 7) // 8


def scan_dicom(paths: PathLike | Sequence[PathLike]) -> DicomScan:
    """Read every header under ``paths`` and group the images by SeriesInstanceUID."""
    files = collect_files(paths)
    by_uid: dict[str, SeriesInfo] = {}
    problems: list[tuple[Path, str]] = []
    non_image: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    for path in files:
        if path.name.startswith("."):
            skipped.append(path)
            continue
        try:
            ds = pydicom.dcmread(path, defer_size=1024)
        except InvalidDicomError:
            size = path.stat().st_size
            if is_dicom_file(path):
                why = "has a DICOM preamble but an unreadable header (truncated or damaged)"
            elif size < 132:
                why = f"is not a DICOM file (only {size} bytes: empty or truncated)"
            else:
                why = "is not a DICOM file (no DICM preamble or file meta)"
            problems.append((path, why))
            continue
        except Exception as exc:  # pydicom raises many types on damaged headers
            problems.append((path, f"is not readable as DICOM (truncated or damaged header: "
                                   f"{type(exc).__name__}: {exc})"))
            continue
        try:
            _sort_file(ds, path, by_uid, problems, non_image, skipped)
        except HEADER_VALUE_ERRORS as exc:  # a value that does not parse (e.g. IS '1A')
            problems.append((path, f"has an invalid header value ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else '?'})"))
    unloadable: list[tuple[Path, str]] = []
    for uid in [u for u, s in by_uid.items() if not s.frames]:  # nothing loadable in it
        unloadable += by_uid.pop(uid).problems
    series = sorted(by_uid.values(),
                    key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))
    for i, s in enumerate(series):
        s.index = i
    return DicomScan(series=series, problems=problems, non_image=non_image, skipped=skipped,
                     unloadable=unloadable)


def _sort_file(ds: Dataset, path: Path, by_uid: dict[str, SeriesInfo],
               problems: list[tuple[Path, str]], non_image: list[tuple[Path, str]],
               skipped: list[Path]) -> None:
    """File one read header under its series, the problems, the non-image objects or the
    skipped files."""
    meta_sop = str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))
    if meta_sop == DICOMDIR_SOP or "DirectoryRecordSequence" in ds:
        skipped.append(path)
        return
    if "Rows" not in ds or "Columns" not in ds:
        sop_name = getattr(ds.get("SOPClassUID"), "name", "")
        if any(t in ds for t in _PIXEL_TAGS):
            problems.append((path, "has pixel data but no Rows/Columns"))
        elif "Image Storage" in str(sop_name):
            problems.append((path, f"is truncated or damaged: a {sop_name} object without "
                                   f"Rows/Columns (the file ends after "
                                   f"{path.stat().st_size} bytes)"))
        else:
            non_image.append((path, describe_non_image(ds)))
        return
    uid = str(ds.get("SeriesInstanceUID", "") or "(no SeriesInstanceUID)")
    info = by_uid.get(uid)
    if info is None:
        num = ds.get("SeriesNumber")
        info = by_uid[uid] = SeriesInfo(
            uid=uid, modality=str(ds.get("Modality", "OT") or "OT"),
            description=str(ds.get("SeriesDescription", "") or ""),
            number=int(num) if num not in (None, "") else None, header=ds)
    info.files.append(path)
    problem = _pixel_problem(ds, path)
    if problem:
        info.problems.append((path, problem))
        return
    try:
        info.frames += _frames_of(ds, path)
    except DataError as exc:
        info.problems.append((path, str(exc).removeprefix(f"{path}: ")))
    except HEADER_VALUE_ERRORS as exc:
        info.problems.append((path, f"has an invalid header value ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else '?'})"))


def describe_non_image(ds: Dataset) -> str:
    """What a DICOM object without an image is, in words (for listings and warnings)."""
    sop = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
    sop_name = getattr(sop, "name", "") if sop else ""
    modality = str(ds.get("Modality", "") or "")
    parts = []
    if sop_name and sop_name != str(sop):
        parts.append(sop_name)
    elif sop:
        parts.append(f"SOP class {sop}")
    if modality:
        parts.append(f"modality {modality}")
    if not parts:
        keywords = [e.keyword or str(e.tag) for e in ds if e.tag.group != 0x0002][:6]
        return ("a DICOM data set without SOP class, modality or image (its elements: "
                + (", ".join(keywords) or "none") + ")")
    return "a DICOM object without an image: " + ", ".join(parts)


def choose_series(scan: DicomScan, series: Optional[str | int], where: str) -> SeriesInfo:
    """Pick the series named by UID or index; several without a choice is a UserError."""
    if not scan.series:
        details = [f"{p} {why}" for p, why in scan.problems + scan.unloadable + scan.non_image]
        nifti = [p for p, _ in scan.problems if str(p).lower().endswith((".nii", ".nii.gz"))]
        hint = f" (for NIfTI input pass the file itself, e.g. {nifti[0]})" if nifti else ""
        raise DataError(f"{where}: no DICOM image series found{hint}"
                        + (": " + "; ".join(details[:_MAX_LISTED]) if details else ""))
    if series is None:
        if len(scan.series) == 1:
            return scan.series[0]
        raise UserError(f"{where} holds {len(scan.series)} series; choose one with --series "
                        f"UID or --series INDEX:\n{scan.listing()}")
    if isinstance(series, int) or (isinstance(series, str) and series.isdigit()
                                   and "." not in series):
        idx = int(series)
        if 0 <= idx < len(scan.series):
            return scan.series[idx]
        raise UserError(f"{where}: series index {idx} out of range 0..{len(scan.series) - 1}:"
                        f"\n{scan.listing()}")
    for s in scan.series:
        if s.uid == str(series):
            return s
    raise UserError(f"{where}: no series with SeriesInstanceUID {series}; found:\n"
                    f"{scan.listing()}")


# Rounded ImagePositionPatient values (a few decimals, as many scanners write them) put each
# slice up to this fraction of the slice spacing off the uniform grid (warned, accepted), and
# its in-plane position up to this many mm off the straight stack line.
JITTER_TOLERANCE = 0.03
ROUNDING_MM = 0.1


def _fit_grid(d: np.ndarray, mult: np.ndarray) -> Optional[tuple[float, float]]:
    """Least-squares uniform grid through positions ``d`` with ``mult`` grid steps between
    neighbours: ``(spacing, largest deviation of a position from the grid)`` in mm."""
    grid = np.concatenate([[0.0], np.cumsum(mult)])
    if grid[-1] <= 0:
        return None
    slope, icpt = np.polyfit(grid, d, 1)
    if not slope > 0:
        return None
    return float(slope), float(np.abs(d - (icpt + slope * grid)).max())


@dataclass
class StackGeometry:
    """A sorted, checked slice stack: frames in z order and the 4x4 (z, y, x) -> LPS affine."""
    frames: list[Optional[Frame]]  # None where a missing slice will be interpolated
    affine: np.ndarray
    tilt_deg: float


def _group_labels(frames: Sequence[Frame], key: Any) -> str:
    groups: dict[Any, list[str]] = {}
    for f in frames:
        groups.setdefault(key(f), []).append(f.label)
    return "; ".join(f"{k}: {names(v, 3)}" for k, v in groups.items())


_WARNED: set[tuple] = set()


def _warn_once(frames: tuple, message: str, *args: Any) -> None:
    """Log a warning about a stack of frames once per process (a series checked by ``info``
    and loaded again, or re-checked after skipping files, is described once)."""
    key = (frames, message)
    if key in _WARNED:
        return
    _WARNED.add(key)
    log.warning(message, *args)


def check_geometry(frames: Sequence[Frame], spacing_tolerance: float = 0.01,
                   allow_missing: bool = False, where: str = "series") -> StackGeometry:
    """Sort frames along the slice normal and check that they form one regular stack.

    ``spacing_tolerance`` is relative: each gap may differ from the nominal gap (the
    smallest, when all gaps are whole multiples of it, else the median) by this fraction. Raises :class:`DataError` naming the files for mixed sizes, pixel spacings or
    orientations, missing geometry, duplicate positions, missing slices (unless
    ``allow_missing``), non-uniform spacing and slices off a straight line.
    """
    if not frames:
        raise DataError(f"{where}: no usable images")
    sizes = {(f.rows, f.cols) for f in frames}
    if len(sizes) > 1:
        raise DataError(f"{where}: mixed image sizes (rows x columns): "
                        + _group_labels(frames, lambda f: f"{f.rows}x{f.cols}"))
    spacings = {f.pixel_spacing for f in frames}
    if len(spacings) > 1:
        raise DataError(f"{where}: mixed PixelSpacing: "
                        + _group_labels(frames, lambda f: f.pixel_spacing))
    ps = frames[0].pixel_spacing
    if ps is None or min(ps) <= 0:
        if len(frames) > 1:
            raise DataError(f"{where}: no valid PixelSpacing in {names([f.label for f in frames])}")
        log.warning("%s has no PixelSpacing; assuming 1 mm pixels", frames[0].label)
        ps = (1.0, 1.0)
    dy, dx = ps
    no_geo = [f.label for f in frames if f.ipp is None or f.iop is None]
    if no_geo:
        if len(frames) == 1 or (len(no_geo) == len(frames)
                                and len({f.path for f in frames}) == 1):
            log.warning("%s has no ImagePositionPatient/ImageOrientationPatient; using a "
                        "default axial geometry (slices 1 mm apart)", frames[0].path)
            aff = np.array([[0, 0, dx, 0], [0, dy, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
            return StackGeometry(list(frames), aff, 0.0)
        raise DataError(f"{where}: cannot place slices without ImagePositionPatient and "
                        f"ImageOrientationPatient: {names(no_geo)}")
    iop0 = frames[0].iop
    assert iop0 is not None
    mixed = [f for f in frames if np.max(np.abs(f.iop - iop0)) > 1e-4]  # type: ignore[operator]
    if mixed:
        raise DataError(f"{where}: mixed orientations (ImageOrientationPatient): "
                        + _group_labels(frames, lambda f: tuple(round(float(v), 4) for v in f.iop)))
    row, col = iop0[:3], iop0[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 \
            or abs(row @ col) > 1e-3:
        raise DataError(f"{where}: ImageOrientationPatient {list(iop0)} in {frames[0].label} "
                        f"is not two orthonormal directions")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    pos = np.array([f.ipp @ normal for f in frames])  # type: ignore[operator]
    order = sorted(range(len(frames)), key=lambda i: (pos[i], str(frames[i].label)))
    sorted_frames = [frames[i] for i in order]
    d = pos[order]

    # duplicates: same position along the normal
    keep: list[Frame] = [sorted_frames[0]]
    kept_d = [d[0]]
    for f, dk in zip(sorted_frames[1:], d[1:]):
        if abs(dk - kept_d[-1]) < 1e-3:
            prev = keep[-1]
            if f.sop_uid and f.sop_uid == prev.sop_uid:
                log.warning("%s repeats SOPInstanceUID %s of %s; using one copy", f.label,
                            f.sop_uid, prev.label)
                continue
            hint = (" (one multi-frame file with several echoes, phases or time points per "
                    "position: 4D data is not supported)") if prev.path == f.path else ""
            raise DataError(f"{where}: duplicate slice position {dk:.3f} mm along the normal "
                            f"in {prev.label} and {f.label}{hint}")
        keep.append(f)
        kept_d.append(dk)
    d = np.array(kept_d)
    n = len(keep)
    ipps = np.array([f.ipp for f in keep])
    if n == 1:
        thick = keep[0].thickness or 1.0
        step = normal * thick
        stack: list[Optional[Frame]] = list(keep)
        tilt = 0.0
    else:
        gaps = np.diff(d)
        # nominal gap: the smallest one when every gap is a whole multiple of it (slices
        # missing), else the median (then the odd gaps are reported as non-uniform)
        r_min = gaps / gaps.min()
        if np.all(np.abs(r_min - np.rint(r_min)) <= spacing_tolerance * np.rint(r_min)):
            nominal = float(np.mean(gaps[np.rint(r_min) == 1]))
        else:
            nominal = float(np.median(gaps))
        ratio = gaps / nominal
        mult = np.rint(ratio)
        missing = [(i, int(m) - 1) for i, (r, m) in enumerate(zip(ratio, mult))
                   if m >= 2 and abs(r - m) <= spacing_tolerance * m]
        irregular = [i for i, r in enumerate(ratio)
                     if abs(r - 1) > spacing_tolerance and i not in {j for j, _ in missing}]
        if irregular:
            # rounding of ImagePositionPatient makes the gaps jitter while every position stays
            # close to one uniform grid; variable spacing or a stray slice moves them off it
            fitted = _fit_grid(d, np.maximum(mult, 1))
            jitter = max(JITTER_TOLERANCE, spacing_tolerance)
            if fitted is not None and fitted[1] <= jitter * fitted[0]:
                nominal, worst = fitted
                _warn_once(tuple(f.label for f in keep),
                           "%s: slice positions deviate from a uniform %.4g mm grid by up to "
                           "%.3g mm (%.2g %% of the spacing; gaps %.4g-%.4g mm), as rounded "
                           "ImagePositionPatient values do; using the fitted spacing", where,
                           nominal, worst, 100 * worst / nominal, gaps.min(), gaps.max())
                ratio = gaps / nominal
                mult = np.maximum(np.rint(ratio), 1)
                missing = [(i, int(m) - 1) for i, m in enumerate(mult) if m >= 2]
                irregular = []
        if irregular:
            desc = "; ".join(f"{gaps[i]:.4g} mm between {keep[i].label} and {keep[i + 1].label}"
                             for i in irregular[:4])
            raise DataError(f"{where}: non-uniform slice spacing (nominal {nominal:.4g} mm, "
                            f"tolerance {spacing_tolerance:.3g} relative; positions off a "
                            f"uniform grid by more than {100 * JITTER_TOLERANCE:.3g} % of the "
                            f"spacing, so not rounding jitter): {desc}")
        if missing and not allow_missing:
            desc = "; ".join(f"{m} slice(s) between {keep[i].label} and {keep[i + 1].label}"
                             for i, m in missing[:4])
            raise DataError(f"{where}: missing slices ({sum(m for _, m in missing)} in total, "
                            f"spacing {nominal:.4g} mm): {desc}")
        stack = []
        for i, f in enumerate(keep):
            stack.append(f)
            for j, m in missing:
                if j == i:
                    stack += [None] * m
        # in-plane offsets must be linear in the position: a straight (possibly tilted) stack
        grid = np.rint((d - d[0]) / nominal)
        inplane = ipps - np.outer(ipps @ normal, normal)
        A = np.stack([np.ones(n), grid], axis=1)
        coef, *_ = np.linalg.lstsq(A, inplane, rcond=None)
        resid = np.abs(A @ coef - inplane).max()
        if resid > max(0.05 * min(dx, dy), ROUNDING_MM) + 1e-3:
            worst = int(np.argmax(np.abs(A @ coef - inplane).max(axis=1)))
            raise DataError(f"{where}: slices do not lie on one straight stack (in-plane offset "
                            f"{resid:.3g} mm off the line at {keep[worst].label})")
        shift = coef[1]
        if float(np.linalg.norm(shift)) * max(n - 1, 1) <= ROUNDING_MM:
            # a shear smaller than position rounding over the whole stack is no gantry tilt
            shift = np.zeros_like(shift)
        step_normal = float(np.polyfit(grid, d, 1)[0])  # least squares: robust to jitter
        step = normal * step_normal + shift
        tilt = float(np.degrees(np.arctan2(np.linalg.norm(shift), step_normal)))
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = col * dy
    affine[:3, 2] = row * dx
    # origin: the first slice's position (for a stack, the fitted line at grid 0)
    affine[:3, 3] = keep[0].ipp if n == 1 else coef[0] + d[0] * normal
    return StackGeometry(stack, affine, tilt)


def _decode(frames: Sequence[Frame]) -> tuple[dict[int, np.ndarray], list[tuple[str, str]],
                                              dict[Path, Dataset]]:
    """Decode the pixels of ``frames``: {frame id: rescaled float32 [Y, X]}, failures, datasets."""
    by_file: dict[Path, list[int]] = {}
    for i, f in enumerate(frames):
        by_file.setdefault(f.path, []).append(i)
    images: dict[int, np.ndarray] = {}
    failures: list[tuple[str, str]] = []
    datasets: dict[Path, Dataset] = {}
    for path, idxs in by_file.items():
        ts = ""
        try:
            ds = pydicom.dcmread(path)
            ts = f" (transfer syntax {ds.file_meta.TransferSyntaxUID.name})"
            with _quiet_decoders():
                arr = ds.pixel_array
        except PIXEL_DECODE_ERRORS as exc:
            failures.append((str(path), f"pixel data could not be decoded{ts}: "
                                        f"{_one_line(exc)}"))
            continue
        bad = ~np.isfinite(arr) if arr.dtype.kind in "fc" else None
        if bad is not None and bad.any():
            failures.append((str(path), f"pixel data hold {int(bad.sum())} NaN/Inf value(s)"))
            continue
        datasets[path] = ds
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if n_frames == 1 and arr.ndim == 2:
            arr = arr[None]
        for i in idxs:
            f = frames[i]
            img = arr[f.frame or 0].astype(np.float64)
            images[i] = (img * f.slope + f.intercept).astype(np.float32)
    return images, failures, datasets


@contextlib.contextmanager
def _quiet_decoders() -> Iterator[None]:
    """pydicom logs every failed decoder plugin with a traceback before raising an exception
    that lists them all: keep the exception (:func:`_one_line`), drop the log records."""
    logger = logging.getLogger("pydicom.pixels.decoders.base")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (pydicom lists each decoder's failure on its own)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines).replace(":;", ":") or type(exc).__name__


def _source(ds: Dataset, files: Sequence[Path], where: str) -> dict[str, Any]:
    src: dict[str, Any] = {}
    for key in SOURCE_TAGS:
        val = ds.get(key)
        if val in (None, ""):
            continue
        if key in ("SeriesNumber",):
            src[key] = int(val)
        elif key in ("KVP", "MagneticFieldStrength"):
            try:
                src[key] = float(val)
            except (TypeError, ValueError):
                pass
        else:
            src[key] = str(val)
    src["path"] = where
    src["files"] = [str(p) for p in files]
    return src


def _display_window(ds: Dataset) -> Optional[tuple[float, float]]:
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        sfg = ds.get("SharedFunctionalGroupsSequence")
        if sfg:
            centre = _first(sfg[0], "FrameVOILUTSequence", "WindowCenter")
            width = _first(sfg[0], "FrameVOILUTSequence", "WindowWidth")
    if centre is None or width is None:
        return None
    try:
        c = float(centre[0] if isinstance(centre, (list, pydicom.multival.MultiValue)) else centre)
        w = float(width[0] if isinstance(width, (list, pydicom.multival.MultiValue)) else width)
    except (TypeError, ValueError):
        return None
    return (c - w / 2, c + w / 2) if w > 0 else None


def read_dicom(paths: PathLike | Sequence[PathLike], series: Optional[str | int] = None,
               allow_incomplete: bool = False, spacing_tolerance: float = 0.01) -> Volume:
    """Read one DICOM series into a :class:`Volume` (array ``[Z, Y, X]`` float32, CT in HU).

    paths: a directory (searched recursively), a file, or a list of files/directories.
    series: SeriesInstanceUID or 0-based index in the listing when several series are present.
    allow_incomplete: skip unusable files and interpolate missing slices instead of failing.
    spacing_tolerance: allowed relative deviation of each slice gap from the median gap.
    """
    where = str(paths) if isinstance(paths, (str, os.PathLike)) else \
        f"DICOM file list ({len(paths)} items)"
    scan = scan_dicom(paths)
    chosen = choose_series(scan, series, where)
    where_series = f"series {chosen.uid} in {where}"
    unusable = [(str(p), why) for p, why in scan.problems + chosen.problems]
    if unusable:
        msg = "; ".join(f"{p} {why}" for p, why in unusable[:_MAX_LISTED])
        more = len(unusable) - _MAX_LISTED
        msg += f"; and {more} more" if more > 0 else ""
        if not allow_incomplete:
            raise DataError(f"{where}: {len(unusable)} unusable file(s): {msg}. Remove them, or "
                            f"pass --allow-incomplete to load the rest of the series")
        log.warning("%s: skipping %d unusable file(s): %s", where, len(unusable), msg)
    for p, why in scan.non_image:
        log.info("%s: ignoring %s: %s", where, p, why)
    if scan.unloadable:
        log.warning("%s: skipping %d file(s) of other series without a usable image: %s", where,
                    len(scan.unloadable), "; ".join(f"{p} {why}" for p, why in
                                                   scan.unloadable[:_MAX_LISTED]))
    frames = list(chosen.frames)
    geo = check_geometry(frames, spacing_tolerance, allow_incomplete, where_series)
    present = [f for f in geo.frames if f is not None]
    images, failures, datasets = _decode(present)
    decode_failures = list(failures)
    if failures:
        msg = "; ".join(f"{p}: {why}" for p, why in failures[:_MAX_LISTED])
        if not allow_incomplete:
            raise DataError(f"{where_series}: {len(failures)} file(s) could not be decoded: "
                            f"{msg}. Pass --allow-incomplete to load the rest of the series")
        log.warning("%s: skipping %d undecodable file(s): %s", where_series, len(failures), msg)
        bad = {Path(p) for p, _ in failures}
        frames = [f for f in frames if f.path not in bad]
        geo = check_geometry(frames, spacing_tolerance, allow_incomplete, where_series)
        present = [f for f in geo.frames if f is not None]
        images, failures, datasets = _decode(present)
        if failures:
            raise DataError(f"{where_series}: decoding failed again: "
                            + "; ".join(f"{p}: {why}" for p, why in failures[:_MAX_LISTED]))
    stack: list[Optional[np.ndarray]] = []
    it = iter(range(len(present)))
    for f in geo.frames:
        stack.append(None if f is None else images[next(it)])
    interpolated = [k for k, img in enumerate(stack) if img is None]
    originals = [k for k, img in enumerate(stack) if img is not None]
    for k in interpolated:  # linear interpolation between the nearest present slices
        lo = max(j for j in originals if j < k)
        hi = min(j for j in originals if j > k)
        w = (k - lo) / (hi - lo)
        lo_img, hi_img = stack[lo], stack[hi]
        assert lo_img is not None and hi_img is not None
        stack[k] = ((1 - w) * lo_img + w * hi_img).astype(np.float32)
    if interpolated:
        log.warning("%s: %d missing slice(s) filled by linear interpolation at z index %s",
                    where_series, len(interpolated), interpolated)
    if geo.tilt_deg > 0.01:
        log.warning("%s: gantry tilt of %.2f degrees (slices sheared along the stack, first "
                    "file %s); geometry kept exactly in the affine", where_series,
                    geo.tilt_deg, present[0].path)
    array = np.stack(stack)  # type: ignore[arg-type]
    first_ds = datasets[present[0].path]
    modality = str(first_ds.get("Modality", "OT") or "OT")
    rescale_type = str(first_ds.get("RescaleType", "") or "")
    if modality == "CT" and rescale_type in ("", "HU"):
        units = "HU"
    else:
        units = "a.u."
    src = _source(first_ds, [f.path for f in present], where)
    if geo.tilt_deg > 0.01:
        src["gantry_tilt_deg"] = round(geo.tilt_deg, 4)
    if interpolated:
        src["interpolated_slices"] = interpolated
    skipped = [p for p, _ in unusable] + [p for p, _ in decode_failures]
    if skipped:
        src["skipped_files"] = skipped
    spacing = tuple(float(v) for v in np.linalg.norm(geo.affine[:3, :3], axis=0))
    return Volume(array=array, spacing=spacing, affine=geo.affine,  # type: ignore[arg-type]
                  modality=modality if modality in ("CT", "MR") else "OT", units=units,
                  window=_display_window(first_ds), source=src,
                  description=str(first_ds.get("SeriesDescription", "") or ""))


def list_series(paths: PathLike | Sequence[PathLike]) -> DicomScan:
    """Scan ``paths`` without decoding pixels (for ``medrecon info``)."""
    return scan_dicom(paths)


def is_dicom_file(path: PathLike) -> bool:
    """True when the file starts with the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


__all__ = ["Frame", "SeriesInfo", "DicomScan", "scan_dicom", "choose_series", "check_geometry",
           "read_dicom", "list_series", "collect_files", "is_dicom_file", "SOURCE_TAGS"]
