"""``medrecon reconstruct``: reconstruct a measurement file with a classical or diffusion method."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medrecon.device import DEVICE_CHOICES

NAME = "reconstruct"
HELP = ("Reconstruct MEAS.h5 (from `medrecon simulate`, or a fastMRI-style k-space file) and write a NIfTI "
        "volume in the input volume's units, its effective config, and metrics when a reference is known.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, metavar="MEAS.h5", help="measurement file")
    p.add_argument("--method", required=True,
                   help="fbp, sirt, cgls, tv (CT); zero-filled, sense, cgls, tv (MRI); mbir, dds (diffusion)")
    p.add_argument("--output", required=True, metavar="RECON.nii.gz", help="reconstruction to write (NIfTI)")
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="method settings (configs/*.yaml); see the file for every key")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (repeatable), e.g. --set iterations=50")
    p.add_argument("--prior", default=None, help="diffusion methods: phantom, chest-ct, brain-mri or a prior "
                   "directory")
    p.add_argument("--samples", type=int, default=None, help="diffusion methods: K seeded runs; writes their "
                   "mean and a per-voxel standard deviation volume (RECON_std.nii.gz)")
    p.add_argument("--seed", type=int, default=None, help="diffusion methods: seed of every random draw")
    p.add_argument("--state-dir", default=None, help="diffusion methods: save the sampler state here every "
                   "--save-every steps and on SIGINT/SIGTERM")
    p.add_argument("--save-every", type=int, default=None, help="diffusion methods: steps between saved states")
    p.add_argument("--resume", action="store_true", help="diffusion methods: continue from --state-dir "
                   "(same settings and seed give the same result as an uninterrupted run)")
    p.add_argument("--figure", action="store_true", help="also write a tri-planar PNG comparing the reference, "
                   "FBP (or zero-filled), ADMM-TV and this reconstruction, with error maps")
    p.add_argument("--reference", default=None, metavar="VOLUME",
                   help="reference volume for metrics (default: the reference stored in MEAS.h5, if any)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the metrics JSON here "
                   "(default: beside the output when a reference is known)")
    p.add_argument("--dicom-out", default=None, metavar="DIR", help="also write a derived DICOM series here")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to compute")
    p.add_argument("--backend", choices=("auto", "astra", "torch"), default="auto", help="CT projector backend")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def to_volume_units_scale(m) -> float:
    """Factor from working units to the output volume's units for a standard deviation."""
    from medrecon.tasks import CT_TASKS
    from medrecon.volume import MU_WATER

    scale = float(m.attrs.get("scale", 1.0))
    units = m.attrs.get("volume", {}).get("units", "a.u.")
    if m.task in CT_TASKS and units == "HU":
        return 1000.0 * scale / MU_WATER
    if m.task in CT_TASKS and units == "window01":
        lo, hi = m.attrs["volume"]["window"]
        return 1000.0 * scale / MU_WATER / (hi - lo)
    if m.task in CT_TASKS and units == "a.u.":
        return 1.0
    return scale


def run(args: argparse.Namespace) -> int:
    """One process, or every rank under torchrun/srun: rank 0 reads and writes, each rank
    reconstructs its z-slab (:mod:`medrecon.distributed.runner`)."""
    from medrecon.distributed.launch import join_from_environment

    group = join_from_environment(args.device)
    if group is None:
        from medrecon.methods import run_method
        return reconstruct(args, run_method)
    from medrecon.distributed.runner import SlabDriver, serve

    with group:
        if not group.is_root:
            return serve(group)
        with SlabDriver(group) as driver:
            return reconstruct(args, driver.run_method)


def reconstruct(args: argparse.Namespace, run_method) -> int:
    """The command with ``run_method`` (:func:`medrecon.methods.run_method` or a distributed
    stand-in) computing every reconstruction."""
    import numpy as np

    from medrecon.config import load_config, make_settings, parse_overrides, settings_dict
    from medrecon.device import resolve_device
    from medrecon.errors import UserError
    from medrecon.io import load_volume, save_volume
    from medrecon.io.atomic import write_text_atomic
    from medrecon.io.measurements import load_measurement
    from medrecon.metrics import format_table, volume_metrics
    from medrecon.tasks import output_volume, to_volume_units

    if not str(args.output).endswith((".nii", ".nii.gz")):
        raise UserError(f"--output {args.output}: expected a .nii or .nii.gz file name")
    m = load_measurement(args.input)
    values: dict = {}
    if args.config:
        cfg = load_config(args.config)
        if cfg["method"] != args.method:
            raise UserError(f"--config {args.config} is for method {cfg['method']!r}, not {args.method!r}")
        if cfg.get("task") not in (None, m.task):
            raise UserError(f"--config {args.config} is for task {cfg['task']!r}, but {args.input} holds {m.task!r}")
        values.update(cfg.get("settings") or {})
    values.update(parse_overrides(args.overrides))
    for key in ("prior", "samples", "seed", "state_dir", "save_every"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.resume:
        values["resume"] = True
    settings = make_settings(args.method, values, where=args.config or "--set", task=m.task)
    device = resolve_device(args.device)
    start = time.perf_counter()
    recon = run_method(m, args.method, settings, device=device, progress=not args.quiet, backend=args.backend)
    seconds = time.perf_counter() - start
    array = to_volume_units(recon, m)
    out = output_volume(array, m, description=f"medrecon {args.method} {m.task}")
    save_volume(out, args.output, overwrite=args.overwrite)
    stem = str(args.output)[: -len(".nii.gz")] if str(args.output).endswith(".nii.gz") else str(args.output)[:-4]
    from medrecon.methods import DIFFUSION, LAST_INFO
    diffusion_info = {}
    if args.method in DIFFUSION:
        diffusion_info = {k: v for k, v in LAST_INFO.items() if k != "std" and not k.startswith("runs")}
        if LAST_INFO.get("std") is not None:
            std = LAST_INFO["std"].detach().cpu().numpy() * to_volume_units_scale(m)
            save_volume(output_volume(std.astype("float32"), m, f"medrecon {args.method} posterior std"),
                        stem + "_std.nii.gz", overwrite=args.overwrite)
            print(f"wrote {stem}_std.nii.gz (per-voxel standard deviation over {settings.samples} samples)")
    effective = {"input": str(args.input), "method": args.method, "task": m.task, "device": str(device),
                 "settings": settings_dict(settings), "seconds": round(seconds, 3),
                 "sampler": json.loads(json.dumps(diffusion_info, default=str))}
    write_text_atomic(stem + ".config.json", json.dumps(effective, indent=2) + "\n", overwrite=args.overwrite)
    print(f"wrote {args.output} ({args.method}, {m.task}, {seconds:.1f} s)")

    reference_volume = load_volume(args.reference) if args.reference else None
    reference = reference_volume.array if reference_volume is not None else m.arrays.get("reference")
    if reference is not None:
        reference = np.asarray(reference, np.float32)
        if reference.shape != array.shape:
            raise UserError(f"reference shape {reference.shape} differs from the reconstruction {array.shape}")
        data_range = float(reference.max() - reference.min()) or 1.0
        metrics = volume_metrics(array, reference, data_range)
        print(format_table({args.method: metrics}))
        write_text_atomic(args.json or stem + ".metrics.json", json.dumps(metrics, indent=2) + "\n",
                          overwrite=args.overwrite)
        if args.figure:
            from medrecon.methods import methods_for
            from medrecon.viz import triplanar_figure
            baseline = "fbp" if "fbp" in methods_for(m.task) else "zero-filled"
            volumes = {"reference": reference}
            for name in (baseline, "tv"):
                if name != args.method:
                    volumes[name] = to_volume_units(run_method(m, name, None, device=device), m)
            volumes[args.method] = array
            triplanar_figure(volumes, stem + ".png", reference=reference, data_range=data_range,
                             overwrite=args.overwrite, spacing=tuple(out.spacing))
            print(f"wrote {stem}.png")
    if args.dicom_out:
        from medrecon.io import write_dicom_series
        # protected: the study folder the measurement was simulated from and the reference's
        # folder (the measurement file's own folder may hold outputs, e.g. a DICOM subfolder)
        inputs = [p for p in (m.attrs.get("input"), args.reference) if p]
        write_dicom_series(out, args.dicom_out, reference=reference_volume, method=args.method, task=m.task,
                           overwrite=args.overwrite, input_dirs=[p for p in inputs if Path(p).is_dir()])
        print(f"wrote DICOM series to {args.dicom_out}")
    return 0
