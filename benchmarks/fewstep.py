"""Few-step DDS on held-out data: quality and wall time per step count and schedule (issue 21).

One command (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/fewstep.py            # lung2 8 views, brain2 x8, 24 x 128 x 128

Cases (held-out data, used for REPORTING only: the schedules were fitted on training data by
``scripts/fit_schedules.py``): ``lung2`` sparse-view CT at 8 views (prior ``body-ct``, the default
CT prior) and ``brain2`` CS-MRI x8 uniform 1D, 8 coils (prior ``brain-mri``), simulated as in
``benchmarks/diffusion.py`` (same seed, same slab).

Rows, all on the same measurement and in one process with one thread:

- ADMM-TV 3D at the task's default ``lam_rel`` (the one DDS starts from: its time is the
  denominator of "DDS / TV time") and at the multiples in ``--tv-factors`` (the best one, an
  oracle choice favourable to TV, is the baseline of "share of the 50-step gain");
- DDS with the uniform schedule at ``--steps`` (default 5 10 20 50) and with the prior's fitted
  schedule at each step count it ships (``--fitted-steps``, default 5 10 20), and optionally the
  DiffPIR-like lever alone (uniform levels with the fitted entry's ``dc_iterations`` and ``eta``)
  and a bf16-autocast row (``--bf16-steps``).

Every DDS row starts from the same ADMM-TV warm start, computed once per case and timed; a DDS
row's wall time is that warm-start time plus its sampler time (what a user's run spends). The
network share is the sampler's network time over that wall time.

Outputs ``<output-dir>/fewstep.md`` (table, machine, load, command) and ``fewstep.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FORMAT = "medrecon-benchmark-fewstep/1"
CASES = {"lung2-sv8": ("lung2", "sparse-view-ct", "body-ct", {"views": 8},
                       "lung2: sparse-view CT, 8 views"),
         "brain2-x8-u1d": ("brain2", "cs-mri", "brain-mri",
                           {"acceleration": 8.0, "mask": "uniform1d"},
                           "brain2: CS-MRI x8 uniform 1D, 8 coils")}




def run_case(key: str, args: argparse.Namespace, log, rows: list, save) -> dict:
    """Run one case's rows, appending them to ``rows`` and calling ``save()`` after each."""
    import numpy as np
    import torch

    from benchmarks.diffusion import load_volume, working_reference
    from medrecon.config import make_settings
    from medrecon.metrics import volume_metrics
    from medrecon.methods import run_method
    from medrecon.prior.checkpoint import load_prior
    from medrecon.samplers.config import config_for_task
    from medrecon.samplers.dds import dds
    from medrecon.samplers.fewstep import prior_schedules
    from medrecon.samplers.intensity import prior_map_for_measurement
    from medrecon.samplers.run import tv_warm_start
    from medrecon.tasks import CTOptions, MRIOptions, build_operator, data_in_working_units, simulate

    dataset, task, prior, opts, label = CASES[key]
    volume, note = load_volume(dataset, tuple(args.shape))
    if task == "cs-mri":
        m = simulate(volume, task, seed=args.seed, mri=MRIOptions(coils=8, **opts))
    else:
        m = simulate(volume, task, seed=args.seed, ct=CTOptions(**opts))
    ref = working_reference(volume, m)
    op = build_operator(m)

    def score(x: torch.Tensor) -> dict:
        w = x.detach().cpu()
        return volume_metrics((w.abs() if w.is_complex() else w).numpy(), ref, 1.0)

    def add(row: str, method: str, x: torch.Tensor, seconds: float, **extra: Any) -> dict:
        met = score(x)
        r = {"case": key, "label": label, "row": row, "method": method, "psnr": met["psnr"],
             "ssim": met["ssim"], "planes": met["planes"], "seconds": seconds, **extra}
        rows.append(r)
        log(f"  {key} {row}: {met['psnr']:.2f} dB, {seconds:.1f} s")
        save()
        return r

    default_lam = make_settings("tv", task=task).lam_rel
    for factor in sorted(set([1.0, *args.tv_factors])):
        settings = {"lam_rel": default_lam * factor, "axes": "3d"}
        t0, c0 = time.perf_counter(), time.process_time()
        x = run_method(m, "tv", settings, device="cpu", operator=op)
        add(f"ADMM-TV 3D (lam_rel {settings['lam_rel']:g}{', task default' if factor == 1 else ''})",
            "tv", x, time.perf_counter() - t0, settings=settings, default=factor == 1.0,
            cpu_seconds=time.process_time() - c0)

    den = load_prior(prior)
    y = data_in_working_units(m, op, "cpu")
    imap = prior_map_for_measurement(m, den.card, op, y)
    y_p = imap.data_to_prior(op, y)
    t0, c0 = time.perf_counter(), time.process_time()
    x_init = tv_warm_start(task)(op, y_p)
    warm, warm_cpu = time.perf_counter() - t0, time.process_time() - c0
    log(f"  {key} warm start (ADMM-TV, task default): {warm:.1f} s")
    fitted = prior_schedules(den)[0]

    def run_dds(row: str, schedule: str, steps: int, **settings: Any) -> None:
        cfg = config_for_task("dds", task, steps=steps, schedule=schedule, **settings)
        t0, c0 = time.perf_counter(), time.process_time()
        res = dds(op, y_p, den, cfg, seed=args.seed, x_init=x_init)
        sampler, sampler_cpu = time.perf_counter() - t0, time.process_time() - c0
        info = res.info
        add(row, "dds", imap.image_from_prior(res.x), warm + sampler, steps=steps,
            cpu_seconds=warm_cpu + sampler_cpu,
            schedule=info["schedule"], nfe_per_slice=info["nfe_per_slice"],
            time_sampler=sampler, time_warm_start=warm, time_network=info["time_network"],
            time_physics=info["time_physics"], precision=info["precision"], settings=settings)

    # the 50-step reference first, then the fitted and uniform rows from few steps up (a run
    # stopped early keeps the rows that matter most)
    ref_steps = max(args.steps)
    run_dds(f"DDS uniform ({ref_steps} steps)", "uniform", ref_steps)
    def pair(steps: int) -> None:
        if steps in args.fitted_steps and steps in fitted:
            run_dds(f"DDS fitted ({steps} steps)", "fitted", steps)
        if steps in args.steps and steps != ref_steps:
            run_dds(f"DDS uniform ({steps} steps)", "uniform", steps)

    counts = sorted(set(args.steps) | set(args.fitted_steps))
    for steps in [k for k in counts if k <= 10]:
        pair(steps)
    for steps in args.dc_only_steps:
        e, base = fitted.get(steps), config_for_task("dds", task)
        if e is not None and (e.dc_iterations not in (None, base.dc_iterations)
                              or e.eta not in (None, base.eta)):
            run_dds(f"DDS uniform + fitted DC/eta ({steps} steps; DiffPIR-like alone)", "uniform",
                    steps, dc_iterations=e.dc_iterations or 1,
                    **({"eta": e.eta} if e.eta is not None else {}))
    for steps in [k for k in counts if k > 10]:
        pair(steps)
    for steps in args.bf16_steps:
        run_dds(f"DDS {'fitted' if steps in fitted else 'uniform'} ({steps} steps), bf16 autocast",
                "auto", steps, precision="bfloat16")
    return {"data": note, "shape": list(volume.shape), "prior": prior, "task": task,
            "time_warm_start": warm, "reference_row": f"DDS uniform ({ref_steps} steps)",
            "schedules_file": str(prior_schedules(den)[1])}


def derive(rows: list[dict]) -> None:
    """Per DDS row: time over the task-default ADMM-TV time, network share, PSNR against the
    case's 50-step uniform row and the share of its gain over the best ADMM-TV kept."""
    for key in {r["case"] for r in rows}:
        case = [r for r in rows if r["case"] == key]
        tv_rows = [r for r in case if r["method"] == "tv"]
        tv_default = next((r for r in tv_rows if r["default"]), None)
        best_tv = max(tv_rows, key=lambda r: r["psnr"]) if tv_rows else None
        dds_rows = [r for r in case if r["method"] == "dds"]
        ref = max(dds_rows, key=lambda r: (r["schedule"]["name"] == "uniform", r["steps"]),
                  default=None)
        for r in dds_rows:
            r["network_share"] = r["time_network"] / r["seconds"]
            if tv_default is not None:
                r["tv_time_ratio"] = r["seconds"] / tv_default["seconds"]
                if r.get("cpu_seconds") and tv_default.get("cpu_seconds"):
                    r["tv_cpu_ratio"] = r["cpu_seconds"] / tv_default["cpu_seconds"]
            if ref is not None and best_tv is not None:
                r["reference"] = ref["row"]
                r["vs_reference_db"] = r["psnr"] - ref["psnr"]
                r["gain_share"] = (r["psnr"] - best_tv["psnr"]) / (ref["psnr"] - best_tv["psnr"])


def _num(v: Optional[float], fmt: str, unit: str = "") -> str:
    return "" if v is None else f"{v:{fmt}}{unit}"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Few-step DDS: {', '.join(meta['cases'])} ({meta['date'][:10]})", "",
             f"Command: `{meta['command']}`", "",
             f"Machine: {meta['cpu']}, {meta['cpu_count']} CPUs, {meta['threads']} thread, torch "
             f"{meta['torch']}, git {meta['git']}; load average {meta['load_average_start'][0]:.2f} "
             f"at the start and {meta.get('load_average_end', [float('nan')])[0]:.2f} at the end "
             "(a shared machine: other jobs ran on the other core; compare times within the table). "
             "PSNR/SSIM of the whole volume in working units, data range 1. DDS time = the ADMM-TV "
             "warm start + the sampler; \"DDS / TV\" divides it by the task-default ADMM-TV time on "
             "the same measurement (CPU time: the process's own, less sensitive to the machine's load; "
             "not recorded by older runs); \"gain kept\" = (PSNR - best TV) / (50-step uniform - best TV).",
             *(["", f"Note: {meta['note']}"] if meta.get("note") else []),
             "",
             "| case | method | NFE/slice | PSNR | SSIM | time (s) | CPU time (s) | network share "
             "| DDS / TV time | DDS / TV CPU time | vs 50-step (dB) | gain kept |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["method"] == "tv":
            lines.append(f"| {r['label']} | {r['row']} | 0 | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                         f"{r['seconds']:.1f} | {_num(r.get('cpu_seconds'), '.1f')} | | | | | |")
            continue
        lines.append(f"| {r['label']} | {r['row']} | {r['nfe_per_slice']} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.3f} | {r['seconds']:.1f} | {_num(r.get('cpu_seconds'), '.1f')} | "
                     f"{100 * r['network_share']:.0f} % | "
                     f"{r.get('tv_time_ratio', float('nan')):.2f}x | {_num(r.get('tv_cpu_ratio'), '.2f', 'x')} | "
                     f"{r.get('vs_reference_db', float('nan')):+.2f} | "
                     f"{100 * r.get('gain_share', float('nan')):.0f} % |")
    lines += ["", "Schedules (fitted on training data only, `scripts/fit_schedules.py`):", ""]
    for key, c in meta["cases"].items():
        seen = set()
        for r in rows:
            if r["case"] == key and r["method"] == "dds" and r["schedule"]["name"] == "fitted":
                s = r["schedule"]
                text = (f"sigmas {', '.join(f'{v:.3g}' for v in s['sigmas'])}; eta {s['eta']:g}, "
                        f"dc_iterations {s['dc_iterations']}, cg_iterations {s['cg_iterations']}")
                if (r["steps"], text) not in seen:
                    seen.add((r["steps"], text))
                    lines.append(f"- {key} ({c['prior']}), {r['steps']} steps: {text}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--shape", type=int, nargs=3, default=[24, 128, 128])
    p.add_argument("--steps", type=int, nargs="*", default=[5, 10, 20, 50],
                   help="uniform-schedule step counts (the largest is the reference)")
    p.add_argument("--fitted-steps", type=int, nargs="*", default=[5, 10, 20])
    p.add_argument("--dc-only-steps", type=int, nargs="*", default=[10])
    p.add_argument("--bf16-steps", type=int, nargs="*", default=[])
    p.add_argument("--tv-factors", type=float, nargs="*", default=[2.0, 4.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results" / "fewstep"))
    p.add_argument("--from-json", default=None, metavar="FILE",
                   help="re-render FILE's fewstep.md (same folder) from its fewstep.json; runs nothing")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    import torch

    from benchmarks.diffusion import _git_revision
    from medrecon.prior.precision import cpu_model
    from medrecon.io.atomic import write_text_atomic

    args = parse_args(argv)
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        derive(doc["rows"])
        write_text_atomic(Path(args.from_json).with_name("fewstep.md"), markdown(doc["rows"], doc),
                          overwrite=True)
        return 0
    torch.set_num_threads(1)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    command = "python benchmarks/fewstep.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    meta = {"format": FORMAT, "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "command": command.strip(), "threads": 1, "torch": torch.__version__,
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "git": _git_revision(),
            "python": platform.python_version(), "load_average_start": list(os.getloadavg()),
            "seed": args.seed, "cases": {}}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def save() -> None:             # after every row: a stopped run keeps what it measured
        derive(rows)
        meta["load_average_end"] = list(os.getloadavg())
        write_text_atomic(out / "fewstep.md", markdown(rows, meta), overwrite=True)
        write_text_atomic(out / "fewstep.json", json.dumps({**meta, "rows": rows}, indent=1,
                                                           default=float) + "\n", overwrite=True)

    for key in args.cases:
        log(f"{key}")
        meta["cases"][key] = {"prior": CASES[key][2]}
        meta["cases"][key] = run_case(key, args, log, rows, save)
        save()
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
