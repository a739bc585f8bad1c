"""``medrecon info PATH``: what a volume, a DICOM folder or a measurement file holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.errors import UserError

NAME = "info"
HELP = ("Describe a NIfTI volume, a DICOM folder or file (every series found: size, spacing, "
        "orientation, modality, problems) or an HDF5 measurement file (task, shapes, geometry).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH",
                   help="NIfTI file (.nii/.nii.gz), DICOM folder or file, or measurement file (.h5)")
    p.add_argument("--series", default=None, metavar="UID|INDEX",
                   help="DICOM: also load this series (decodes its pixels) and print its "
                        "intensity range and affine")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="with --series: skip unusable files and interpolate missing slices")
    p.add_argument("--spacing-tolerance", type=float, default=0.01, metavar="FRACTION",
                   help="allowed relative deviation of DICOM slice gaps from the nominal gap")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _affine_lines(affine: np.ndarray) -> list[str]:
    return ["  affine (z, y, x) -> LPS mm:"] + [
        "    [" + ", ".join(f"{v:10.4f}" for v in row) + "]" for row in affine]


def _volume_info(vol: Any) -> dict[str, Any]:
    arr = np.abs(vol.array) if np.iscomplexobj(vol.array) else vol.array
    return {"kind": "volume", "shape_zyx": list(vol.shape), "spacing_zyx_mm": list(vol.spacing),
            "orientation_xyz": vol.orientation_codes(), "modality": vol.modality,
            "units": vol.units, "window": list(vol.window) if vol.window else None,
            "dtype": str(vol.array.dtype), "min": float(arr.min()), "max": float(arr.max()),
            "affine_lps": np.round(vol.affine, 6).tolist(), "description": vol.description,
            "source": {k: v for k, v in vol.source.items() if k != "files"}}


def _print_volume(info: dict[str, Any], vol: Any) -> None:
    print(vol.summary())
    if vol.description:
        print(f"  description: {vol.description}")
    for key in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
                "gantry_tilt_deg", "interpolated_slices"):
        if key in vol.source:
            print(f"  {key}: {vol.source[key]}")
    for line in _affine_lines(vol.affine):
        print(line)


def _series_geometry(series: Any, tolerance: float) -> dict[str, Any]:
    from medrecon.errors import DataError
    from medrecon.io.dicom_reader import check_geometry
    out: dict[str, Any] = {"index": series.index, "uid": series.uid,
                           "modality": series.modality, "description": series.description,
                           "series_number": series.number, "files": len(series.files),
                           "images": len(series.frames),
                           "problems": [f"{p} {why}" for p, why in series.problems]}
    try:
        geo = check_geometry(series.frames, tolerance, allow_missing=False,
                             where=f"series {series.uid}")
    except DataError as exc:
        out["geometry_error"] = str(exc)
        return out
    from medrecon.volume import Volume
    first = series.frames[0]
    dummy = Volume(np.zeros((1, 1, 1), np.float32),
                   spacing=tuple(np.linalg.norm(geo.affine[:3, :3], axis=0)), affine=geo.affine)
    out.update({"shape_zyx": [len(geo.frames), first.rows, first.cols],
                "spacing_zyx_mm": [round(float(s), 6) for s in dummy.spacing],
                "orientation_xyz": dummy.orientation_codes(),
                "gantry_tilt_deg": round(geo.tilt_deg, 4)})
    return out


def _dicom(path: Path, args: argparse.Namespace) -> int:
    from medrecon.io import load_volume
    from medrecon.io.dicom_reader import scan_dicom
    scan = scan_dicom(path)
    series = [_series_geometry(s, args.spacing_tolerance) for s in scan.series]
    report: dict[str, Any] = {
        "kind": "dicom", "path": str(path), "series": series,
        "unusable_files": [f"{p} {why}" for p, why in scan.problems],
        "non_image_objects": [f"{p}: {why}" for p, why in scan.non_image],
        "skipped": [str(p) for p in scan.skipped]}
    vol = None
    if args.series is not None:
        vol = load_volume(path, series=args.series, allow_incomplete=args.allow_incomplete,
                          spacing_tolerance=args.spacing_tolerance)
        report["loaded"] = _volume_info(vol)
    if args.json:
        print(json.dumps(_with_provenance(report, path, args), indent=2, default=str))
        return 0
    print(f"DICOM {path}: {len(series)} image series")
    for s in series:
        num = f"#{s['series_number']} " if s["series_number"] is not None else ""
        desc = f"'{s['description']}'" if s["description"] else "(no description)"
        print(f"[{s['index']}] {s['uid']}  {s['modality']}  {num}{desc}  {s['files']} file(s), "
              f"{s['images']} image(s)")
        if "shape_zyx" in s:
            dz, dy, dx = s["spacing_zyx_mm"]
            tilt = f", gantry tilt {s['gantry_tilt_deg']:.2f} deg" \
                if s["gantry_tilt_deg"] > 0.01 else ""
            print(f"    [Z, Y, X] = {s['shape_zyx']}, spacing (dz, dy, dx) = ({dz:.4g}, "
                  f"{dy:.4g}, {dx:.4g}) mm, index axes x,y,z -> {s['orientation_xyz']}{tilt}")
        else:
            print(f"    geometry problem: {s['geometry_error']}")
        for prob in s["problems"]:
            print(f"    unusable: {prob}")
    for line in report["unusable_files"]:
        print(f"unusable: {line}")
    for line in report["non_image_objects"]:
        print(f"not an image: {line}")
    if vol is not None:
        print("loaded series:")
        _print_volume(report["loaded"], vol)
    elif len(series) > 1:
        print("choose a series for other commands with --series UID or --series INDEX")
    return 0


def _with_provenance(report: dict, path: Path, args: argparse.Namespace) -> dict:
    from medrecon.provenance import provenance
    return {**report, "provenance": provenance(inputs=[path], command=getattr(args, "command_line", None))}


def _measurement(path: Path, args: argparse.Namespace) -> int:
    as_json = args.json
    from medrecon.io import load_measurement
    m = load_measurement(path)
    report = {"kind": "measurement", "path": str(path), "task": m.task,
              "data_shape": list(m.data.shape), "data_dtype": str(m.data.dtype),
              "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in m.arrays.items()},
              "geometry": m.geometry, "attrs": m.attrs}
    if as_json:
        print(json.dumps(_with_provenance(report, path, args), indent=2, default=str))
        return 0
    print(f"{path}: {m.summary()}")
    if m.geometry:
        print("  geometry: " + json.dumps(m.geometry, default=str)[:2000])
    for key, val in m.attrs.items():
        print(f"  {key}: {json.dumps(val, default=str)[:200]}")
    return 0


def run(args: argparse.Namespace) -> int:
    from medrecon.io import load_volume
    from medrecon.io.measurements import is_measurement_file
    from medrecon.io.nifti import is_nifti_path

    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.is_file() and is_nifti_path(path):
        vol = load_volume(path)
        info = _volume_info(vol)
        if args.json:
            print(json.dumps(_with_provenance({**info, "path": str(path)}, path, args), indent=2, default=str))
        else:
            print(f"NIfTI {path}:")
            _print_volume(info, vol)
        return 0
    if path.is_file() and is_measurement_file(path):
        return _measurement(path, args)
    return _dicom(path, args)
