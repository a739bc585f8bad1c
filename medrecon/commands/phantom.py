"""``medrecon phantom``: write a 3D phantom volume (NIfTI)."""

from __future__ import annotations

import argparse
import math

from medrecon.errors import UserError

NAME = "phantom"
HELP = "Write a 3D Shepp-Logan or seeded random-ellipsoid phantom [Z, Y, X] to a NIfTI file."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=("shepp-logan", "ellipsoids"), default="shepp-logan",
                   help="shepp-logan: the modified 3D Shepp-Logan head; ellipsoids: one member of the "
                        "seeded random-ellipsoid family (seeds >= 1000000 are held out of training)")
    p.add_argument("--contrast", choices=("ct", "mr"), default="ct",
                   help="intensity assignment: CT attenuation-like or T2-like MR contrast (values in [0, 1])")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=(32, 128, 128),
                   help="volume size in voxels")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("DZ", "DY", "DX"), default=(1.0, 1.0, 1.0),
                   help="voxel spacing in mm")
    p.add_argument("--seed", type=int, default=1_000_000, help="seed of the ellipsoid phantom")
    p.add_argument("--output", required=True, help="output NIfTI file (.nii or .nii.gz)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    from medrecon import phantoms
    from medrecon.io import save_volume
    from medrecon.volume import Volume

    from medrecon.checks import require_memory
    from medrecon.io.outputs import OutputPlan

    if not str(args.output).endswith((".nii", ".nii.gz")):
        raise UserError(f"--output {args.output}: expected a .nii or .nii.gz file name")
    if min(args.shape) < 1:
        raise UserError(f"--shape {' '.join(map(str, args.shape))}: expected three positive sizes")
    if not all(math.isfinite(s) and s > 0 for s in args.spacing):
        raise UserError(f"--spacing {' '.join(map(str, args.spacing))}: expected three positive "
                        "voxel sizes in mm")
    require_memory(float(args.shape[0]) * args.shape[1] * args.shape[2] * 4 * 8,
                   f"a {' x '.join(map(str, args.shape))} phantom")
    plan = OutputPlan(overwrite=args.overwrite)
    out = plan.add_file(args.output, "--output")
    with plan.open() as staged:
        if args.kind == "shepp-logan":
            array = phantoms.shepp_logan_3d(args.shape, contrast=args.contrast)
        else:
            array = phantoms.random_ellipsoids(args.shape, seed=args.seed, contrast=args.contrast)
        volume = Volume.from_array(array, spacing=tuple(args.spacing),
                                   modality="CT" if args.contrast == "ct" else "MR", units="a.u.")
        volume.description = f"{args.kind} phantom ({args.contrast})"
        save_volume(volume, staged.path(out))
    print(f"wrote {args.output}: shape {tuple(array.shape)}, values in [{array.min():.3f}, {array.max():.3f}]")
    return 0
