"""``medrecon evaluate``: PSNR/SSIM of a reconstruction against a reference, whole volume and per plane."""

from __future__ import annotations

import argparse

import numpy as np

from medrecon.errors import UserError

NAME = "evaluate"
HELP = ("Compare a reconstruction with a reference volume: PSNR and SSIM over the whole volume and per "
        "plane (axial, coronal, sagittal; averaged over the slices of each plane).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", required=True, help="reference VOLUME (NIfTI file or DICOM series directory)")
    p.add_argument("--recon", required=True, help="reconstruction VOLUME (NIfTI file or DICOM series directory)")
    p.add_argument("--data-range", type=float, default=None,
                   help="intensity range for PSNR/SSIM (default: max - min of the reference)")
    p.add_argument("--json", default=None, metavar="OUT.json",
                   help='write {"psnr", "ssim", "planes": {"axial": {"psnr", "ssim"}, ...}} to this file')
    p.add_argument("--ignore-geometry", action="store_true",
                   help="compare the voxel arrays even when the two volumes' affines (voxel size, "
                        "orientation, origin) differ")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")


def run(args: argparse.Namespace) -> int:
    from medrecon.io import load_volume
    from medrecon.io.jsonio import write_json
    from medrecon.io.outputs import OutputPlan
    from medrecon.metrics import format_table, volume_metrics
    from medrecon.volume import geometry_mismatch

    plan = OutputPlan(overwrite=args.overwrite)
    plan.add_input(args.reference, "--reference")
    plan.add_input(args.recon, "--recon")
    out_json = plan.add_file(args.json, "--json") if args.json else None
    ref = load_volume(args.reference)
    rec = load_volume(args.recon)
    if ref.array.shape != rec.array.shape:
        raise UserError(f"--recon {args.recon} has shape {rec.array.shape}, but --reference "
                        f"{args.reference} has shape {ref.array.shape}")
    why = geometry_mismatch(ref.affine, rec.affine)
    if why and not args.ignore_geometry:
        raise UserError(f"--recon {args.recon} and --reference {args.reference} are on different "
                        f"voxel grids ({why}); resample one onto the other, or pass "
                        f"--ignore-geometry to compare the arrays as stored")
    data_range = args.data_range
    if data_range is None:
        data_range = float(np.max(ref.array) - np.min(ref.array))
    if not (np.isfinite(data_range) and data_range > 0):
        raise UserError(f"data range must be a positive number (reference {args.reference} is "
                        f"constant?); pass --data-range")
    with plan.open() as staged:
        metrics = volume_metrics(rec.array, ref.array, data_range)
        if out_json is not None:
            write_json(staged.path(out_json), metrics)
    print(format_table({"recon": metrics}))
    return 0
