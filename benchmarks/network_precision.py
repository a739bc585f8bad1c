"""Network time per slice of a shipped prior on this machine: float32 vs bf16 autocast,
channels-last, torch.compile; one thread (run under the CPU lock on a shared machine).

    OMP_NUM_THREADS=1 python benchmarks/network_precision.py [--prior body-ct] [--compile]

Prints and writes (``--output-dir``, default benchmarks/results/network_precision/) ms per slice
(best and median of ``--repeats`` calls on ``--slices`` 128x128 slices) of every variant, the
output's relative difference to float32, the CPU's bf16 flags and what ``precision=auto`` picks
here. The variants are timed round-robin (one call of each in turn, ``--repeats`` rounds), so a
change in the machine's load affects them alike; the ratio to float32 is what counts.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import medrecon.published  # noqa: F401,E402 -- registers the published families (ncsnpp, adm)
from medrecon.prior.checkpoint import load_prior  # noqa: E402
from medrecon.prior.precision import (FAST_BF16_CPU_FLAGS, cpu_flags, cpu_model,  # noqa: E402
                                      resolve_precision)




def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="body-ct")
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also try torch.compile (float32, bf16)")
    p.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results" / "network_precision"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    den = load_prior(a.prior).eval()
    x = torch.rand(a.slices, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    s = torch.full((a.slices,), 0.5)
    xc = x.contiguous(memory_format=torch.channels_last)
    cl = load_prior(a.prior).eval().to(memory_format=torch.channels_last)

    def bf16(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn()
        return run

    variants: dict[str, Callable[[], torch.Tensor]] = {
        "float32": lambda: den(x, s),
        "bf16 autocast": bf16(lambda: den(x, s)),
        "float32 channels-last": lambda: cl(xc, s),
        "bf16 channels-last": bf16(lambda: cl(xc, s)),
    }
    first: dict[str, float] = {}
    if a.compile:
        for name, net in (("float32 torch.compile", den), ("float32 channels-last torch.compile", cl)):
            try:
                comp = torch.compile(net)
                inp = xc if net is cl else x
                t0 = time.perf_counter()
                with torch.no_grad():
                    comp(inp, s)
                first[name] = time.perf_counter() - t0
                variants[name] = (lambda c=comp, i=inp: c(i, s))
            except Exception as exc:  # noqa: BLE001 - report what failed, keep the other rows
                first[name] = float("nan")
                print(f"{name} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    outs, times = {}, {k: [] for k in variants}
    with torch.no_grad():
        for name, fn in variants.items():            # warm-up
            outs[name] = fn().float()
        for _ in range(a.repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) / a.slices * 1000)
    ref = outs["float32"]
    rows = {k: {"ms_per_slice_best": min(v), "ms_per_slice_median": statistics.median(v),
                "speed_vs_float32": statistics.median(times["float32"]) / statistics.median(v),
                "relative_difference": float((outs[k] - ref).abs().max() / ref.abs().max()),
                **({"first_call_s": first[k]} if k in first else {})} for k, v in times.items()}
    flags = sorted(cpu_flags() & set(FAST_BF16_CPU_FLAGS))
    auto = resolve_precision("auto", "cpu")
    doc = {"prior": a.prior, "slices": a.slices, "repeats": a.repeats, "threads": 1,
           "date": _dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(),
           "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "capability": torch.backends.cpu.get_cpu_capability(), "bf16_flags": flags,
           "auto": auto.record(), "load_average_start": list(load0),
           "load_average_end": list(os.getloadavg()),
           "command": "python benchmarks/network_precision.py " + " ".join(argv or sys.argv[1:]),
           "rows": rows}
    lines = [f"# Network precision and layout on the CPU ({doc['date'][:10]})", "",
             f"Command: `{doc['command'].strip()}`", "",
             f"Prior `{a.prior}`, {a.slices} slices of 128 x 128 per call, 1 thread, {a.repeats} "
             f"round-robin rounds; {doc['cpu']} ({doc['cpu_count']} CPUs, capability "
             f"{doc['capability']}, bf16 flags: {', '.join(flags) or 'none'}), torch {doc['torch']}; "
             f"load average {load0[0]:.2f} at the start, {doc['load_average_end'][0]:.2f} at the end "
             f"(a shared machine). `precision=auto` here: {auto.name} ({auto.reason}).", "",
             "| variant | ms / slice (median) | best | speed vs float32 | max rel. difference | first call (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for k, r in rows.items():
        fc = f"{r['first_call_s']:.0f}" if "first_call_s" in r else ""
        lines.append(f"| {k} | {r['ms_per_slice_median']:.1f} | {r['ms_per_slice_best']:.1f} | "
                     f"{r['speed_vs_float32']:.2f}x | {r['relative_difference']:.1e} | {fc} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "network_precision.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "network_precision.md").write_text(text)


if __name__ == "__main__":
    main()
