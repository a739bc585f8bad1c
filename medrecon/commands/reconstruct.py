"""``medrecon reconstruct``: reconstruct a measurement file with a classical or diffusion method."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medrecon.device import DEVICE_CHOICES
from medrecon.viz import WINDOW_CHOICES

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
    p.add_argument("--figure", action="store_true", help="also write RECON.png: tri-planar views of the reference, "
                   "FBP (or zero-filled), ADMM-TV and this reconstruction, with error maps and per-slice PSNR/SSIM")
    p.add_argument("--figure-window", default="prior", choices=WINDOW_CHOICES,
                   help="CT figures: the display window: the prior's HU window ([-1000, 1000] HU without a prior), "
                        "soft-tissue (W 400 / L 40), lung (W 1500 / L -600) or bone (W 1800 / L 400)")
    p.add_argument("--report", default=None, metavar="RUN.html", help="also write a one-file HTML report: the "
                   "figure, the per-plane metrics table, the settings and the provenance")
    p.add_argument("--mask", choices=("none", "body"), default="none",
                   help="metrics over the whole volume (none) or inside the body (body: the reference above "
                        "-500 HU for CT or 10 %% of its range for MR, holes filled, largest component)")
    p.add_argument("--force", action="store_true", help="use a prior whose modality or units do not match the "
                   "data (refused otherwise)")
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
    from medrecon.io.atomic import check_writable
    from medrecon.io.measurements import load_measurement
    from medrecon.methods import DIFFUSION, LAST_INFO
    from medrecon.metrics import body_mask, format_table, measurement_convention, score
    from medrecon.provenance import provenance, write_json
    from medrecon.tasks import output_volume, to_volume_units

    if not str(args.output).endswith((".nii", ".nii.gz")):
        raise UserError(f"--output {args.output}: expected a .nii or .nii.gz file name")
    stem = str(args.output)[: -len(".nii.gz")] if str(args.output).endswith(".nii.gz") else str(args.output)[:-4]
    m = load_measurement(args.input)
    has_reference = bool(args.reference) or "reference" in m.arrays
    for path, wanted in ((args.output, True), (stem + ".config.json", True),
                         (args.json or stem + ".metrics.json", has_reference),
                         (stem + ".png", args.figure and has_reference), (args.report, bool(args.report))):
        if wanted:  # every output is checked before the work starts
            check_writable(Path(path), args.overwrite)
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
    card = None
    if args.method in DIFFUSION:
        from medrecon.prior.checkpoint import read_card, resolve
        from medrecon.units import check_prior

        card = read_card(resolve(settings.prior))
        check_prior(card, m.task, m.attrs.get("volume", {}).get("units", "a.u."), force=args.force)
    device = resolve_device(args.device)
    prov = provenance(device=device, seed=getattr(settings, "seed", None) if args.method in DIFFUSION else None,
                      inputs=[args.input, args.config, args.reference],
                      prior=settings.prior if args.method in DIFFUSION else None,
                      command=getattr(args, "command_line", None),
                      extra={"measurement": m.attrs.get("provenance")})
    start = time.perf_counter()
    recon = run_method(m, args.method, settings, device=device, progress=not args.quiet, backend=args.backend)
    seconds = time.perf_counter() - start
    array = to_volume_units(recon, m)
    out = output_volume(array, m, description=f"medrecon {args.method} {m.task}")
    save_volume(out, args.output, overwrite=args.overwrite)
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
    write_json(stem + ".config.json", effective, prov, overwrite=args.overwrite)
    print(f"wrote {args.output} ({args.method}, {m.task}, {seconds:.1f} s)")

    reference_volume = load_volume(args.reference) if args.reference else None
    reference = reference_volume.array if reference_volume is not None else m.arrays.get("reference")
    results, figure_png = None, None
    if reference is not None:
        reference = np.asarray(reference, np.float32)
        if reference.shape != array.shape:
            raise UserError(f"reference shape {reference.shape} differs from the reconstruction {array.shape}")
        convention = measurement_convention(m, reference, card)
        mask = body_mask(reference, convention) if args.mask == "body" else None
        metrics = score(array, reference, convention, mask)
        results = {args.method: metrics}
        print(format_table(results))
        print(f"metrics: {convention.describe()}" + (" ; inside the body mask" if mask is not None else ""))
        write_json(args.json or stem + ".metrics.json", {"method": args.method, "task": m.task, **metrics}, prov,
                   overwrite=args.overwrite)
        if args.figure or args.report:
            figure_png = _comparison(m, args, settings, card, device, array, reference, convention, mask,
                                     spacing=tuple(out.spacing), affine=out.affine, results=results,
                                     run_method=run_method)
            if args.figure:
                from medrecon.io.atomic import atomic_path
                with atomic_path(stem + ".png", overwrite=args.overwrite, what="figure") as tmp:
                    tmp.write_bytes(figure_png)
                print(f"wrote {stem}.png")
    elif args.figure:
        print("no reference (none stored in the measurement, no --reference): no metrics, no figure")
    if args.report:
        from medrecon.report import write_html_report
        notes = [f"{args.method} on {args.input} ({m.task}); {seconds:.1f} s on {device}."]
        if reference is None:
            notes.append("No reference volume: no metrics and no error maps.")
        write_html_report(args.report, overwrite=args.overwrite, title=f"medrecon {args.method}: {m.task}",
                          metrics=results, settings=effective, provenance=prov, figure_png=figure_png,
                          notes=notes)
        print(f"wrote {args.report}")
    if args.dicom_out:
        from medrecon.io import write_dicom_series
        # protected: the study folder the measurement was simulated from and the reference's
        # folder (the measurement file's own folder may hold outputs, e.g. a DICOM subfolder)
        inputs = [p for p in (m.attrs.get("input"), args.reference) if p]
        write_dicom_series(out, args.dicom_out, reference=reference_volume, method=args.method, task=m.task,
                           overwrite=args.overwrite, input_dirs=[p for p in inputs if Path(p).is_dir()])
        print(f"wrote DICOM series to {args.dicom_out}")
    return 0


def _comparison(m, args, settings, card, device, array, reference, convention, mask, spacing, affine,
                results, run_method) -> bytes:
    """The figure's PNG: the reference, FBP (or zero-filled), ADMM-TV and this reconstruction
    (the baselines computed by ``run_method``, as the reconstruction itself).
    Adds the baselines' metrics to ``results`` (shown in the report's table)."""
    from medrecon.methods import methods_for
    from medrecon.metrics import score
    from medrecon.report import figure_png_bytes
    from medrecon.tasks import to_volume_units
    from medrecon.viz import comparison_figure, measurement_display

    baseline = "fbp" if "fbp" in methods_for(m.task) else "zero-filled"
    recons = {}
    for name in (baseline, "tv"):
        if name != args.method:
            recons[name] = to_volume_units(run_method(m, name, None, device=device), m)
            results[name] = score(recons[name], reference, convention, mask)
    recons[args.method] = array
    results[args.method] = results.pop(args.method)  # this run's row last
    display = measurement_display(m, reference, args.figure_window, card)
    fig = comparison_figure(reference, recons, display, spacing, convention, mask, affine=affine,
                            title=f"{m.task}: {args.method} vs {', '.join(n for n in recons if n != args.method)}"
                                  f" ({args.input})")
    return figure_png_bytes(fig)
