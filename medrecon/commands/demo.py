"""``medrecon demo``: simulate a task on a shipped held-out volume (or a phantom), reconstruct with the
classical baselines and DDS, print per-plane metrics."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medrecon.device import DEVICE_CHOICES

NAME = "demo"
HELP = ("Simulate a task on a real volume shipped with medrecon (a chest CT slab for the CT tasks, a brain MR "
        "for CS-MRI; both of subjects no shipped prior was trained on) or on the 3D Shepp-Logan phantom, "
        "reconstruct it with the classical baselines and the diffusion sampler (dds), print a PSNR/SSIM table "
        "per plane and write volumes, metrics JSON, a tri-planar figure and an HTML report into --output.")
SHIPPED_DATA = {"lung2": "lung2_slab.nii.gz", "brain2": "brain2_slab.nii.gz"}

TASK_DEFAULTS = {
    "sparse-view-ct": {"methods": ("fbp", "tv"), "prior": "phantom"},
    "limited-angle-ct": {"methods": ("fbp", "tv"), "prior": "phantom"},
    "cs-mri": {"methods": ("zero-filled", "sense", "tv"), "prior": "brain-mri"},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=tuple(TASK_DEFAULTS), default="sparse-view-ct", help="task to simulate")
    p.add_argument("--data", choices=("auto", "lung2", "brain2", "phantom", "chest-ct"), default="auto",
                   help="auto: lung2 for the CT tasks, brain2 for CS-MRI; lung2 / brain2: slabs of a chest CT and "
                        "a brain MR of held-out subjects, shipped inside the package (medrecon/data/*.json: "
                        "provenance); phantom: the 3D Shepp-Logan phantom (--shape); chest-ct: the held-out "
                        "slab of the sample chest CT series (fetch it first with scripts/fetch_sample_data.py)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=(24, 128, 128),
                   help="phantom size in voxels")
    p.add_argument("--views", type=int, default=8, help="sparse-view CT: number of views")
    p.add_argument("--wedge", type=float, default=90.0, help="limited-angle CT: wedge, degrees")
    p.add_argument("--acceleration", type=float, default=4.0, help="CS-MRI: acceleration (uniform 1D mask)")
    p.add_argument("--no-diffusion", action="store_true", help="classical methods only")
    p.add_argument("--output", default="medrecon-demo", help="output folder (created; files are not overwritten "
                   "unless --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--mask", choices=("none", "body"), default="none",
                   help="metrics over the whole volume (none) or inside the body (body mask of the reference)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to compute")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --output")


def run(args: argparse.Namespace) -> int:
    from medrecon import phantoms
    from medrecon.device import resolve_device
    from medrecon.errors import UserError
    from medrecon.io import save_volume
    from medrecon.io.outputs import OutputPlan
    from medrecon.methods import DIFFUSION, run_method
    from medrecon.metrics import body_mask, format_table, measurement_convention, score
    from medrecon.prior.checkpoint import read_card, resolve
    from medrecon.provenance import provenance, write_json
    from medrecon.report import figure_png_bytes, write_html_report
    from medrecon.tasks import CTOptions, MRIOptions, output_volume, simulate, to_volume_units
    from medrecon.viz import comparison_figure, measurement_display
    from medrecon.volume import Volume

    device = resolve_device(args.device)
    out = Path(args.output)
    data = args.data if args.data != "auto" else ("brain2" if args.task == "cs-mri" else "lung2")
    if (data in ("chest-ct", "lung2")) == (args.task == "cs-mri") and data != "phantom":
        raise UserError(f"--data {data} is {'a CT' if data != 'brain2' else 'an MR'} volume; "
                        f"it does not fit --task {args.task}")
    methods = list(TASK_DEFAULTS[args.task]["methods"])
    if not args.no_diffusion and "dds" in DIFFUSION:
        methods.append("dds")
    plan = OutputPlan(overwrite=args.overwrite)  # every output checked before any work
    files = {name: plan.add_file(out / f"{name}.nii.gz", f"--output {out}:")
             for name in methods + ["reference"]}
    for key, name in (("metrics", "metrics.json"), ("figure", "comparison.png"), ("report", "report.html")):
        files[key] = plan.add_file(out / name, f"--output {out}:")
    plan.check()
    if data in SHIPPED_DATA:
        from importlib.resources import files as package_files

        from medrecon.io import load_volume
        volume = load_volume(str(package_files("medrecon") / "data" / SHIPPED_DATA[data]))
    elif data == "chest-ct":
        from medrecon.datasets import chest_ct_slab
        volume = chest_ct_slab("test")
    else:
        contrast = "mr" if args.task == "cs-mri" else "ct"
        volume = Volume.from_array(phantoms.shepp_logan_3d(args.shape, contrast=contrast),
                                   modality="MR" if contrast == "mr" else "CT", units="a.u.")
    reference = volume.array
    prior = "chest-ct" if data in ("chest-ct", "lung2") else TASK_DEFAULTS[args.task]["prior"]
    steps = {"tv": "ADMM-TV", "dds": f"DDS, warm start from ADMM-TV, prior {prior}"}
    print(f"plan: simulate {args.task} of {data} {tuple(reference.shape)}, then "
          + ", ".join(f"{m} ({steps[m]})" if m in steps else m for m in methods)
          + ("; DDS takes about two minutes on an idle 2-core CPU, longer on a busy one" if "dds" in methods else ""),
          flush=True)
    card = read_card(resolve(prior)) if "dds" in methods else None
    prov = provenance(device=device, seed=args.seed, prior=prior if card is not None else None,
                      inputs=[volume.source["path"]] if volume.source.get("path") else [],
                      command=getattr(args, "command_line", None))
    results, volumes, seconds = {}, {}, {}
    with plan.open() as staged:
        m = simulate(volume, args.task, seed=args.seed, ct=CTOptions(views=args.views, wedge=args.wedge),
                     mri=MRIOptions(acceleration=args.acceleration), device=device)
        # one convention (medrecon.metrics): CT in the prior's HU window, MR on the normalised magnitude
        convention = measurement_convention(m, reference, card)
        mask = body_mask(reference, convention) if args.mask == "body" else None
        for method in methods:
            settings = {"prior": prior, "seed": args.seed} if method == "dds" else None
            start = time.perf_counter()
            recon = run_method(m, method, settings, device=device, progress=not args.quiet)
            seconds[method] = time.perf_counter() - start
            volumes[method] = to_volume_units(recon, m)
            results[method] = score(volumes[method], reference, convention, mask)
            save_volume(output_volume(volumes[method], m, f"medrecon demo {method}"),
                        staged.path(files[method]))
        save_volume(volume, staged.path(files["reference"]))
        acquisition = {"sparse-view-ct": {"views": args.views}, "limited-angle-ct": {"wedge": args.wedge},
                       "cs-mri": {"acceleration": args.acceleration}}[args.task]
        summary = {"task": args.task, "data": data, "shape": list(reference.shape),
                   "settings": {**acquisition, "methods": methods, "prior": prior if card is not None else None},
                   "seconds": seconds, "metrics": results}
        write_json(staged.path(files["metrics"]), summary, prov)
        display = measurement_display(m, reference, "prior", card)
        fig = comparison_figure(reference, volumes, display, volume.spacing, convention, mask,
                                affine=volume.affine,
                                title=f"medrecon demo: {args.task} on {data} {reference.shape}")
        png = figure_png_bytes(fig)
        staged.path(files["figure"]).write_bytes(png)
        write_html_report(staged.path(files["report"]), title=f"medrecon demo: {args.task} on {data}",
                          metrics=results, settings=summary["settings"], provenance=prov, figure_png=png,
                          seconds=seconds, notes=[f"Volume {reference.shape} (Z, Y, X), spacing "
                                                  f"{tuple(round(s, 3) for s in volume.spacing)} mm, device {device}."])
    print(f"{args.task} on {data} {reference.shape}, device {device}"
          + (f", dds prior {prior}" if card is not None else ""))
    print(format_table(results))
    print(f"metrics: {convention.describe()}" + (" ; inside the body mask" if mask is not None else ""))
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    print(f"wrote volumes, metrics.json, comparison.png and report.html to {out}/")
    return 0
