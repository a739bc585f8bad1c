"""Time ``medrecon demo`` (no arguments: 8-view sparse-view CT of the shipped held-out lung2 slab,
FBP, ADMM-TV and DDS) as a new user runs it, and keep its printed table (issue 11).

One command (from the repository root)::

    python benchmarks/demo.py            # runs `medrecon demo` once in a fresh process
    python benchmarks/demo.py -- --task cs-mri   # arguments after -- go to the demo

Records the wall time of the whole command (start-up, priors, metrics and figure included), the
machine, its load average at the start, and the demo's metrics.json. Writes
``benchmarks/results/demo/demo.md`` and ``demo.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    out_dir = Path(argv[argv.index("--output-dir") + 1]) if "--output-dir" in argv else \
        REPO / "benchmarks" / "results" / "demo"
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        # the demo's default output folder, in a scratch working directory: the transcript shows
        # what a user's run prints
        cmd = [sys.executable, "-m", "medrecon", "demo", *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        metrics = json.loads((Path(tmp) / "medrecon-demo" / "metrics.json").read_text())
    printed = proc.stdout.strip()
    doc = {"format": "medrecon-benchmark-demo/1", "date": _dt.datetime.now().isoformat(timespec="seconds"),
           "command": "medrecon demo " + " ".join(shlex.quote(a) for a in extra),
           "benchmark_command": "python benchmarks/demo.py " + " ".join(shlex.quote(a) for a in argv),
           "seconds": seconds, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "load_average_at_start": list(load), "printed": printed, "metrics": metrics}
    text = "\n".join([f"#### `{doc['command'].strip()}` ({doc['date'][:10]})", "",
                      f"Benchmark: `{doc['benchmark_command'].strip()}`. Wall time {seconds / 60:.1f} min "
                      f"({seconds:.0f} s) on {doc['machine']}, load average {load[0]:.2f} at the start.", "",
                      "```", printed, "```", ""])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "demo.md").write_text(text)
    (out_dir / "demo.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
