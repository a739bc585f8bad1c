#!/usr/bin/env python3
"""How long ``medrecon demo`` takes, and under which conditions.

Runs the README's demo command (``medrecon demo``, plus any extra arguments after ``--``) in a
fresh process and records its wall time beside what it depends on: CPU model, cores, torch
threads, the load average before and during the run (sampled every 5 s) and the heaviest other
processes. Writes ``<output-dir>/demo_time.json`` and ``demo_time.md`` (the table the README
quotes, with this command).

    .venv/bin/python benchmarks/demo_time.py [--output-dir benchmarks/results] [-- --task cs-mri ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def busy_processes(limit: int = 5) -> list[str]:
    """The processes using the most CPU right now (``ps``), this benchmark's own excluded."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.strip() for line in out if "demo_time.py" not in line and " demo " not in line]
    return [r[:120] for r in rows[:limit]]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"), help="where the results go")
    args = p.parse_args(argv)

    import torch

    load: list[tuple[float, float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(5.0):
            load.append(os.getloadavg())

    before = os.getloadavg()
    others = busy_processes()
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "medrecon.cli", "--quiet", "demo", "--output", str(Path(tmp) / "demo"),
                   *extra]
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        stop.set()
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        metrics = json.loads((Path(tmp) / "demo" / "metrics.json").read_text())
    one_minute = [s[0] for s in load] or [before[0]]
    result = {
        "demo_command": "medrecon demo " + " ".join(shlex.quote(a) for a in extra),
        "seconds": round(seconds, 1),
        "method_seconds": {k: round(v, 1) for k, v in metrics["seconds"].items()},
        "task": metrics["task"], "data": metrics["data"], "shape": metrics["shape"],
        "conditions": {
            "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_before": [round(v, 2) for v in before],
            "load_average_during": {"mean": round(sum(one_minute) / len(one_minute), 2),
                                    "max": round(max(one_minute), 2)},
            "busiest_other_processes": others,
        },
        "command": "python benchmarks/demo_time.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "provenance": metrics.get("provenance"),
    }
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_time.json").write_text(json.dumps(result, indent=2) + "\n")
    c = result["conditions"]
    minutes, secs = divmod(int(round(seconds)), 60)
    md = [f"`{result['demo_command'].strip()}` ({result['task']} on {result['data']} {tuple(result['shape'])}): "
          f"**{minutes} min {secs} s** wall time on {c['cpu']}, {c['logical_cpus']} logical CPUs, torch "
          f"{c['torch_threads']} threads; load average {c['load_average_before'][0]:g} before, "
          f"{c['load_average_during']['mean']:g} (mean) / {c['load_average_during']['max']:g} (max) during the run; "
          f"per method: " + ", ".join(f"{k} {v:g} s" for k, v in result["method_seconds"].items()) + ".",
          "", f"Measured {result['date'][:10]} with `.venv/bin/{result['command']}`."]
    (out / "demo_time.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
