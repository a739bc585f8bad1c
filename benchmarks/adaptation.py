"""Benchmark: DDS with the prior adapted to the measurement (issue 24) on development cases.

One command (from the repository root)::

    python benchmarks/adaptation.py                       # development cases, 8 x 128 x 128, 8 views

Cases (sparse-view CT, parallel beam, seeded simulation with :func:`medrecon.tasks.simulate`):

- ``lung1-chest``: the chest-ct prior on lung1 (a training volume of that prior: in distribution);
- ``lung1-phantom``: the phantom prior on lung1 (out of distribution);
- ``abdomen-chest``: the chest-ct prior on the abdomen part of the TotalSegmentator volume
  (``abdomen_pelvis_slab("train")``; out of distribution for it);
- ``abdomen-phantom``: the phantom prior on the same slab (out of distribution).

The held-out cases ``lung2-chest``, ``lung2-phantom`` and ``pelvis-chest`` run only when named in
``--cases``; they are for the final report, never for choosing settings.

Rows per case: ADMM-TV 3D at the best ``lam_rel`` of a grid (an oracle choice, favourable to TV),
DDS with the task's defaults (warm start at sigma 0.3) at ``--steps`` steps, the conservative
warm start (``start_sigma=0.05``, 10 steps), and DDS + adaptation in the variants of
:data:`VARIANTS` (``--variants`` picks some). Columns: PSNR / SSIM of the volume in working units,
network passes per slice (forward + backward; adaptation's backward passes counted as one pass
each), wall time, and the prior-fit statistic (:mod:`medrecon.samplers.prior_fit`).

Outputs ``<output-dir>/adaptation.json`` and ``adaptation.md``, rewritten after every case.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

CASES = {  # key: (dataset, prior, in distribution, held out)
    "lung1-chest": ("lung1", "chest-ct", True, False),
    "lung1-phantom": ("lung1", "phantom", False, False),
    "abdomen-chest": ("abdomen", "chest-ct", False, False),
    "abdomen-phantom": ("abdomen", "phantom", False, False),
    "lung2-chest": ("lung2", "chest-ct", True, True),
    "lung2-phantom": ("lung2", "phantom", False, True),
    "pelvis-chest": ("pelvis", "chest-ct", False, True),
}
DEVELOPMENT = [k for k, v in CASES.items() if not v[3]]

# DDS + adaptation variants: name -> settings (on top of the task's DDS defaults and --steps)
VARIANTS: dict[str, dict[str, Any]] = {
    "every-3x3-lr1e-3": {"adapt": True, "adapt_steps": 3, "adapt_slices": 3, "adapt_lr": 1e-3},
    "every-3x3-lr1e-2": {"adapt": True, "adapt_steps": 3, "adapt_slices": 3, "adapt_lr": 1e-2},
    "high-noise-3x3-lr1e-2": {"adapt": True, "adapt_steps": 3, "adapt_slices": 3, "adapt_lr": 1e-2,
                              "adapt_until_sigma": 0.1},
    "every-3x3-lr1e-2-tv": {"adapt": True, "adapt_steps": 3, "adapt_slices": 3, "adapt_lr": 1e-2,
                            "adapt_tv": 0.02},
    "every-1x3-lr1e-2-cg1": {"adapt": True, "adapt_steps": 1, "adapt_slices": 3, "adapt_lr": 1e-2,
                             "adapt_cg": 1},
    "every-3x3-lr3e-4": {"adapt": True, "adapt_steps": 3, "adapt_slices": 3, "adapt_lr": 3e-4},
    "every-1x3-lr1e-3-cg1": {"adapt": True, "adapt_steps": 1, "adapt_slices": 3, "adapt_lr": 1e-3,
                             "adapt_cg": 1},
    "high-noise-3x3-lr1e-3": {"adapt": True, "adapt_steps": 3, "adapt_slices": 3, "adapt_lr": 1e-3,
                              "adapt_until_sigma": 0.1},
}
TV_FACTORS = (0.5, 1.0, 2.0)


def load(dataset: str, slices: int, size: int):
    """A ``slices x size x size`` slab (central slices) of a sample volume, HU."""
    from diffusion import square_with_air

    from medrecon.datasets import abdomen_pelvis_slab, real_volume, resample_volume, take_slab

    if dataset in ("lung1", "lung2"):
        volume, source = real_volume(dataset), f"real_volume({dataset!r})"
    elif dataset == "abdomen":
        volume, source = square_with_air(abdomen_pelvis_slab("train")), "abdomen_pelvis_slab('train')"
    elif dataset == "pelvis":
        volume, source = square_with_air(abdomen_pelvis_slab("test")), "abdomen_pelvis_slab('test')"
    else:
        raise ValueError(dataset)
    z = min(slices, volume.shape[0])
    z0 = (volume.shape[0] - z) // 2
    volume = resample_volume(take_slab(volume, z0, z0 + z), size)
    return volume, f"{source} slices {z0}..{z0 + z - 1}, resampled to {size} x {size}"


def metrics_of(x, reference: np.ndarray) -> dict:
    from medrecon.metrics import volume_metrics

    w = x.detach().cpu()
    w = (w.abs() if w.is_complex() else w).numpy()
    m = volume_metrics(w, reference, 1.0)
    return {"psnr": m["psnr"], "ssim": m["ssim"]}


def run_case(key: str, args: argparse.Namespace, log) -> tuple[list[dict], dict]:
    from diffusion import working_reference
    from medrecon.config import make_settings
    from medrecon.methods import run_method
    import medrecon.published  # noqa: F401 -- registers the published families (ncsnpp, adm)
    from medrecon.prior.checkpoint import load_prior
    from medrecon.samplers.config import config_for_task
    from medrecon.samplers.run import reconstruct
    from medrecon.tasks import CTOptions, build_operator, data_in_working_units, simulate

    dataset, prior, in_dist, held_out = CASES[key]
    volume, note = load(dataset, args.slices, args.size)
    m = simulate(volume, "sparse-view-ct", seed=args.seed, ct=CTOptions(views=args.views))
    ref = working_reference(volume, m)
    op = build_operator(m)
    y = data_in_working_units(m, op)
    rows: list[dict] = []

    grid = []
    for factor in (TV_FACTORS if args.baselines else ()):
        settings = {"lam_rel": make_settings("tv", task=m.task).lam_rel * factor, "axes": "3d"}
        t0 = time.perf_counter()
        x = run_method(m, "tv", settings, operator=op)
        grid.append((metrics_of(x, ref), settings, time.perf_counter() - t0))
        log(f"  {key} ADMM-TV lam_rel={settings['lam_rel']:g}: {grid[-1][0]['psnr']:.2f} dB")
    best = max(grid, key=lambda g: g[0]["psnr"]) if grid else None
    if best is not None:
        rows.append({"row": f"ADMM-TV 3D (best lam_rel {best[1]['lam_rel']:g})", "settings": best[1],
                     **best[0], "seconds": best[2], "passes_per_slice": 0,
                     "note": "grid " + ", ".join(f"{g[1]['lam_rel']:g}: {g[0]['psnr']:.2f}" for g in grid)})

    den = load_prior(prior, image_shape=(args.size, args.size))
    dds_rows = [("DDS (defaults)", {"steps": args.steps}),
                ("DDS conservative start (start_sigma 0.05, 10 steps)", {"start_sigma": 0.05, "steps": 10})
                ] if args.baselines else []
    dds_rows += [(f"DDS + adaptation [{name}]", {"steps": args.steps, **VARIANTS[name]})
                 for name in args.variants]
    fit = None
    for label, settings in dds_rows:
        cfg = config_for_task("dds", m.task, **settings)
        t0 = time.perf_counter()
        result = reconstruct("dds", op, y, den, m, cfg, seed=args.seed)
        seconds = time.perf_counter() - t0
        info = result.info
        fit = info.get("prior_fit") or fit
        passes = info["nfe_per_slice"] + info.get("adapt_passes_per_slice", 0.0)
        row = {"row": label, "settings": settings, **metrics_of(result.x, ref), "seconds": seconds,
               "passes_per_slice": passes, "time_adapt": info.get("time_adapt"),
               "adapt_loss_first": info.get("adapt_loss_first"),
               "adapt_loss_last": info.get("adapt_loss_last"), "residual": info["residual"]}
        rows.append(row)
        log(f"  {key} {label}: {row['psnr']:.2f} dB, {seconds:.1f} s, {passes:.1f} passes/slice")
    return rows, {"data": note, "prior": prior, "in_distribution": in_dist, "held_out": held_out,
                  "shape": list(volume.shape), "views": args.views, "prior_fit": fit}


def fit_statistics(key: str, args: argparse.Namespace, sigmas=(0.05, 0.1, 0.2, 0.4)) -> dict:
    """The denoising residual of the prior on the case's TV warm start at several sigmas, and its
    ratio to the prior's recorded denoising RMSE (:mod:`medrecon.samplers.prior_fit`)."""
    import medrecon.published  # noqa: F401 -- registers the published families (ncsnpp, adm)
    from medrecon.prior.checkpoint import load_prior
    from medrecon.samplers.intensity import prior_map_for_measurement
    from medrecon.samplers.prior_fit import denoising_residual, reference_rmse
    from medrecon.samplers.run import warm_start_image
    from medrecon.tasks import CTOptions, build_operator, data_in_working_units, simulate

    dataset, prior, in_dist, _ = CASES[key]
    volume, _ = load(dataset, args.slices, args.size)
    m = simulate(volume, "sparse-view-ct", seed=args.seed, ct=CTOptions(views=args.views))
    op = build_operator(m)
    y = data_in_working_units(m, op)
    den = load_prior(prior, image_shape=(args.size, args.size))
    imap = prior_map_for_measurement(m, den.card, op, y)
    x_w = warm_start_image(op, imap.data_to_prior(op, y), m.task)
    out = {"in_distribution": in_dist, "prior": prior}
    for sigma in sigmas:
        rms, ref = denoising_residual(den, x_w, sigma), reference_rmse(den.card, sigma)
        out[f"sigma={sigma:g}"] = {"residual_rms": rms, "reference_rmse": ref,
                                   "ratio": None if ref is None else rms / ref}
    return out


def markdown(results: dict, meta: dict) -> str:
    lines = ["# DDS + adaptation (issue 24): development cases", "",
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}, {meta['threads']} thread(s)", ""]
    for key, case in results.items():
        fit = case["meta"].get("prior_fit") or {}
        ratio = fit.get("ratio")
        lines += [f"## {key}: prior {case['meta']['prior']} on {case['meta']['data']}, "
                  f"{case['meta']['views']} views "
                  f"({'in' if case['meta']['in_distribution'] else 'out of'} distribution"
                  f"{', held out' if case['meta']['held_out'] else ''})", "",
                  f"Prior fit: denoising residual ratio {ratio:.2f} (threshold {fit.get('threshold')}; "
                  f"{'fits' if fit.get('fits') else 'warning'})" if ratio is not None else "Prior fit: n/a", "",
                  "| row | PSNR (dB) | SSIM | passes / slice | time (s) | note |",
                  "|---|---|---|---|---|---|"]
        for r in case["rows"]:
            lines.append(f"| {r['row']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['passes_per_slice']:.1f} | "
                         f"{r['seconds']:.1f} | {r.get('note', '')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", default=DEVELOPMENT, choices=sorted(CASES))
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=sorted(VARIANTS))
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="DDS steps of the default and adapted rows")
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="only the adaptation rows (no ADMM-TV grid, DDS and conservative rows)")
    p.add_argument("--fit-only", action="store_true",
                   help="only the prior-fit statistic at several sigmas (fit.json), no reconstructions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results" / "adaptation"))
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    import torch

    from medrecon.io.atomic import atomic_path

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/adaptation.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.processor() or platform.machine()} ({platform.platform()})",
            "threads": args.threads}
    results: dict[str, Any] = {}
    if args.fit_only:
        fits = {key: fit_statistics(key, args) for key in args.cases}
        with atomic_path(out / "fit.json", overwrite=True, what="results") as tmp:
            Path(tmp).write_text(json.dumps({"meta": meta, "cases": fits}, indent=1))
        print(json.dumps(fits, indent=1))
        return 0
    for key in args.cases:
        print(f"{key} ...", flush=True)
        rows, case_meta = run_case(key, args, lambda s: print(s, flush=True))
        results[key] = {"meta": case_meta, "rows": rows}
        with atomic_path(out / "adaptation.json", overwrite=True, what="results") as tmp:
            Path(tmp).write_text(json.dumps({"meta": meta, "cases": results}, indent=1, default=float))
        with atomic_path(out / "adaptation.md", overwrite=True, what="results") as tmp:
            Path(tmp).write_text(markdown(results, meta))
    print(f"wrote {out / 'adaptation.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
