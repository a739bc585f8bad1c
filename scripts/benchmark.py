#!/usr/bin/env python3
"""One entry point for medrecon's benchmarks (``benchmarks/``), then the README tables.

    python scripts/benchmark.py classical [options]          # benchmarks/classical.py
    python scripts/benchmark.py diffusion [options]          # benchmarks/diffusion.py
    python scripts/benchmark.py published-memory [options]   # benchmarks/published_memory.py
    python scripts/benchmark.py denoising [options]          # benchmarks/denoising.py
    python scripts/benchmark.py demo [-- demo options]       # benchmarks/demo.py
    python scripts/benchmark.py readme                       # copy the tables into README.md

Options after the benchmark's name go to that benchmark (``--help`` shows them). Each benchmark
writes its table, with the command that produced it, under ``benchmarks/results/``; ``readme``
copies those tables into README.md (:mod:`update_readme`). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"classical": REPO / "benchmarks" / "classical.py",
           "diffusion": REPO / "benchmarks" / "diffusion.py",
           "published-memory": REPO / "benchmarks" / "published_memory.py",
           "denoising": REPO / "benchmarks" / "denoising.py",
           "demo": REPO / "benchmarks" / "demo.py",
           "readme": REPO / "scripts" / "update_readme.py"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SCRIPTS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown benchmark {argv[0]!r}; choose one of {', '.join(SCRIPTS)}",
                  file=sys.stderr)
            return 2
        return 0
    return subprocess.call([sys.executable, str(SCRIPTS[argv[0]]), *argv[1:]], cwd=REPO)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
