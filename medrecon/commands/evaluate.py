"""``medrecon evaluate``: PSNR/SSIM of a reconstruction against a reference, whole volume and per plane."""

from __future__ import annotations

import argparse
import json

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
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")


def run(args: argparse.Namespace) -> int:
    from medrecon.io import load_volume
    from medrecon.io.atomic import write_text_atomic
    from medrecon.metrics import format_table, volume_metrics

    ref = load_volume(args.reference)
    rec = load_volume(args.recon)
    if ref.array.shape != rec.array.shape:
        raise UserError(f"--recon {args.recon} has shape {rec.array.shape}, but --reference "
                        f"{args.reference} has shape {ref.array.shape}")
    data_range = args.data_range
    if data_range is None:
        data_range = float(np.max(ref.array) - np.min(ref.array))
    if not data_range > 0:
        raise UserError(f"data range must be positive (reference {args.reference} is constant?); "
                        f"pass --data-range")
    metrics = volume_metrics(rec.array, ref.array, data_range)
    print(format_table({"recon": metrics}))
    if args.json:
        write_text_atomic(args.json, json.dumps(metrics, indent=2) + "\n", overwrite=args.overwrite)
    return 0
