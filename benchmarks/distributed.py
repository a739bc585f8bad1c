"""One process with T threads against N processes (z-slabs) with T / N threads each, on the CPU.

    nice -n 10 python benchmarks/distributed.py --json dist.json     # 48x128x128, DDS, 1x2 vs 2x1
    python benchmarks/distributed.py --slices 6 --size 32 --method tv --set iterations=5   # quick

The volume is a seeded random-ellipsoid phantom (``--slices`` x ``--size`` x ``--size``) measured
by 8-view parallel-beam CT; every configuration reconstructs it with ``--method`` (default DDS with
the shipped phantom prior, ``--steps`` steps, the whole slab in one network call: ``chunk`` =
slices per process) through :func:`medrecon.methods.run_method`, each process in a fresh
interpreter joined by gloo (:func:`medrecon.distributed.local.run_local`). Per configuration:

* wall: the slowest rank's reconstruction time (s); the measurement and the operator are built
  before the clock, and the ranks start together (a barrier);
* comm: the share of that time a rank spent in collectives and halo exchanges, including the
  wait for slower ranks (0 for one process);
* peak memory: each rank's peak resident-set growth during the reconstruction (VmHWM reset
  through /proc/self/clear_refs; Linux; without the reset the peak since the process began), and
  the largest rank's ratio to the one-process value;
* equal: the volumes put together equal the one-process volume (max abs difference).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"{field}:\s+(\d+)", text)
    return int(match.group(1)) if match else 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measurement(slices: int, size: int, views: int, seed: int) -> Any:
    from medrecon.phantoms import random_ellipsoids
    from medrecon.tasks import CTOptions, simulate
    from medrecon.volume import Volume

    vol = Volume.from_array(random_ellipsoids((slices, size, size), seed=seed), modality="CT",
                            units="a.u.")
    return simulate(vol, "sparse-view-ct", ct=CTOptions(views=views), keep_reference=False)


def rank_run(rank: int, world: int, job: dict) -> dict:
    """One rank's reconstruction of its slab; timings, memory and the slab itself."""
    import torch

    from medrecon.slab_driver import split_measurement
    from medrecon.distributed.slab import Slab
    from medrecon.methods import run_method
    from medrecon.tasks import build_operator

    torch.set_num_threads(job["threads"])
    m = measurement(job["slices"], job["size"], job["views"], job["seed"])
    slab = Slab.of_group(job["slices"]) if world > 1 else None
    lo, hi = (slab.lo, slab.hi) if slab is not None else (0, job["slices"])
    part = split_measurement(m, lo, hi)
    op = build_operator(part, backend="torch")              # built before the clock
    settings = dict(job["settings"])
    if job["method"] in ("dds", "mbir"):
        settings.setdefault("chunk", hi - lo)
    if slab is not None:
        torch.distributed.barrier()                          # the ranks start together
    rss0 = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    start = time.perf_counter()
    x = run_method(part, job["method"], settings, operator=op, slab=slab)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return {"rank": rank, "slices": [lo, hi], "seconds": seconds,
            "comm_seconds": slab.comm_seconds if slab is not None else 0.0,
            "rss_before_bytes": rss0 * 1024, "rss_peak_bytes": peak * 1024,
            "rss_growth_bytes": (peak - rss0) * 1024, "peak_reset": reset,
            "threads": torch.get_num_threads(), "x": x.detach().cpu()}


def run_config(processes: int, threads: int, job: dict) -> dict:
    from medrecon.distributed.local import run_local

    t0 = time.perf_counter()
    ranks = run_local(rank_run, processes, {**job, "threads": threads}, threads=threads,
                      timeout=job["timeout"])
    launch = time.perf_counter() - t0
    import torch

    x = torch.cat([r.pop("x") for r in ranks])
    wall = max(r["seconds"] for r in ranks)
    return {"config": f"{processes}x{threads}", "processes": processes, "threads": threads,
            "wall_seconds": wall, "with_start_seconds": launch,
            "comm_share": max(r["comm_seconds"] / r["seconds"] for r in ranks),
            "ranks": ranks, "x": x}


def table(rows: list[dict], job: dict) -> str:
    lines = [f"{job['method']} on {job['slices']}x{job['size']}x{job['size']}, {job['views']} views, "
             f"settings {job['settings']}",
             f"{'config':8} {'wall s':>8} {'comm':>6} {'rank peak RSS growth (MiB)':>28} "
             f"{'vs 1 proc':>9} {'max |diff|':>10}",
             "-" * 76]
    base = max(r["rss_growth_bytes"] for r in rows[0]["ranks"])
    for row in rows:
        growth = [r["rss_growth_bytes"] for r in row["ranks"]]
        lines.append(f"{row['config']:8} {row['wall_seconds']:8.1f} {100 * row['comm_share']:5.1f}% "
                     f"{' / '.join(f'{g / 2**20:.0f}' for g in growth):>28} "
                     f"{max(growth) / max(base, 1):9.2f} {row['max_abs_diff']:10.2e}")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=48)
    ap.add_argument("--size", type=int, default=128, help="slice size (the shipped priors: 128)")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--method", default="dds", help="any medrecon method for sparse-view CT")
    ap.add_argument("--prior", default="phantom", help="diffusion methods: the prior")
    ap.add_argument("--steps", type=int, default=20, help="diffusion methods: steps")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="other method settings")
    ap.add_argument("--threads", type=int, default=2, help="threads of the one-process run, split "
                    "over the processes of the other")
    ap.add_argument("--processes", type=int, nargs="+", default=[2], help="process counts to compare")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds per configuration")
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    from medrecon.config import parse_overrides

    args = parse_args(argv)
    settings: dict[str, Any] = dict(parse_overrides(args.overrides))
    if args.method in ("dds", "mbir"):
        settings = {"prior": args.prior, "steps": args.steps, **settings}
    job = {"slices": args.slices, "size": args.size, "views": args.views, "seed": args.seed,
           "method": args.method, "settings": settings, "timeout": args.timeout}
    rows = [run_config(1, args.threads, job)]
    for n in args.processes:
        if args.threads % n:
            raise SystemExit(f"--threads {args.threads} does not split over {n} processes")
        rows.append(run_config(n, args.threads // n, job))
    reference = rows[0]["x"]
    for row in rows:
        row["max_abs_diff"] = float((row.pop("x") - reference).abs().max())
    result = {"benchmark": "slab-parallel CPU", "job": job, "rows": rows, "cpu_count": os.cpu_count(),
              "command": " ".join([sys.executable, *sys.argv]) if argv is None else argv}
    print(table(rows, job))
    text = json.dumps(result, indent=2)
    if args.json is not None:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
