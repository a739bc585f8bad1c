"""How DDS should weigh noisy MR data: the plain data-consistency step against the proximal step
at several ``gamma_rel`` and at the noise rule ``gamma = (anchor_std / noise_sigma)^2``.

One command (from the repository root)::

    python benchmarks/noise_weight.py            # brain1, 8 central slices, x8 uniform 1D, 8 coils

Run on ``brain1``, a *training* subject of the ``brain-mri`` prior, never on the held-out
``brain2``: this is where ``anchor_std`` (configs/dds_cs_mri.yaml) was chosen. k-space noise
``sigma`` 0 (noiseless), 0.02 and 0.05 in working units (as ``medrecon simulate --sigma``), DDS
with 20 steps and its other defaults, one thread. PSNR / SSIM of the magnitude in working units,
data range 1. Writes ``benchmarks/results/noise_weight/noise_weight.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SIGMAS = (0.0, 0.02, 0.05)
GAMMAS = (1.0, 3.0, 10.0, 30.0)


def rows_for(sigma: float) -> list[tuple[str, dict, bool]]:
    """``(label, settings, use the recorded noise)``: the plain step (the measurement's noise
    record removed), the noise rule, and fixed ``gamma_rel`` values."""
    rows = [("plain (noise not used)", {}, False)]
    if sigma > 0:
        rows.append(("noise rule (anchor_std 0.1, the default)", {}, True))
    rows += [(f"gamma_rel {g:g}", {"gamma_rel": g}, True) for g in GAMMAS]
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    p.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results" / "noise_weight"))
    args = p.parse_args(argv)

    import torch

    from medrecon.datasets import real_volume, resample_volume, take_slab
    from results_files import write_results
    from medrecon.metrics import volume_metrics
    from medrecon.prior.checkpoint import load_prior
    from medrecon.samplers.config import config_for_task
    from medrecon.samplers.run import reconstruct
    from medrecon.tasks import MRIOptions, build_operator, data_in_working_units, simulate

    torch.set_num_threads(1)
    volume = real_volume("brain1")
    z0 = (volume.shape[0] - args.slices) // 2
    volume = resample_volume(take_slab(volume, z0, z0 + args.slices), 128)
    den = load_prior("brain-mri", device="cpu")
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "unknown"
    doc = {"format": "medrecon-benchmark-noise-weight/1",
           "date": _dt.datetime.now().isoformat(timespec="seconds"),
           "command": ("python benchmarks/noise_weight.py " + " ".join(
               shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))).strip(),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "load_average_start": list(os.getloadavg()), "git": git, "torch": torch.__version__,
           "data": f"brain1 (training subject) slices {z0}..{z0 + args.slices - 1}, 128 x 128",
           "steps": args.steps, "rows": []}
    for sigma in args.sigmas:
        m = simulate(volume, "cs-mri", seed=0,
                     mri=MRIOptions(coils=8, acceleration=8.0, mask="uniform1d", sigma=sigma))
        ref = (abs(volume.array) / float(m.attrs["scale"])).astype("float32")
        op = build_operator(m, device="cpu")
        y = data_in_working_units(m, op, "cpu")
        unrecorded = dataclasses.replace(m, attrs={**m.attrs, "options": {**m.attrs["options"],
                                                                          "sigma": 0.0}})
        for label, settings, recorded in rows_for(sigma):
            cfg = config_for_task("dds", "cs-mri", steps=args.steps, **settings)
            start = time.perf_counter()
            r = reconstruct("dds", op, y, den, m if recorded else unrecorded, cfg, seed=0)
            seconds = time.perf_counter() - start
            metrics = volume_metrics(r.x.abs().numpy(), ref, 1.0)
            doc["rows"].append({"sigma": sigma, "row": label, "settings": settings,
                                "gamma": r.info["gamma"], "psnr": metrics["psnr"],
                                "ssim": metrics["ssim"], "seconds": seconds})
            print(f"sigma {sigma:g} {label}: {metrics['psnr']:.2f} dB", file=sys.stderr, flush=True)
    lines = [f"#### DDS data weighting on noisy MR ({doc['date'][:10]})", "",
             f"Command: `{doc['command']}`. {doc['data']}, x8 uniform 1D, 8 coils, DDS {args.steps} "
             f"steps, one thread; {doc['machine']}, load average {doc['load_average_start'][0]:.2f} "
             f"at the start, git {git}.", "",
             "| k-space sigma | data consistency | gamma (absolute) | PSNR | SSIM | time (s) |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        gamma = "-" if r["gamma"] is None else f"{r['gamma']:.3g}"
        lines.append(f"| {r['sigma']:g} | {r['row']} | {gamma} | {r['psnr']:.2f} | {r['ssim']:.3f} "
                     f"| {r['seconds']:.0f} |")
    text = "\n".join(lines) + "\n"
    write_results(Path(args.output_dir), "noise_weight", text, doc)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
