"""``medrecon simulate``: simulate a CT or MRI measurement of a volume and write it to HDF5."""

from __future__ import annotations

import argparse

from medrecon import units
from medrecon.device import DEVICE_CHOICES
from medrecon.tasks import TASKS, CTOptions, MRIOptions

NAME = "simulate"
HELP = ("Simulate sparse-view CT, limited-angle CT or multi-coil CS-MRI data from a VOLUME (NIfTI file or "
        "DICOM series directory) and write MEAS.h5 with everything needed to rebuild the operator.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=TASKS, help="what to simulate")
    p.add_argument("--input", required=True, metavar="VOLUME", help="NIfTI file or DICOM series directory")
    p.add_argument("--series", default=None, help="DICOM: SeriesInstanceUID or index when the folder holds several")
    units.add_arguments(p)
    p.add_argument("--output", required=True, metavar="MEAS.h5", help="measurement file to write (HDF5)")
    p.add_argument("--slices", default=None, metavar="A:B",
                   help="simulate only the slab of volume slices A..B-1 (default: every slice)")
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="resample every slice to N x N pixels first (the shipped priors are 128x128; "
                        "default: keep the input's size)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (noise, mask)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="cpu", help="where to compute")
    ct, d = p.add_argument_group("CT options"), CTOptions()
    ct.add_argument("--views", type=int, default=d.views, help="sparse-view CT: number of views "
                    "(uniform on [0,180) deg for parallel, [0,360) for fan beam)")
    ct.add_argument("--wedge", type=float, default=d.wedge, help="limited-angle CT: wedge width, degrees")
    ct.add_argument("--start", type=float, default=d.start, help="limited-angle CT: first angle, degrees")
    ct.add_argument("--step", type=float, default=d.step, help="limited-angle CT: angular step, degrees")
    ct.add_argument("--beam", choices=("parallel", "fan"), default=d.beam, help="beam geometry (flat detector for fan)")
    ct.add_argument("--source-origin", type=float, default=d.source_origin, help="fan beam: source to axis, mm")
    ct.add_argument("--origin-detector", type=float, default=d.origin_detector, help="fan beam: axis to detector, mm")
    ct.add_argument("--detectors", type=int, default=None, help="detector bins (default: cover the image)")
    ct.add_argument("--detector-spacing", type=float, default=None, help="detector bin width, mm "
                    "(default: one pixel at the rotation axis)")
    ct.add_argument("--i0", type=float, default=None, help="incident photons per ray for Poisson noise "
                    "(default: noiseless)")
    mr, m = p.add_argument_group("MRI options"), MRIOptions()
    mr.add_argument("--acceleration", type=float, default=m.acceleration, help="requested acceleration "
                    "(the effective one, 1 / sampled fraction, is recorded)")
    mr.add_argument("--mask", choices=("uniform1d", "gaussian1d", "poisson2d"), default=m.mask,
                    help="sampling pattern (1D masks sample phase-encode lines along Y)")
    mr.add_argument("--center-fraction", type=float, default=m.center_fraction,
                    help="1D masks: fraction of fully sampled centre lines")
    mr.add_argument("--calib", type=int, default=m.calib, help="poisson2d: calibration square width")
    mr.add_argument("--coils", type=int, default=m.coils, help="simulated birdcage coils (1: single coil)")
    mr.add_argument("--sigma", type=float, default=m.sigma, help="complex Gaussian k-space noise "
                    "(working units: image 99.9th percentile = 1)")


def run(args: argparse.Namespace) -> int:
    from medrecon.api import simulate
    from medrecon.device import resolve_device
    from medrecon.errors import UserError
    from medrecon.io import load_volume
    from medrecon.checks import require_memory
    from medrecon.io.measurements import check_measurement, save_measurement
    from medrecon.io.outputs import OutputPlan, real_path
    from medrecon.provenance import provenance

    if not str(args.output).lower().endswith((".h5", ".hdf5")):
        raise UserError(f"--output {args.output}: measurements are written as HDF5; use a .h5 "
                        f"file name")
    plan = OutputPlan(overwrite=args.overwrite)
    plan.add_input(args.input, "--input")
    out = plan.add_file(args.output, "--output")
    plan.check()
    volume = units.declare(load_volume(args.input, series=args.series), args.units, args.modality,
                           where=f"--input {args.input}")
    units.warn_if_hu_like(volume, args.task, where=f"--input {args.input}")
    plan.add_inputs(volume.source.get("files", []), "--input")
    z, ny, nx = volume.shape
    if args.size:
        ny = nx = args.size
    coils = args.coils if args.task == "cs-mri" else 1
    require_memory(float(z) * ny * nx * 8 * (3 * max(coils, 1) + 8),
                   f"simulating {args.task} of a {z} x {ny} x {nx} volume")
    ct = CTOptions(views=args.views, wedge=args.wedge, start=args.start, step=args.step, beam=args.beam,
                   source_origin=args.source_origin, origin_detector=args.origin_detector,
                   detectors=args.detectors, detector_spacing=args.detector_spacing, i0=args.i0)
    mri = MRIOptions(acceleration=args.acceleration, mask=args.mask, center_fraction=args.center_fraction,
                     calib=args.calib, coils=args.coils, sigma=args.sigma)
    device = resolve_device(args.device)
    with plan.open() as staged:
        m = simulate(volume, args.task, slices=args.slices, size=args.size, seed=args.seed, ct=ct, mri=mri,
                     device=device, where=f"--input {args.input}")
        m.attrs["input"] = str(real_path(args.input))  # absolute: found from any working directory
        m.attrs["provenance"] = provenance(device=device, seed=args.seed, inputs=[args.input],
                                           command=getattr(args, "command_line", None))
        check_measurement(m, f"the simulated measurement of {args.input}")  # what readers accept
        save_measurement(staged.path(out), m)
    extra = (f", effective acceleration x{m.attrs['acceleration']:.2f}" if args.task == "cs-mri" else
             f", {m.data.shape[1]} views x {m.data.shape[2]} detector bins")
    print(f"wrote {args.output}: {args.task}, data {m.data.dtype} {tuple(m.data.shape)}{extra}")
    return 0
