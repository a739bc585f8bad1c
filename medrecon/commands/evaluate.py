"""``medrecon evaluate``: PSNR/SSIM of a reconstruction against a reference, whole volume and per plane."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = ("Compare a reconstruction with a reference volume: PSNR and SSIM over the whole volume and per "
        "plane (axial, coronal, sagittal; averaged over the slices of each plane), under medrecon's one "
        "convention: CT in HU with the data range of an HU window (default [-1000, 1000] HU), MR on the "
        "magnitude with the data range of the reference's 99.9th percentile.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from medrecon import units

    p.add_argument("--reference", required=True,
                   help="reference VOLUME (NIfTI file or DICOM series directory: e.g. the original study, resampled "
                        "onto the reconstruction's grid from the two affines when the grids differ), or a "
                        "measurement file MEAS.h5 (its stored reference)")
    p.add_argument("--recon", required=True, help="reconstruction VOLUME (NIfTI file or DICOM series directory)")
    units.add_arguments(p, "both volumes")
    p.add_argument("--window", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="CT: the HU window whose width is the data range (default: -1000 1000, the shipped "
                        "CT prior's window)")
    p.add_argument("--data-range", type=float, default=None,
                   help="override the convention with an explicit data range in the volumes' units "
                        "(recorded in the JSON)")
    p.add_argument("--mask", choices=("none", "body"), default="none",
                   help="metrics over the whole volume (none) or inside the body (the reference above -500 HU "
                        "for CT or 10 %% of its range otherwise, holes filled, largest component)")
    p.add_argument("--json", default=None, metavar="OUT.json",
                   help='write {"psnr", "ssim", "planes": {"axial": {"psnr", "ssim"}, ...}, "convention", '
                        '"mask", "provenance"} to this file')
    p.add_argument("--grid", choices=("resample", "strict"), default="resample",
                   help="a reference on another voxel grid: resample it onto the reconstruction's grid "
                        "(default; the output says so) or refuse (strict)")
    p.add_argument("--ignore-geometry", action="store_true",
                   help="compare the voxel arrays as stored even when the two volumes' affines (voxel size, "
                        "orientation, origin) differ (shapes must match)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")


def run(args: argparse.Namespace) -> int:
    from medrecon.api import evaluate
    from medrecon.io.outputs import OutputPlan
    from medrecon.metrics import format_table
    from medrecon.provenance import provenance, write_json

    plan = OutputPlan(overwrite=args.overwrite)
    plan.add_input(args.reference, "--reference")
    plan.add_input(args.recon, "--recon")
    out_json = plan.add_file(args.json, "--json") if args.json else None
    plan.check()
    metrics = evaluate(args.reference, args.recon, mask=args.mask, window=args.window, data_range=args.data_range,
                       units=args.units, modality=args.modality,
                       match_grid="ignore" if args.ignore_geometry else args.grid,
                       names=(f"--reference {args.reference}", f"--recon {args.recon}"))
    with plan.open() as staged:
        if out_json is not None:
            prov = provenance(inputs=[args.reference, args.recon], command=getattr(args, "command_line", None))
            write_json(staged.path(out_json), metrics, prov)
    print(f"reference: {metrics['reference_grid']}")
    print(format_table({"recon": metrics}))
    print(f"metrics: {metrics['convention']['description']}" + (" ; inside the body mask" if args.mask == "body" else ""))
    return 0
