#!/usr/bin/env python3
"""Reconstruct a DICOM study with several methods: NIfTI and derived DICOM out, plus a report.

The study's volume is the reference: the script simulates the chosen task from it (e.g. 8-view
sparse-view CT), reconstructs with every chosen method, writes each result as NIfTI and as a
derived DICOM series (patient and study identity copied from the study), and a report
(``report.md`` and ``report.html`` with the per-plane metrics table, ``metrics.json`` with the
provenance, and a tri-planar figure).

    python scripts/reconstruct_study.py STUDY_DIR --output OUT_DIR \
        [--task sparse-view-ct] [--views 8] [--methods fbp tv dds] [--prior chest-ct] \
        [--size 128] [--slices 41:65] [--series UID] [--units HU] [--mask body] [--device auto]

Slices are resampled in-plane to ``--size`` (the shipped priors are 128x128); ``--slices A:B``
keeps a contiguous slab (volume indices, after sorting by position).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_plan(methods: list[str], task: str, shape: tuple[int, int, int], prior: str | None, note: str) -> str:
    """What the script is about to compute, in a few lines (printed before any reconstruction)."""
    from medrecon.config import make_settings

    lines = [f"plan: {task} of a {' x '.join(map(str, shape))} volume, then {len(methods)} reconstruction(s), "
             f"one after the other:"]
    for method in methods:
        s = make_settings(method, None, task=task)
        if method == "dds":
            start = ("warm start: ADMM-TV reconstruction first" if getattr(s, "start_sigma", 0) else "from noise")
            what = f"{s.steps} diffusion steps ({start})"
        elif method == "mbir":
            what = f"{s.steps} predictor-corrector steps"
        elif method == "tv":
            what = f"ADMM-TV, {s.iterations} iterations"
        elif hasattr(s, "iterations"):
            what = f"{s.iterations} iterations"
        else:
            what = "one pass"
        lines.append(f"  {method}: {what}" + (f"; prior {prior}{note}" if method in ("dds", "mbir") else ""))
    lines.append("  the figure and the report show these reconstructions only (nothing else is computed); "
                 "ADMM-TV and the diffusion methods take minutes on a CPU (see docs/benchmarks)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from medrecon import units
    from medrecon.datasets import select_and_resample
    from medrecon.device import resolve_device
    from medrecon.errors import UserError
    from medrecon.io import load_volume, save_volume, write_dicom_series
    from medrecon.io.atomic import write_text_atomic
    from medrecon.io.dicom_writer import medrecon_dicom_only
    from medrecon.io.outputs import OutputPlan
    from medrecon.methods import DIFFUSION, run_method
    from medrecon.metrics import PLANES, body_mask, format_table, measurement_convention, score
    from medrecon.provenance import command_line, provenance, write_json
    from medrecon.report import figure_png_bytes, write_html_report
    from medrecon.tasks import CTOptions, MRIOptions, output_volume, simulate, to_volume_units
    from medrecon.viz import WINDOW_CHOICES, comparison_figure, measurement_display

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="DICOM study folder (or a NIfTI / NRRD file)")
    p.add_argument("--output", required=True, help="output folder (must not be inside the study folder)")
    p.add_argument("--series", default=None, help="SeriesInstanceUID or index when the folder holds several")
    units.add_arguments(p, "the study")
    p.add_argument("--task", default="sparse-view-ct", choices=("sparse-view-ct", "limited-angle-ct", "cs-mri"))
    p.add_argument("--views", type=int, default=8, help="sparse-view CT: number of views")
    p.add_argument("--wedge", type=float, default=90.0, help="limited-angle CT: wedge in degrees")
    p.add_argument("--acceleration", type=float, default=4.0, help="CS-MRI: acceleration")
    p.add_argument("--methods", nargs="+", default=["fbp", "tv", "dds"], help="methods to run")
    p.add_argument("--prior", default=None, help="prior for the diffusion methods (default: the shipped prior that "
                   "fits the study's modality and pixel spacing after --size; named in the plan printed first)")
    p.add_argument("--force", action="store_true", help="use a prior whose modality or units do not match")
    p.add_argument("--size", type=int, default=128, help="in-plane size after resampling (pixels)")
    p.add_argument("--slices", default=None, help="contiguous slab A:B of volume slice indices")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation and the samplers")
    p.add_argument("--mask", choices=("none", "body"), default="none", help="metrics inside the body mask")
    p.add_argument("--figure-window", choices=WINDOW_CHOICES, default="prior", help="CT display window")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = p.parse_args(argv)
    command = command_line(sys.argv[1:] if argv is None else argv, "python scripts/reconstruct_study.py")
    try:
        out = Path(args.output)
        plan = OutputPlan(overwrite=args.overwrite)  # every output checked before any work
        plan.add_input(args.study, "study")
        files = {m: plan.add_file(out / f"{m}.nii.gz", "--output") for m in args.methods}
        dicoms = {m: plan.add_dir(out / f"dicom_{m}", "--output", accept=medrecon_dicom_only)
                  for m in args.methods}
        named = {n: plan.add_file(out / n, "--output")
                 for n in ("metrics.json", "comparison.png", "report.md", "report.html")}
        plan.check()
        diffusion = [m for m in args.methods if m in DIFFUSION]
        card = None
        volume = units.declare(load_volume(args.study, series=args.series), args.units, args.modality,
                               where=args.study)
        units.warn_if_hu_like(volume, args.task, where=args.study)
        plan.add_inputs(volume.source.get("files", []), "study")
        volume = select_and_resample(volume, args.slices, args.size)
        device = resolve_device(args.device)
        m = simulate(volume, args.task, seed=args.seed, ct=CTOptions(views=args.views, wedge=args.wedge),
                     mri=MRIOptions(acceleration=args.acceleration), device=device)
        prior_note = ""
        if diffusion:
            from medrecon.prior.catalog import default_prior_for
            from medrecon.prior.checkpoint import read_card, resolve
            if args.prior is None:
                choice = default_prior_for(m)
                args.prior, prior_note = choice.name, f" ({choice.reason})"
            card = read_card(resolve(args.prior))
            units.check_prior(card, args.task, volume.units, force=args.force)
        print(run_plan(args.methods, args.task, volume.shape, args.prior, prior_note), flush=True)
        with plan.open() as staged:
            reference = volume.array
            convention = measurement_convention(m, reference, card)
            mask = body_mask(reference, convention) if args.mask == "body" else None
            prov = provenance(device=device, seed=args.seed, inputs=[args.study],
                              prior=args.prior if diffusion else None, command=command)
            results, volumes, seconds = {}, {}, {}
            for method in args.methods:
                settings = {"prior": args.prior, "seed": args.seed} if method in DIFFUSION else None
                start = time.perf_counter()
                recon = to_volume_units(run_method(m, method, settings, device=device, progress=True), m)
                seconds[method] = time.perf_counter() - start
                volumes[method] = recon
                results[method] = score(recon, reference, convention, mask)
                vol = output_volume(recon, m, f"medrecon {method} {args.task}")
                save_volume(vol, staged.path(files[method]))
                write_dicom_series(vol, staged.path(dicoms[method]), reference=volume, method=method,
                                   task=args.task, input_dirs=[args.study])
            display = measurement_display(m, reference, args.figure_window, card)
            png = figure_png_bytes(comparison_figure(reference, volumes, display, volume.spacing, convention,
                                                     mask, affine=volume.affine,
                                                     title=f"{args.task} on {args.study}"))
            staged.path(named["comparison.png"]).write_bytes(png)
            other_tasks = {"sparse-view-ct": ("wedge", "acceleration"), "limited-angle-ct": ("views", "acceleration"),
                           "cs-mri": ("views", "wedge")}[args.task]     # acquisition options of other tasks
            settings = {k: v for k, v in vars(args).items() if k not in ("overwrite", *other_tasks)}
            summary = {"study": str(args.study), "task": args.task, "shape": list(reference.shape),
                       "spacing": list(volume.spacing), "methods": args.methods, "settings": settings,
                       "seconds": seconds, "metrics": results}
            write_json(staged.path(named["metrics.json"]), summary, prov)
            lines = [f"# medrecon report: {args.task} on {args.study}", "",
                     f"Volume {reference.shape} (Z, Y, X), spacing {tuple(round(s, 3) for s in volume.spacing)} mm; "
                     f"metrics: {convention.describe()}" + (", inside the body mask" if mask is not None else "") + ".",
                     "", "| method | PSNR | SSIM | " + " | ".join(f"{p} PSNR" for p in PLANES) + " | seconds |",
                     "|---|---|---|" + "---|" * len(PLANES) + "---|"]
            for k, v in results.items():
                lines.append(f"| {k} | {v['psnr']:.2f} | {v['ssim']:.3f} | "
                             + " | ".join(f"{v['planes'][p]['psnr']:.2f}" for p in PLANES) + f" | {seconds[k]:.1f} |")
            lines += ["", "![comparison](comparison.png)", "", f"Command: `{command}`",
                      f"medrecon {prov['medrecon_version']}, git {prov['git_revision']}, torch {prov['torch_version']}, "
                      f"{prov['date']}"]
            write_text_atomic(staged.path(named["report.md"]), "\n".join(lines) + "\n")
            write_html_report(staged.path(named["report.html"]), title=f"medrecon: {args.task} on {args.study}",
                              metrics=results, settings=settings, provenance=prov, figure_png=png,
                              seconds=seconds)
        print(format_table(results))
        print(f"metrics: {convention.describe()}" + (" ; inside the body mask" if mask is not None else ""))
        print(f"wrote NIfTI, DICOM series, report.md, report.html, metrics.json and comparison.png to {out}/")
        return 0
    except UserError as exc:
        print(f"reconstruct_study: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
