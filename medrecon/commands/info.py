"""``medrecon info PATH``: what a volume, a DICOM folder or a measurement file holds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from medrecon.errors import UserError
from medrecon.io.jsonio import json_text

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
            "source": {k: v for k, v in vol.source.items() if k != "files"},
            "priors": _volume_priors(vol.modality, vol.units, vol.spacing, vol.shape)}


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
    print("  " + info["priors"])


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
                "gantry_tilt_deg": round(geo.tilt_deg, 4),
                "priors": _volume_priors(series.modality, "HU" if series.modality == "CT" else "a.u.",
                                         dummy.spacing, (len(geo.frames), first.rows, first.cols))})
    return out


def _dicom(path: Path, args: argparse.Namespace) -> int:
    from medrecon.io import load_volume
    from medrecon.io.dicom_reader import scan_dicom
    scan = scan_dicom(path)
    if not scan.series and not scan.non_image:
        from medrecon.io.dicom_reader import choose_series
        choose_series(scan, None, str(path))  # raises: no image series, naming every file
    series = [_series_geometry(s, args.spacing_tolerance) for s in scan.series]
    report: dict[str, Any] = {
        "kind": "dicom", "path": str(path), "series": series,
        "unusable_files": [f"{p} {why}" for p, why in scan.problems + scan.unloadable],
        "non_image_objects": [f"{p}: {why}" for p, why in scan.non_image],
        "skipped": [str(p) for p in scan.skipped]}
    vol = None
    if args.series is not None:
        vol = load_volume(path, series=args.series, allow_incomplete=args.allow_incomplete,
                          spacing_tolerance=args.spacing_tolerance)
        report["loaded"] = _volume_info(vol)
    if args.json:
        print(json_text(_with_provenance(report, path, args), default=str))
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
            print(f"    {s['priors']}")
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


def prior_fit(modality: str, units: str, pixel_spacing) -> str:
    """One sentence: the shipped prior a diffusion method would use for such data, or why none fits."""
    from medrecon.errors import UserError
    from medrecon.prior.catalog import default_prior, fitting_priors

    if modality not in ("CT", "MR"):
        return (f"priors: modality {modality!r} is not CT or MR; declare it (--modality) to choose a prior")
    try:
        choice = default_prior(modality, units, pixel_spacing)
    except UserError as exc:
        return f"priors: {exc}"
    others = [n for n in fitting_priors(modality, units, pixel_spacing) if n != choice.name]
    also = f" (also fits: {', '.join(others)})" if others else ""
    return f"priors: {choice.name} is the default for dds/mbir: {choice.reason}{also}"


def _measurement_priors(m) -> str:
    from medrecon.prior.catalog import measurement_pixel_spacing
    from medrecon.units import data_modality

    units = ((m.attrs or {}).get("volume") or {}).get("units", "a.u." if m.task != "cs-mri" else "normalised")
    return prior_fit(data_modality(m.task), units, measurement_pixel_spacing(m))


RESAMPLED_SIZES = (512, 384, 320, 256, 192, 160, 128, 96, 64)


def _volume_priors(modality: str, units: str, spacing_zyx, shape_zyx) -> str:
    """Which shipped prior fits a volume as it is, else after which ``--size N`` resampling."""
    import math

    from medrecon.prior.card import read_card
    from medrecon.prior.catalog import DEFAULT_PRIORS, _shipped_dir, shipped_priors, spacing_fits

    units = "HU" if units in ("HU", "1/mm", "window01") and modality == "CT" else units
    dy, dx = float(spacing_zyx[1]), float(spacing_zyx[2])
    spacing, width = math.sqrt(dy * dx), max(int(shape_zyx[1]), int(shape_zyx[2]))
    text = prior_fit(modality, units, spacing)
    if not text.startswith("priors: no shipped prior fits") or units == "a.u." and modality == "CT":
        return text
    for name in (n for n in DEFAULT_PRIORS.get(modality, ()) if n in shipped_priors()):
        card = read_card(_shipped_dir() / name)
        for size in (n for n in RESAMPLED_SIZES if n < width):
            if spacing_fits(card, spacing * width / size):
                return (f"priors: none fits at {spacing:.3g} mm pixels; {name} fits after resampling to "
                        f"{size} x {size} (simulate --size {size}: {spacing * width / size:.3g} mm pixels)")
    return text


def _measurement(path: Path, args: argparse.Namespace) -> int:
    as_json = args.json
    from medrecon.io import load_measurement
    m = load_measurement(path)
    report = {"kind": "measurement", "path": str(path), "task": m.task,
              "data_shape": list(m.data.shape), "data_dtype": str(m.data.dtype),
              "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in m.arrays.items()},
              "geometry": m.geometry, "attrs": m.attrs, "priors": _measurement_priors(m)}
    if as_json:
        print(json_text(_with_provenance(report, path, args), default=str))
        return 0
    print(f"{path}: {m.summary()}")
    if m.geometry:
        print("  geometry: " + json_text(m.geometry, indent=None)[:2000])
    for key, val in m.attrs.items():
        if key == "options" and isinstance(val, dict):
            from medrecon.tasks import task_options
            val = task_options(m.task, val)
        print(f"  {key}: {json_text(val, indent=None)[:200]}")
    print("  " + report["priors"])
    return 0


def run(args: argparse.Namespace) -> int:
    from medrecon.io import load_volume
    from medrecon.io.measurements import is_measurement_file
    from medrecon.io.nifti import is_nifti_path
    from medrecon.io.nrrd import is_nrrd_path

    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.is_file() and (is_nifti_path(path) or is_nrrd_path(path)):
        vol = load_volume(path)
        info = _volume_info(vol)
        if args.json:
            print(json_text(_with_provenance({**info, "path": str(path)}, path, args), default=str))
        else:
            print(f"{'NIfTI' if is_nifti_path(path) else 'NRRD'} {path}:")
            _print_volume(info, vol)
        return 0
    if path.is_file() and (is_measurement_file(path)
                           or path.suffix.lower() in (".h5", ".hdf5")):
        return _measurement(path, args)  # not HDF5: a one-line error naming the file
    return _dicom(path, args)
