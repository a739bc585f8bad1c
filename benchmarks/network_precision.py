"""Network time per slice of a shipped prior on this machine: float32 vs bf16 autocast,
channels-last, torch.compile; one thread (run under the CPU lock on a shared machine).

    OMP_NUM_THREADS=1 python benchmarks/network_precision.py [--prior chest-ct] [--json out.json]

Prints ms per slice (best and median of ``--repeats`` calls on ``--slices`` 128x128 slices),
the output's relative difference to float32, the CPU's bf16 flags and what ``precision=auto``
picks here.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Callable

import torch

import medrecon.published  # noqa: F401 -- registers the published families (ncsnpp, adm)
from medrecon.prior.checkpoint import load_prior
from medrecon.prior.precision import FAST_BF16_CPU_FLAGS, cpu_flags, resolve_precision


def timed(fn: Callable[[], torch.Tensor], slices: int, repeats: int) -> tuple[torch.Tensor, float, float]:
    with torch.no_grad():
        out = fn()                                      # warm-up (and compilation)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) / slices * 1000)
    return out.float(), min(times), statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prior", default="chest-ct")
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also try torch.compile")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    den = load_prior(a.prior).eval()
    x = torch.rand(a.slices, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    s = torch.full((a.slices,), 0.5)
    xc = x.contiguous(memory_format=torch.channels_last)

    def bf16(net: torch.nn.Module, inp: torch.Tensor) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net(inp, s)
        return run

    rows = {}
    ref, best, med = timed(lambda: den(x, s), a.slices, a.repeats)
    rows["float32"] = (best, med, 0.0)
    variants = [("bf16 autocast", bf16(den, x))]
    cl = den.to(memory_format=torch.channels_last)
    variants += [("float32 channels-last", lambda: cl(xc, s)), ("bf16 channels-last", bf16(cl, xc))]
    for name, fn in variants:
        out, best, med = timed(fn, a.slices, a.repeats)
        rows[name] = (best, med, float((out - ref).abs().max() / ref.abs().max()))
    den = den.to(memory_format=torch.contiguous_format)
    if a.compile:
        try:
            t0 = time.perf_counter()
            comp = torch.compile(den)
            with torch.no_grad():
                comp(x, s)
            first = time.perf_counter() - t0
            out, best, med = timed(lambda: comp(x, s), a.slices, a.repeats)
            rows[f"float32 torch.compile (first call {first:.0f} s)"] = (
                best, med, float((out - ref).abs().max() / ref.abs().max()))
        except Exception as exc:  # noqa: BLE001 - report what failed, keep the other rows
            rows[f"torch.compile failed: {type(exc).__name__}"] = (float("nan"),) * 3
    flags = sorted(cpu_flags() & set(FAST_BF16_CPU_FLAGS))
    auto = resolve_precision("auto", "cpu")
    print(f"{a.prior}, {a.slices} slices 128x128, 1 thread; CPU {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}; "
          f"bf16 flags: {flags or 'none'}; auto -> {auto.name} ({auto.reason})")
    for name, (best, med, diff) in rows.items():
        print(f"  {name:40s} {best:8.1f} ms/slice (median {med:.1f})  rel. diff {diff:.1e}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"prior": a.prior, "slices": a.slices, "threads": 1, "bf16_flags": flags,
                       "auto": auto.record(), "capability": torch.backends.cpu.get_cpu_capability(),
                       "rows": {k: {"ms_per_slice_best": v[0], "ms_per_slice_median": v[1],
                                    "relative_difference": v[2]} for k, v in rows.items()}},
                      f, indent=2)


if __name__ == "__main__":
    main()
