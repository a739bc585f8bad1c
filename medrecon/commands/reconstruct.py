"""``medrecon reconstruct``: reconstruct a measurement file with a classical or diffusion method."""

from __future__ import annotations

import argparse
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
    p.add_argument("--prior", default=None, help="diffusion methods: a shipped prior (`medrecon prior list`) or a "
                   "prior directory; default: the shipped prior that fits the data's modality and pixel spacing "
                   "(named in the log and the JSON; refused with the choices when none fits)")
    p.add_argument("--samples", type=int, default=None, help="diffusion methods: K seeded runs; writes their "
                   "mean and a per-voxel standard deviation volume (RECON_std.nii.gz)")
    p.add_argument("--seed", type=int, default=None, help="diffusion methods: seed of every random draw")
    p.add_argument("--state-dir", default=None, help="diffusion methods: save the sampler state here every "
                   "--save-every steps and on SIGINT/SIGTERM")
    p.add_argument("--save-every", type=int, default=None, help="diffusion methods: steps between saved states")
    p.add_argument("--resume", action="store_true", help="diffusion methods: continue from --state-dir "
                   "(same settings and seed give the same result as an uninterrupted run)")
    p.add_argument("--figure", action="store_true", help="also write RECON.png: tri-planar views of the reference, "
                   "this reconstruction and every --compare volume, with error maps and per-slice PSNR/SSIM "
                   "(nothing else is reconstructed for it)")
    p.add_argument("--compare", action="append", default=[], metavar="OTHER.nii.gz",
                   help="a reconstruction of the same measurement to show beside this one in the figure, the "
                        "report and the printed table (repeatable), e.g. --compare tv.nii.gz")
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


def what_ran(info: dict) -> dict:
    """``{"precision": ..., "schedule": ...}`` from the sampler's info (the first sample's for
    posterior runs): what the prior network computed in (setting, float32 or bfloat16, why) and
    the DDS step schedule (uniform or the prior's fitted one: :mod:`medrecon.samplers.fewstep`);
    keys the run did not record are left out."""
    runs = info.get("runs") or [info]
    first = runs[0] if isinstance(runs[0], dict) else {}
    return {key: first[key] for key in ("precision", "schedule") if first.get(key)}


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


def measurement_inputs(m, meas_path: str) -> list[Path]:
    """What a measurement was made from (``attrs["input"]``: the simulated volume or DICOM
    study), resolved as recorded, against the working directory and against the file's folder
    (older files recorded the path as typed)."""
    recorded = m.attrs.get("input")
    if not recorded:
        return []
    p = Path(str(recorded))
    found = [p] if p.is_absolute() else [p, Path(meas_path).parent / p]
    return [q for q in found if q.exists()]


def check_geometry_match(reference, m, where: str, option: str = "--reference") -> None:
    """Refuse a reference volume whose geometry (affine) differs from the measurement's."""
    import numpy as np

    from medrecon.errors import UserError
    from medrecon.volume import geometry_mismatch

    vol = m.attrs.get("volume", {})
    if vol.get("affine") is None:
        return
    why = geometry_mismatch(np.asarray(vol["affine"], float), reference.affine)
    if why:
        raise UserError(f"{option} {where} does not lie where the measurement's volume lies "
                        f"({why}); compare volumes on the same grid")


def run(args: argparse.Namespace) -> int:
    """One process, or every rank under torchrun/srun: rank 0 reads and writes, each rank
    reconstructs its z-slab (:mod:`medrecon.slab_driver`)."""
    from medrecon.distributed.launch import join_from_environment

    group = join_from_environment(args.device)
    if group is None:
        from medrecon.methods import run_method
        return reconstruct(args, run_method)
    from medrecon.slab_driver import SlabDriver, serve

    with group:
        if not group.is_root:
            return serve(group)
        with SlabDriver(group) as driver:
            return reconstruct(args, driver.run_method)


def reconstruct(args: argparse.Namespace, run_method) -> int:
    """The command with ``run_method`` (:func:`medrecon.methods.run_method` or a distributed
    stand-in) computing every reconstruction."""
    import numpy as np

    from medrecon.api import reconstruct as api_reconstruct
    from medrecon.config import load_config, make_settings, parse_overrides, settings_dict
    from medrecon.device import resolve_device
    from medrecon.errors import UserError
    from medrecon.io import load_volume, save_volume
    from medrecon.io.measurements import load_measurement
    from medrecon.io.dicom_writer import medrecon_dicom_only
    from medrecon.io.outputs import OutputPlan
    from medrecon.methods import DIFFUSION, LAST_INFO
    from medrecon.metrics import body_mask, format_table, measurement_convention, score
    from medrecon.provenance import provenance, write_json
    from medrecon.tasks import output_volume, recon_shape

    if not str(args.output).endswith((".nii", ".nii.gz")):
        raise UserError(f"--output {args.output}: expected a .nii or .nii.gz file name")
    stem = str(args.output)[: -len(".nii.gz")] if str(args.output).endswith(".nii.gz") else str(args.output)[:-4]
    early = OutputPlan(overwrite=args.overwrite)  # refuse a bad --output before reading anything
    early.add_input(args.input, "--input")
    early.add_input(args.reference, "--reference")
    early.add_file(args.output, "--output")
    early.check()
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
    diffusion = args.method in DIFFUSION
    card, prior_choice = None, None
    if diffusion:
        from medrecon.prior.catalog import resolve_default_prior
        from medrecon.prior.catalog import measurement_pixel_spacing
        from medrecon.prior.checkpoint import read_card, resolve
        from medrecon.units import check_prior

        prior_choice = resolve_default_prior(m, settings)   # fills settings.prior when none is named
        card = read_card(resolve(settings.prior))
        check_prior(card, m.task, m.attrs.get("volume", {}).get("units", "a.u."), force=args.force,
                    pixel_spacing=measurement_pixel_spacing(m))

    # everything read and every output checked before any work
    shape = recon_shape(m)
    reference_volume = load_volume(args.reference) if args.reference else None
    reference = reference_volume.array if reference_volume is not None else m.arrays.get("reference")
    if reference is not None:
        reference = np.asarray(reference, np.float32)
        where = args.reference or f"stored in {args.input}"
        if reference.shape != shape:
            raise UserError(f"reference ({where}) has shape {reference.shape}, the reconstruction "
                            f"will be {shape}")
        if reference_volume is not None:
            check_geometry_match(reference_volume, m, args.reference)
    if args.json and reference is None:
        raise UserError(f"--json {args.json}: no reference to compare with (pass --reference)")
    compared = _load_compared(args.compare, shape, m)
    plan = OutputPlan(overwrite=args.overwrite)
    plan.add_input(args.input, "--input")
    plan.add_inputs(measurement_inputs(m, args.input), f"volume {args.input} was simulated from")
    plan.add_input(args.reference, "--reference")
    if reference_volume is not None:
        plan.add_inputs(reference_volume.source.get("files", []), "--reference")
    plan.add_input(args.config, "--config")
    plan.add_inputs(args.compare, "--compare")
    out_nifti = plan.add_file(args.output, "--output")
    out_config = plan.add_file(stem + ".config.json", "config")
    samples = int(getattr(settings, "samples", 1) or 1) if diffusion else 1
    out_std = plan.add_file(stem + "_std.nii.gz", "posterior std") if samples > 1 else None
    out_metrics = plan.add_file(args.json or stem + ".metrics.json", "--json") \
        if reference is not None else None
    out_figure = plan.add_file(stem + ".png", "figure") if args.figure and reference is not None else None
    out_report = plan.add_file(args.report, "--report") if args.report else None
    out_dicom = plan.add_dir(args.dicom_out, "--dicom-out", accept=medrecon_dicom_only) \
        if args.dicom_out else None
    state_dir = getattr(settings, "state_dir", "") if diffusion else ""
    if state_dir:
        plan.add_workdir(state_dir, "--state-dir")
        states = list(Path(state_dir).glob("state.json")) + list(Path(state_dir).glob("sample-*/state.json"))
        if states and not getattr(settings, "resume", False):
            raise UserError(f"--state-dir {state_dir} already holds a saved {args.method} state; "
                            f"resume it with --resume or choose another folder")
    plan.check()
    device = resolve_device(args.device)
    prov = provenance(device=device, seed=getattr(settings, "seed", None) if diffusion else None,
                      inputs=[args.input, args.config, args.reference, *args.compare],
                      prior=settings.prior if diffusion else None,
                      command=getattr(args, "command_line", None),
                      extra={"measurement": m.attrs.get("provenance")})

    with plan.open() as staged:
        out = api_reconstruct(m, args.method, settings=settings, device=device, progress=not args.quiet,
                              backend=args.backend, run_method=run_method)
        seconds = float(out.source.pop("reconstruction")["seconds"])
        array = out.array
        save_volume(out, staged.path(out_nifti))
        diffusion_info = {}
        if diffusion:
            diffusion_info = {k: v for k, v in LAST_INFO.items() if k != "std" and not k.startswith("runs")}
            if out_std is not None:
                std = LAST_INFO["std"].detach().cpu().numpy() * to_volume_units_scale(m)
                save_volume(output_volume(std.astype("float32"), m, f"medrecon {args.method} posterior std"),
                            staged.path(out_std))
        effective = {"input": str(args.input), "method": args.method, "task": m.task, "device": str(device),
                     "settings": settings_dict(settings), "seconds": round(seconds, 3),
                     "sampler": diffusion_info}
        if diffusion:
            effective["prior"] = _prior_record(settings.prior, prior_choice)
        write_json(staged.path(out_config), effective, prov)
        results, figure_png, table = None, None, ""
        if reference is not None:
            convention = measurement_convention(m, reference, card)
            mask = body_mask(reference, convention) if args.mask == "body" else None
            metrics = score(array, reference, convention, mask)
            results = {name: score(vol, reference, convention, mask) for name, vol in compared.items()}
            results[args.method] = metrics           # this run's row last
            table = format_table(results) + "\n" + f"metrics: {convention.describe()}" + \
                (" ; inside the body mask" if mask is not None else "")
            extra = {"prior": effective["prior"]} if diffusion else {}
            fit = {"prior_fit": diffusion_info["prior_fit"]} if diffusion_info.get("prior_fit") else {}
            ran = what_ran(LAST_INFO) if diffusion else {}
            write_json(staged.path(out_metrics), {"method": args.method, "task": m.task, **extra, **ran, **metrics,
                                                  **fit},
                       prov)
            if args.figure or args.report:
                figure_png = _comparison(m, args, card, {**compared, args.method: array}, reference,
                                         convention, mask, spacing=tuple(out.spacing), affine=out.affine)
                if out_figure is not None:
                    staged.path(out_figure).write_bytes(figure_png)
        if out_report is not None:
            from medrecon.report import write_html_report
            notes = [f"{args.method} on {args.input} ({m.task}); {seconds:.1f} s on {device}."]
            if reference is None:
                notes.append("No reference volume: no metrics and no error maps.")
            write_html_report(staged.path(out_report), title=f"medrecon {args.method}: {m.task}",
                              metrics=results, settings=effective, provenance=prov,
                              figure_png=figure_png, notes=notes)
        if out_dicom is not None:
            from medrecon.io import write_dicom_series
            inputs = [p for p in (m.attrs.get("input"), args.reference) if p]
            write_dicom_series(out, staged.path(out_dicom), reference=reference_volume,
                               method=args.method, task=m.task,
                               input_dirs=[p for p in inputs if Path(p).is_dir()])
    print(f"wrote {args.output} ({args.method}, {m.task}, {seconds:.1f} s)")
    if out_std is not None:
        print(f"wrote {out_std.path} (per-voxel standard deviation over {samples} samples)")
    if table:
        print(table)
        print(f"wrote {out_metrics.path}")
    if out_figure is not None:
        print(f"wrote {out_figure.path}")
    elif args.figure:
        print("no reference (none stored in the measurement, no --reference): no metrics, no figure")
    if out_report is not None:
        print(f"wrote {args.report}")
    if out_dicom is not None:
        print(f"wrote DICOM series to {args.dicom_out}")
    return 0


def _prior_record(name: str, choice) -> dict:
    """How the run's prior was chosen, for the config and metrics JSON."""
    if choice is None:
        return {"name": name, "chosen": "named by the user"}
    return {"name": name, "chosen": "default", "reason": choice.reason}


def _load_compared(paths: list[str], shape: tuple[int, int, int], m) -> dict:
    """``--compare`` volumes by name (file name without extension), each on the reconstruction's
    grid (shape and, when both record one, geometry)."""
    import numpy as np

    from medrecon.errors import UserError
    from medrecon.io import load_volume

    out: dict = {}
    for path in paths:
        name = Path(path).name
        for suffix in (".nii.gz", ".nii", ".nrrd"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        volume = load_volume(path)
        if volume.array.shape != shape:
            raise UserError(f"--compare {path} has shape {volume.array.shape}, the reconstruction will be {shape}")
        check_geometry_match(volume, m, path, "--compare")
        if name in out:
            raise UserError(f"--compare {path}: two compared volumes are named {name!r}")
        out[name] = np.abs(volume.array).astype(np.float32) if np.iscomplexobj(volume.array) \
            else volume.array.astype(np.float32)
    return out


def _comparison(m, args, card, recons: dict, reference, convention, mask, spacing, affine) -> bytes:
    """The figure's PNG: the reference, then ``recons`` (the ``--compare`` volumes and this run's
    reconstruction, last); nothing is reconstructed here."""
    from medrecon.report import figure_png_bytes
    from medrecon.viz import comparison_figure, measurement_display

    display = measurement_display(m, reference, args.figure_window, card)
    others = [n for n in recons if n != args.method]
    title = f"{m.task}: {args.method}" + (f" vs {', '.join(others)}" if others else "") + f" ({args.input})"
    fig = comparison_figure(reference, recons, display, spacing, convention, mask, affine=affine, title=title)
    return figure_png_bytes(fig)
