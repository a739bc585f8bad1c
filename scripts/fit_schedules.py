"""Fit few-step DDS schedules offline on TRAINING data and write them beside the prior's card.

    OMP_NUM_THREADS=1 python scripts/fit_schedules.py --prior body-ct --steps 5 10 20
    OMP_NUM_THREADS=1 python scripts/fit_schedules.py --prior brain-mri --steps 5 10 20

Training cases only (never the held-out lung2, brain2, chest files 1-41..64 or the pelvis):

- CT priors: ``lung1`` (and, for body-ct, the abdomen ``train`` part) at 8 views, the central
  ``--slices`` slices resampled to 128 x 128;
- MR prior: ``brain1`` at x8 uniform 1D, 8 coils.

Every candidate runs the task's default DDS (warm start from ADMM-TV at sigma 0.3; the start is
computed once per case) with one fixed seed; the objective is the mean PSNR (working units, data
range 1) over the cases. Search, by coordinate descent from the uniform-like start
(``sigma_top`` = the warm start, ``sigma_bottom`` = the uniform schedule's last level, rho 2):

1. TrO-like: the noise levels, ``(a + i/(n-1) (b - a))^rho`` over rho, sigma_top, sigma_bottom;
2. DiffPIR-like: at those levels, ``dc_iterations`` (ADMM-TV steps per network call) and ``eta``.

The chosen schedule (stage 1 + 2) is written to ``medrecon/prior/weights/<prior>/schedules.json``
with the training PSNR of uniform, stage 1 and stage 2, and of stage 2's DC/eta on the uniform
levels (DiffPIR-like alone); a JSON log of every evaluation goes to ``--log``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TRAIN_CASES = {"CT": ("lung1", "abdomen-train"), "MR": ("brain1",)}
FORBIDDEN = ("lung2", "brain2", "pelvis", "chest-ct-test")


def training_case(name: str, slices: int, size: int = 128) -> dict:
    """A simulated training measurement: ``{name, measurement, op, y_prior-ready pieces}``."""
    import numpy as np

    from medrecon import datasets
    from medrecon.tasks import CTOptions, MRIOptions, simulate

    if name in FORBIDDEN:
        raise SystemExit(f"{name} is held-out data: schedules are fitted on training data only")
    if name == "abdomen-train":
        from benchmarks.diffusion import square_with_air
        volume = square_with_air(datasets.abdomen_pelvis_slab("train"))
    else:
        volume = datasets.real_volume(name)
    z = min(volume.shape[0], slices)
    z0 = (volume.shape[0] - z) // 2
    volume = datasets.resample_volume(datasets.take_slab(volume, z0, z0 + z), size)
    if name == "brain1":
        m = simulate(volume, "cs-mri", seed=0, mri=MRIOptions(coils=8, acceleration=8.0, mask="uniform1d"))
    else:
        m = simulate(volume, "sparse-view-ct", seed=0, ct=CTOptions(views=8))
    from benchmarks.diffusion import working_reference
    return {"name": name, "slices": f"{z0}..{z0 + z - 1}", "measurement": m,
            "reference": np.asarray(working_reference(volume, m))}


class Evaluator:
    """PSNR of DDS with a candidate schedule on the training cases (warm starts cached)."""

    def __init__(self, prior: str, cases: list[dict], seed: int = 0) -> None:
        from medrecon.prior.checkpoint import load_prior
        from medrecon.samplers.config import config_for_task
        from medrecon.samplers.intensity import prior_map_for_measurement
        from medrecon.samplers.run import warm_start_image
        from medrecon.tasks import build_operator, data_in_working_units

        self.den = load_prior(prior)
        self.tmp = Path(tempfile.mkdtemp(prefix="medrecon-fit-"))
        self.den.prior_dir = self.tmp
        self.seed, self.cases, self.log = seed, [], []
        for c in cases:
            m = c["measurement"]
            op = build_operator(m)
            y = data_in_working_units(m, op, "cpu")
            imap = prior_map_for_measurement(m, self.den.card, op, y)
            y_p = imap.data_to_prior(op, y)
            cfg = config_for_task("dds", m.task)
            x0 = warm_start_image(op, y_p, m.task)
            self.cases.append({**c, "op": op, "y_p": y_p, "imap": imap, "cfg": cfg, "x_init": x0})

    def __call__(self, steps: int, entry: Any, tag: str) -> float:
        """Mean PSNR with ``entry`` (a StepSchedule; None: uniform)."""
        import numpy as np

        from medrecon.metrics import psnr
        from medrecon.samplers.dds import dds
        from medrecon.samplers.fewstep import write_schedules

        if entry is not None:
            write_schedules(self.tmp / "schedules.json", "candidate", {steps: entry})
        values, t0 = [], time.perf_counter()
        for c in self.cases:
            res = dds(c["op"], c["y_p"], self.den, c["cfg"], seed=self.seed, x_init=c["x_init"],
                      steps=steps, schedule="uniform" if entry is None else "fitted")
            x = c["imap"].image_from_prior(res.x).detach().cpu()
            x = (x.abs() if x.is_complex() else x).numpy()
            values.append(psnr(x, c["reference"], 1.0))
        value = float(np.mean(values))
        self.log.append({"steps": steps, "tag": tag, "psnr": value, "per_case": values,
                         "entry": None if entry is None else entry.to_json(),
                         "seconds": time.perf_counter() - t0})
        print(f"  {steps:2d} steps {tag:48s} {value:.3f} dB  ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
        return value


def uniform_levels(cfg: Any, steps: int, sigma_max: float) -> list[float]:
    from medrecon.samplers.dds import dds_sigmas
    import dataclasses
    return dds_sigmas(dataclasses.replace(cfg, steps=steps), sigma_max)[1]


def fit(ev: Evaluator, steps: int, budget: str) -> tuple[Any, dict]:
    from medrecon.samplers.fewstep import StepSchedule, karras_sigmas

    cfg = ev.cases[0]["cfg"]
    uni = uniform_levels(cfg, steps, float(ev.den.sigma_max))
    p_uni = ev(steps, None, "uniform")
    top0, bottom0 = uni[0], uni[-1]
    params = {"rho": 2.0, "top": top0, "bottom": bottom0}
    grids = {"rho": [1.0, 2.0, 4.0, 7.0], "top": [top0, 0.2, 0.12, 0.07],
             "bottom": [0.005, bottom0, 0.03, 0.06]}
    if budget == "small":
        grids = {"rho": [4.0], "top": [top0, 0.2, 0.12], "bottom": [bottom0, 0.03]}
    cache: dict = {}

    def levels(p: dict) -> list[float]:
        return karras_sigmas(steps, p["top"], min(p["bottom"], p["top"] * 0.5), p["rho"])

    def score(p: dict, dc: int = 1, eta: float = cfg.eta) -> float:
        key = (round(p["rho"], 3), round(p["top"], 4), round(p["bottom"], 4), dc, eta)
        if key not in cache:
            entry = StepSchedule(tuple(levels(p)), eta=eta, dc_iterations=dc,
                                 start_sigma=cfg.start_sigma)
            cache[key] = ev(steps, entry, f"rho {p['rho']:g} top {p['top']:.3g} bottom "
                                          f"{min(p['bottom'], p['top'] * 0.5):.3g} dc {dc} eta {eta:g}")
        return cache[key]

    best = score(params)
    for name in ("rho", "top", "bottom"):           # stage 1: the noise levels (TrO-like)
        for v in grids[name]:
            cand = {**params, name: v}
            s = score(cand)
            if s > best:
                best, params = s, cand
    p_levels = best
    dc, eta = 1, cfg.eta                             # stage 2: DC per call, noise mix (DiffPIR-like)
    for cand_dc in ([2, 4] if budget != "small" else [4]):
        s = score(params, cand_dc, eta)
        if s > best:
            best, dc = s, cand_dc
    for cand_eta in ([0.5, 0.0] if budget != "small" else []):
        s = score(params, dc, cand_eta)
        if s > best:
            best, eta = s, cand_eta
    p_dc_uniform = None
    if (dc, eta) != (1, cfg.eta):                    # the DiffPIR-like lever alone, on uniform levels
        p_dc_uniform = ev(steps, StepSchedule(tuple(uni), eta=eta, dc_iterations=dc,
                                              start_sigma=cfg.start_sigma), "uniform levels + dc/eta")
    entry = StepSchedule(tuple(levels(params)), eta=eta, cg_iterations=None, dc_iterations=dc,
                         start_sigma=cfg.start_sigma,
                         fit={"psnr": round(best, 3), "psnr_uniform": round(p_uni, 3),
                              "psnr_levels_only": round(p_levels, 3),
                              "psnr_uniform_levels_with_dc": (None if p_dc_uniform is None
                                                              else round(p_dc_uniform, 3)),
                              "rho": params["rho"], "sigma_top": params["top"],
                              "sigma_bottom": min(params["bottom"], params["top"] * 0.5),
                              "evaluations": len(cache) + 1 + (p_dc_uniform is not None)})
    return entry, entry.fit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", required=True, choices=("body-ct", "chest-ct", "brain-mri"))
    p.add_argument("--steps", type=int, nargs="*", default=[5, 10, 20])
    p.add_argument("--slices", type=int, default=4, help="slices per training case")
    p.add_argument("--small", type=int, nargs="*", default=[20],
                   help="step counts searched on a smaller grid (rho 4; sigma_top: uniform, 0.2, "
                        "0.12; dc_iterations 4; CPU time)")
    p.add_argument("--reference-steps", type=int, nargs="*", default=[],
                   help="also measure uniform DDS at these step counts on the same cases (recorded "
                        "in the file as 'uniform_reference': what a few-step default is judged against)")
    p.add_argument("--log", default=None, help="JSON log of every evaluation")
    p.add_argument("--output", default=None, help="schedules.json to write (default: beside the card)")
    a = p.parse_args(argv)
    import torch

    from medrecon.prior.card import resolve
    from medrecon.samplers.fewstep import read_schedules, write_schedules

    torch.set_num_threads(1)
    modality = "MR" if a.prior == "brain-mri" else "CT"
    names = TRAIN_CASES[modality] if a.prior != "chest-ct" else ("lung1",)
    cases = [training_case(n, a.slices) for n in names]
    ev = Evaluator(a.prior, cases)
    out = Path(a.output) if a.output else resolve(a.prior) / "schedules.json"
    schedules = read_schedules(out) if out.is_file() else {}
    previous = json.loads(out.read_text()) if out.is_file() else {}
    earlier = json.loads(Path(a.log).read_text()) if a.log and Path(a.log).is_file() else []
    reference = dict(previous.get("uniform_reference", {}))
    for steps in a.reference_steps:
        reference[str(steps)] = round(ev(steps, None, "uniform (reference)"), 3)
    if a.reference_steps and not a.steps:
        write_schedules(out, a.prior, schedules, **{k: v for k, v in previous.items()
                                                     if k not in ("format", "prior", "schedules")},
                        uniform_reference=reference)
    for steps in a.steps:
        entry, info = fit(ev, steps, "small" if steps in a.small else "full")
        schedules[steps] = entry
        print(f"{a.prior} {steps} steps: {json.dumps(info)}", file=sys.stderr, flush=True)
        write_schedules(out, a.prior,
                        schedules,
                        fitted_on=", ".join(f"{c['name']} slices {c['slices']}" for c in cases)
                        + (" (CS-MRI x8 uniform 1D, 8 coils)" if modality == "MR"
                           else " (sparse-view CT, 8 views)") + ", 128 x 128, seed 0",
                        command="python scripts/fit_schedules.py --prior " + a.prior + " --steps "
                        + " ".join(str(s) for s in sorted(schedules)),
                        objective="mean PSNR (working units, data range 1) of the task's default DDS",
                        **({"uniform_reference": reference} if reference else {}))
        if a.log:
            Path(a.log).write_text(json.dumps(earlier + ev.log, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
