#!/usr/bin/env python3
"""Reconstruct a DICOM study with several methods: NIfTI and derived DICOM out, plus a report.

The study's volume is the reference: the script simulates the chosen task from it (e.g. 8-view
sparse-view CT), reconstructs with every chosen method, writes each result as NIfTI and as a
derived DICOM series (patient and study identity copied from the study), and a report
(``report.md`` with the per-plane metrics table, ``metrics.json`` and a tri-planar figure).

    python scripts/reconstruct_study.py STUDY_DIR --output OUT_DIR \
        [--task sparse-view-ct] [--views 8] [--methods fbp tv dds] [--prior chest-ct] \
        [--size 128] [--slices 41:65] [--series UID] [--device auto]

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


def main(argv: list[str] | None = None) -> int:
    from medrecon.datasets import select_and_resample
    from medrecon.device import resolve_device
    from medrecon.errors import UserError
    from medrecon.io import load_volume, save_volume, write_dicom_series
    from medrecon.io.atomic import write_text_atomic
    from medrecon.io.jsonio import write_json
    from medrecon.io.outputs import OutputPlan, medrecon_dicom_only
    from medrecon.methods import run_method
    from medrecon.metrics import PLANES, format_table, volume_metrics
    from medrecon.tasks import CTOptions, MRIOptions, output_volume, simulate, to_volume_units
    from medrecon.viz import triplanar_figure

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="DICOM study folder (or a NIfTI file)")
    p.add_argument("--output", required=True, help="output folder (must not be inside the study folder)")
    p.add_argument("--series", default=None, help="SeriesInstanceUID or index when the folder holds several")
    p.add_argument("--task", default="sparse-view-ct", choices=("sparse-view-ct", "limited-angle-ct", "cs-mri"))
    p.add_argument("--views", type=int, default=8, help="sparse-view CT: number of views")
    p.add_argument("--wedge", type=float, default=90.0, help="limited-angle CT: wedge in degrees")
    p.add_argument("--acceleration", type=float, default=4.0, help="CS-MRI: acceleration")
    p.add_argument("--methods", nargs="+", default=["fbp", "tv", "dds"], help="methods to run")
    p.add_argument("--prior", default="chest-ct", help="prior for the diffusion methods")
    p.add_argument("--size", type=int, default=128, help="in-plane size after resampling (pixels)")
    p.add_argument("--slices", default=None, help="contiguous slab A:B of volume slice indices")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation and the samplers")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = p.parse_args(argv)
    try:
        out = Path(args.output)
        plan = OutputPlan(overwrite=args.overwrite)
        plan.add_input(args.study, "study")
        files = {m: plan.add_file(out / f"{m}.nii.gz", "--output") for m in args.methods}
        dicoms = {m: plan.add_dir(out / f"dicom_{m}", "--output", accept=medrecon_dicom_only)
                  for m in args.methods}
        figure = plan.add_file(out / "comparison.png", "--output")
        metrics_json = plan.add_file(out / "metrics.json", "--output")
        report = plan.add_file(out / "report.md", "--output")
        plan.check()
        volume = select_and_resample(load_volume(args.study, series=args.series), args.slices,
                                     args.size)
        plan.add_inputs(volume.source.get("files", []), "study")
        device = resolve_device(args.device)
        with plan.open() as staged:
            m = simulate(volume, args.task, seed=args.seed, ct=CTOptions(views=args.views, wedge=args.wedge),
                         mri=MRIOptions(acceleration=args.acceleration), device=device)
            reference = volume.array
            data_range = 2000.0 if volume.units == "HU" else float(reference.max() - reference.min())
            results, volumes, seconds = {}, {"reference": reference}, {}
            for method in args.methods:
                settings = {"prior": args.prior, "seed": args.seed} if method in ("dds", "mbir") else None
                start = time.perf_counter()
                recon = to_volume_units(run_method(m, method, settings, device=device, progress=True), m)
                seconds[method] = time.perf_counter() - start
                volumes[method] = recon
                results[method] = volume_metrics(recon, reference, data_range)
                vol = output_volume(recon, m, f"medrecon {method} {args.task}")
                save_volume(vol, staged.path(files[method]))
                write_dicom_series(vol, staged.path(dicoms[method]), reference=volume, method=method,
                                   task=args.task, input_dirs=[args.study])
            table = format_table(results)
            triplanar_figure(volumes, staged.path(figure), reference=reference, data_range=data_range,
                             spacing=tuple(volume.spacing))
            summary = {"study": str(args.study), "task": args.task, "shape": list(reference.shape),
                       "data_range": data_range, "methods": args.methods, "seconds": seconds,
                       "metrics": results}
            write_json(staged.path(metrics_json), summary)
            lines = [f"# medrecon report: {args.task} on {args.study}", "",
                     f"Volume {reference.shape} (Z, Y, X), spacing {tuple(round(s, 3) for s in volume.spacing)} mm; "
                     f"metrics on a data range of {data_range:g} {volume.units}.", "",
                     "| method | PSNR | SSIM | " + " | ".join(f"{p} PSNR" for p in PLANES) + " | seconds |",
                     "|---|---|---|" + "---|" * len(PLANES) + "---|"]
            for k, v in results.items():
                lines.append(f"| {k} | {v['psnr']:.2f} | {v['ssim']:.3f} | "
                             + " | ".join(f"{v['planes'][p]['psnr']:.2f}" for p in PLANES) + f" | {seconds[k]:.1f} |")
            lines += ["", "![comparison](comparison.png)", "",
                      "Command: `python scripts/reconstruct_study.py " + " ".join(sys.argv[1:] if argv is None else argv) + "`"]
            write_text_atomic(staged.path(report), "\n".join(lines) + "\n")
        print(table)
        print(f"wrote NIfTI, DICOM series, report.md, metrics.json and comparison.png to {out}/")
        return 0
    except UserError as exc:
        print(f"reconstruct_study: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
