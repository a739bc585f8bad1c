"""``medrecon evaluate``: PSNR/SSIM of a reconstruction against a reference, whole volume and per plane."""

from __future__ import annotations

import argparse

from medrecon.errors import UserError

NAME = "evaluate"
HELP = ("Compare a reconstruction with a reference volume: PSNR and SSIM over the whole volume and per "
        "plane (axial, coronal, sagittal; averaged over the slices of each plane), under medrecon's one "
        "convention: CT in HU with the data range of an HU window (default [-1000, 1000] HU), MR on the "
        "magnitude with the data range of the reference's 99.9th percentile.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from medrecon import units

    p.add_argument("--reference", required=True, help="reference VOLUME (NIfTI file or DICOM series directory)")
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medrecon.io import load_volume
    from medrecon.io.atomic import check_writable
    from medrecon.metrics import body_mask, ct_convention, explicit_convention, format_table, magnitude_convention, \
        score
    from medrecon.provenance import provenance, write_json
    from medrecon.units import declare

    if args.json:
        check_writable(Path(args.json), args.overwrite)
    ref = declare(load_volume(args.reference), args.units, args.modality, where=f"--reference {args.reference}")
    rec = declare(load_volume(args.recon), args.units, args.modality, where=f"--recon {args.recon}")
    if ref.array.shape != rec.array.shape:
        raise UserError(f"--recon {args.recon} has shape {rec.array.shape}, but --reference "
                        f"{args.reference} has shape {ref.array.shape}")
    if rec.units != ref.units:
        raise UserError(f"--recon {args.recon} is in {rec.units} but --reference {args.reference} is in "
                        f"{ref.units}; declare the units of the one that records none with --units")
    is_ct = ref.modality == "CT" or ref.units in ("HU", "1/mm")
    try:
        if args.data_range is not None:
            convention = explicit_convention(args.data_range, ref.units)
        elif is_ct:
            convention = ct_convention(ref.units, volume_window=ref.window if ref.units == "window01" else None,
                                       window_hu=args.window)
        else:
            convention = magnitude_convention(ref.array, ref.units)
    except ValueError as exc:
        raise UserError(f"--reference {args.reference}: {exc}; pass --data-range") from None
    mask = body_mask(ref.array, convention) if args.mask == "body" else None
    metrics = score(rec.array, ref.array, convention, mask)
    print(format_table({"recon": metrics}))
    print(f"metrics: {convention.describe()}" + (" ; inside the body mask" if mask is not None else ""))
    if args.json:
        prov = provenance(inputs=[args.reference, args.recon], command=getattr(args, "command_line", None))
        write_json(args.json, metrics, prov, overwrite=args.overwrite)
    return 0
