"""Forward-pass memory per slice of the full-size published networks at 256x256 (CPU measurement).

    nice -n 10 python benchmarks/published_memory.py            # both networks, batch 1 and 2

For each network (configs/published/*_aapm256.yaml, random weights) and batch size, a fresh
subprocess builds the net, then runs one ``torch.no_grad`` forward pass and records

* ``live``: the peak of live tensor storage created during the pass (a TorchDispatchMode that
  adds each new output storage and subtracts it when freed; weights and input excluded). This is
  what a caching GPU allocator has to hold for activations.
* ``rss``: the peak resident-set growth of the process during the pass (VmHWM reset through
  /proc/self/clear_refs), which also counts allocator slack and oneDNN scratch buffers.

Per slice = value(batch 2) - value(batch 1); fixed = value(batch 1) - per slice. The GPU columns
are computed from the live numbers, not measured (see NOTE below).

    python benchmarks/published_memory.py --from-json results.json --chunks 8 16   # re-tabulate
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import weakref
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1024.0**2


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


NOTE = ("GPU N sl.: computed, not measured, for a chunk of N slices. fp32 = weights + N x live/slice"
        " + live fixed. amp (bf16/fp16 autocast) = 1.5 x weights (fp32 + half-precision copies)"
        " + 0.5 x activations: a lower bound, as GroupNorm/softmax outputs stay fp32. Add the CUDA"
        " context and cuDNN workspace (~0.3-1 GiB).")


def child(model: str, batch: int, size: int) -> dict:
    """Build ``model`` with random weights, run one forward pass, return the measurements."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from medrecon.published.build import build_network
    from medrecon.published.importer import read_config, split_card_options

    class LiveStorage(TorchDispatchMode):
        """Peak bytes of storages created by aten ops while active (views of known storages skipped)."""

        def __init__(self, known):
            super().__init__()
            self.seen = {s.data_ptr() for s in known}
            self.live = self.peak = 0

        def _free(self, ptr: int, nbytes: int) -> None:
            self.live -= nbytes
            self.seen.discard(ptr)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    s = t.untyped_storage()
                    ptr = s.data_ptr()
                    if ptr in self.seen or s.nbytes() == 0:
                        continue
                    self.seen.add(ptr)
                    self.live += s.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(s, self._free, ptr, s.nbytes())
            return out

    torch.manual_seed(0)
    cfg, _, _ = split_card_options(read_config(None, model))
    net = build_network(model, cfg, "meta").to_empty(device="cpu")
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.02)
    net.eval().requires_grad_(False)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    x = torch.rand(batch, 1, size, size)
    cond = torch.full((batch,), 5.0) if model == "ncsnpp" else torch.full((batch,), 500.0)
    known = [p.untyped_storage() for p in net.parameters()] + [x.untyped_storage(),
                                                               cond.untyped_storage()]
    rss0 = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    t0 = time.perf_counter()
    with torch.no_grad(), LiveStorage(known) as tracker:
        out = net(x, cond)
    seconds = time.perf_counter() - t0
    rss_peak = _status_kib("VmHWM")     # without the reset: includes the build peak
    return {"model": model, "batch": batch, "size": size, "weights_bytes": weights,
            "live_peak_bytes": tracker.peak, "rss_delta_bytes": (rss_peak - rss0) * 1024,
            "rss_reset": reset, "seconds": seconds, "out_shape": list(out.shape),
            "threads": torch.get_num_threads()}


def measure(model: str, batch: int, size: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--child", model, str(batch), "--size", str(size)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{model} batch {batch} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def table(results: list[dict], chunks: tuple[int, ...]) -> str:
    """Per-slice and fixed memory from batch 1 and 2, plus the computed GPU estimates per chunk."""
    head = (f"{'network':8} {'weights':>8} {'live/slice':>10} {'live fixed':>10} {'RSS/slice':>9} "
            f"{'RSS fixed':>9} {'s/slice':>7}  "
            + "  ".join(f"{f'GPU {c} sl. fp32/amp':>20}" for c in chunks))
    lines = [head, "-" * len(head)]
    for model in dict.fromkeys(r["model"] for r in results):
        r1, r2 = (next(r for r in results if r["model"] == model and r["batch"] == b) for b in (1, 2))
        live = r2["live_peak_bytes"] - r1["live_peak_bytes"]
        live_fixed = max(r1["live_peak_bytes"] - live, 0)
        rss = r2["rss_delta_bytes"] - r1["rss_delta_bytes"]
        rss_fixed = r1["rss_delta_bytes"] - rss
        w = r1["weights_bytes"]
        gpu = [(w + c * live + live_fixed, 1.5 * w + 0.5 * (c * live + live_fixed)) for c in chunks]
        lines.append(f"{model:8} {w / MiB:7.0f}M {live / MiB:9.0f}M {live_fixed / MiB:9.0f}M "
                     f"{rss / MiB:8.0f}M {rss_fixed / MiB:8.0f}M {r2['seconds'] / 2:7.1f}  "
                     + "  ".join(f"{f'{a / 1024**3:.2f} / {b / 1024**3:.2f} GiB':>20}" for a, b in gpu))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="+", default=["ncsnpp", "adm"], choices=["ncsnpp", "adm"],
                    help="networks to measure")
    ap.add_argument("--size", type=int, default=256, help="slice size H = W in pixels")
    ap.add_argument("--threads", type=int, default=1, help="intra-op CPU threads per run")
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 12, 20],
                    help="slice-chunk sizes for the computed GPU estimate")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="print the table from results saved with --json instead of measuring")
    args = ap.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        print(table(results, tuple(args.chunks)))
        print(NOTE)
        return 0
    if args.child:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print(json.dumps(child(args.child[0], int(args.child[1]), args.size)))
        return 0
    results = []
    for model in args.models:
        for batch in (1, 2):
            r = measure(model, batch, args.size, args.threads)
            print(f"# {model} batch {batch}: live peak {r['live_peak_bytes'] / MiB:.0f} MiB, "
                  f"RSS peak delta {r['rss_delta_bytes'] / MiB:.0f} MiB, {r['seconds']:.1f} s",
                  flush=True)
            results.append(r)
    print(f"\nForward memory at {args.size}x{args.size}, float32 CPU, torch.no_grad, random weights")
    print(table(results, tuple(args.chunks)))
    print(NOTE)
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
