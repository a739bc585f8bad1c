"""Measure golden values and write them, with their provenance, to tests/data/goldens.json.

The cases and what each measures are in tests/golden_cases.py. Only the chosen cases are
re-measured; the other entries of the file are kept as they are.

    python scripts/regenerate_goldens.py --list
    python scripts/regenerate_goldens.py                       # every case that is not slow
    python scripts/regenerate_goldens.py --only sv8-tv cli-dds-phantom-sv8
    python scripts/regenerate_goldens.py --prior chest-ct brain-mri   # after retraining those priors
    python scripts/regenerate_goldens.py --all                 # slow ones too (needs the sample data)

Measurements run with one torch thread, as the tests do. Each entry records the command, the
versions (git revision of medrecon, Python, torch, numpy, scipy, astra), the UTC date and, for a
diffusion case, the SHA-256 of the prior's weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import golden_cases  # noqa: E402  (tests/ holds the case definitions)


def choose(args: argparse.Namespace) -> list[str]:
    cases = golden_cases.CASES
    if args.only:
        unknown = sorted(set(args.only) - set(cases))
        if unknown:
            raise SystemExit(f"unknown golden case(s): {', '.join(unknown)}; see --list")
        return [n for n in cases if n in args.only]
    if args.prior:
        known = {c.prior for c in cases.values() if c.prior}
        unknown = sorted(set(args.prior) - known)
        if unknown:
            raise SystemExit(f"no golden case uses prior(s) {', '.join(unknown)}; priors with "
                             f"goldens: {', '.join(sorted(known))}")
        return [n for n, c in cases.items() if c.prior in args.prior]
    return [n for n, c in cases.items() if args.all or not c.slow]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--only", nargs="+", metavar="NAME", help="these cases")
    group.add_argument("--prior", nargs="+", metavar="PRIOR", help="every case that uses these "
                       "shipped priors (slow ones included)")
    group.add_argument("--all", action="store_true", help="every case, slow ones included")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--file", default=str(golden_cases.GOLDEN_FILE), help="golden file to update")
    args = ap.parse_args()
    if args.list:
        for c in golden_cases.CASES.values():
            print(f"{c.name:34s} +/-{c.tolerance:<5g} {'slow ' if c.slow else ''}"
                  f"{'prior=' + c.prior + ' ' if c.prior else ''}{c.what}")
        return 0

    import torch

    from medrecon.io.atomic import write_text_atomic

    torch.set_num_threads(1)
    path = Path(args.file)
    doc = golden_cases.load(path) if path.exists() else {"format": golden_cases.FORMAT, "cases": {}}
    for name in choose(args):
        t0 = time.perf_counter()
        value = golden_cases.CASES[name].measure()
        old = doc["cases"].get(name, {}).get("value")
        doc["cases"][name] = golden_cases.entry_for(name, value)
        shown = "new" if old is None else f"was {old:.3f}"
        print(f"{name:34s} {value:8.3f} dB ({shown}; {time.perf_counter() - t0:.0f} s)", flush=True)
        # written after every case: an interrupted run keeps what it measured
        doc["cases"] = {n: doc["cases"][n] for n in sorted(doc["cases"])}
        write_text_atomic(path, json.dumps(doc, indent=1) + "\n", overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
