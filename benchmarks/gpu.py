"""The GPU speed path of DDS: 50 NFE on a 256 x 256 x 256 volume with the published ADM network.

    python benchmarks/gpu.py --json gpu.json                 # a CUDA machine: every variant
    python benchmarks/gpu.py --full --json gpu.json          # also one complete 50-step run
    python benchmarks/gpu.py --device cpu --size 32 --slices 6 --model-channels 32 \\
        --channel-mult 1,1 --num-head-channels 16 --compile-backend eager   # tiny CPU check

The network is the DDS ADM UNet (configs/published/adm_aapm256.yaml: 256 channels, channel_mult
1,1,2,2,4,4, attention at 16x16; random weights, which cost the same time and memory as trained
ones). The volume is a random-ellipsoid phantom measured by 8-view parallel-beam CT; DDS runs
with the published settings (eta 0.85, one ADMM-TV(z) step of 5 CG iterations per NFE).

Variants (each a fresh denoiser on the same data):

    fp32             float32, NCHW, eager
    bf16             bf16 autocast (GroupNorm and softmax stay float32)
    channels-last    bf16 + channels-last tensors (tensor-core convolutions on CUDA)
    compile          bf16 + channels-last + torch.compile (``--compile-backend``, default inductor)
    cuda-graphs      bf16 + channels-last + torch.compile(mode="reduce-overhead"), CUDA only
    chunk-N          the fastest of the above with N slices per network call (``--chunks``)

A variant first runs one DDS step (compilation, cuDNN autotuning), then ``--timed-steps`` steps;
every DDS step costs the same (one network evaluation per slice, one ADMM step), so

    seconds per volume = setup + steps x (network + physics seconds per step)

with ``steps = 50``; ``--full`` checks this with a complete run. The network share is network /
(network + physics); peak memory is ``torch.cuda.max_memory_allocated`` (CUDA) or the process's
peak RSS (CPU, monotone over the run); ``vs DDS paper`` is seconds per volume / 960 s (the DDS
paper's third-party 16 min for 256^3 on an RTX 3090). ``max rel. diff.`` compares each variant's
volume with the fp32 one (same seed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medrecon.published.adapters import ADMDenoiser  # noqa: E402

PAPER_SECONDS = 16 * 60.0            # DDS paper: 256^3 in 16 min on an RTX 3090 (third party)
VARIANTS = ("fp32", "bf16", "channels-last", "compile", "cuda-graphs")


class VariantDenoiser(ADMDenoiser):
    """The ADM denoiser with explicit precision, memory layout and compiled network."""

    def __init__(self, net: torch.nn.Module, autocast: Optional[torch.dtype], channels_last: bool,
                 compiled: Optional[Any] = None) -> None:
        super().__init__(net, precision="fp32")
        self.autocast, self.channels_last = autocast, channels_last
        self.forward_net = compiled if compiled is not None else net

    def _run(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.autocast):
                out = self.forward_net(x, cond)
        else:
            out = self.forward_net(x, cond)
        return out.float().contiguous()


def adm_config(args: argparse.Namespace) -> dict:
    """The published ADM configuration, with the size overrides of the command line."""
    from medrecon.published.importer import read_config, split_card_options

    cfg, _, _ = split_card_options(read_config(None, "adm"))
    model = dict(cfg["model"])
    model["image_size"] = args.size
    if args.model_channels:
        model["num_channels"] = args.model_channels
    if args.channel_mult is not None:
        model["channel_mult"] = args.channel_mult
    if args.num_head_channels:
        model["num_head_channels"] = args.num_head_channels
    return {**cfg, "model": model, "data": {**cfg.get("data", {}), "image_size": args.size}}


def build_net(config: dict, device: torch.device, seed: int) -> torch.nn.Module:
    """The ADM UNet with seeded random weights (N(0, 0.02)), eval mode, on ``device``."""
    from medrecon.published.build import build_network

    net = build_network("adm", config, "meta").to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return net.to(device).eval().requires_grad_(False)


def problem(args: argparse.Namespace, device: torch.device) -> tuple[Any, torch.Tensor]:
    """The 8-view CT operator and the prior-unit measurement of a random-ellipsoid volume."""
    from medrecon.phantoms import random_ellipsoids
    from medrecon.physics.ct import make_ct_operator, parallel_geometry, sparse_view_angles

    geometry = parallel_geometry((args.size, args.size), sparse_view_angles(args.views))
    op = make_ct_operator(geometry, backend="auto", device=device)
    x = torch.from_numpy(random_ellipsoids((args.slices, args.size, args.size), seed=args.seed))
    with torch.no_grad():
        return op, op.forward(x.to(device=device, dtype=torch.float32))


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def variant_settings(name: str, device: torch.device, chunk: int) -> Optional[dict]:
    """The knobs of a variant (None: not available on this device, with the reason in "skip")."""
    half = torch.bfloat16
    table = {"fp32": dict(autocast=None, channels_last=False, compile=None),
             "bf16": dict(autocast=half, channels_last=False, compile=None),
             "channels-last": dict(autocast=half, channels_last=True, compile=None),
             "compile": dict(autocast=half, channels_last=True, compile="default"),
             "cuda-graphs": dict(autocast=half, channels_last=True, compile="reduce-overhead")}
    if name.startswith("chunk-"):
        raise ValueError("chunk variants are derived from the fastest variant")
    settings = dict(table[name], chunk=chunk)
    if name == "cuda-graphs" and device.type != "cuda":
        settings["skip"] = "CUDA graphs need a CUDA device"
    return settings


def run_variant(name: str, settings: dict, net: torch.nn.Module, op: Any, y: torch.Tensor,
                args: argparse.Namespace, device: torch.device) -> dict:
    """Time one variant; returns its row (seconds, shares, memory, the volume for comparison)."""
    from medrecon.samplers.config import DdsConfig
    from medrecon.samplers.dds import dds

    row: dict[str, Any] = {"variant": name, "chunk": settings["chunk"],
                           "autocast": str(settings["autocast"]).replace("torch.", ""),
                           "channels_last": settings["channels_last"],
                           "compile": settings["compile"]}
    if "skip" in settings:
        return {**row, "skipped": settings["skip"]}
    net = net.to(memory_format=torch.channels_last) if settings["channels_last"] else \
        net.to(memory_format=torch.contiguous_format)
    compiled = None
    if settings["compile"] is not None:
        kw = {"mode": settings["compile"]} if args.compile_backend == "inductor" else {}
        compiled = torch.compile(net, backend=args.compile_backend, **kw)
    den = VariantDenoiser(net, settings["autocast"], settings["channels_last"], compiled).to(device)
    cfg = dict(seed=args.seed, op_norm_sq=args.op_norm_sq)
    t0 = time.perf_counter()
    dds(op, y, den, DdsConfig(steps=1, chunk=settings["chunk"]), **cfg)        # warm-up
    warm_up = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    result = dds(op, y, den, DdsConfig(steps=args.timed_steps, chunk=settings["chunk"]), **cfg)
    info = result.info
    per_step = (info["time_network"] + info["time_physics"]) / args.timed_steps
    setup = max(info["time_total"] - info["time_network"] - info["time_physics"], 0.0)
    seconds = setup + args.steps * per_step
    row.update(warm_up_seconds=warm_up, network_seconds_per_step=info["time_network"] / args.timed_steps,
               physics_seconds_per_step=info["time_physics"] / args.timed_steps,
               setup_seconds=setup, seconds_per_volume=seconds,
               network_share=info["time_network"] / max(info["time_network"] + info["time_physics"], 1e-12),
               peak_memory_bytes=peak_memory(device), vs_dds_paper=seconds / PAPER_SECONDS,
               volume=result.x.detach().float().cpu())
    return row


def full_run(settings: dict, net: torch.nn.Module, op: Any, y: torch.Tensor,
             args: argparse.Namespace, device: torch.device) -> dict:
    """One complete ``args.steps``-step DDS run (the extrapolation check)."""
    from medrecon.samplers.config import DdsConfig
    from medrecon.samplers.dds import dds

    compiled = None
    if settings["compile"] is not None:
        kw = {"mode": settings["compile"]} if args.compile_backend == "inductor" else {}
        compiled = torch.compile(net, backend=args.compile_backend, **kw)
    den = VariantDenoiser(net, settings["autocast"], settings["channels_last"], compiled).to(device)
    t0 = time.perf_counter()
    result = dds(op, y, den, DdsConfig(steps=args.steps, chunk=settings["chunk"]), seed=args.seed,
                 op_norm_sq=args.op_norm_sq)
    return {"seconds": time.perf_counter() - t0, "time_network": result.info["time_network"],
            "time_physics": result.info["time_physics"]}


def table(rows: list[dict], args: argparse.Namespace) -> str:
    head = (f"{'variant':14} {'chunk':>5} {'s/volume':>9} {'net/step':>9} {'phys/step':>9} "
            f"{'network':>7} {'peak mem':>9} {'vs DDS paper':>12} {'max rel. diff.':>14}")
    lines = [f"DDS {args.steps} NFE, {args.slices}x{args.size}x{args.size}, {args.views} views, "
             f"ADM {args.model_channels or 256} ch, device {args.device}", head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['variant']:14} {r['chunk']:>5} skipped: {r['skipped']}")
            continue
        diff = "-" if r.get("max_rel_diff") is None else f"{r['max_rel_diff']:.2e}"
        lines.append(f"{r['variant']:14} {r['chunk']:>5} {r['seconds_per_volume']:9.1f} "
                     f"{r['network_seconds_per_step']:9.3f} {r['physics_seconds_per_step']:9.3f} "
                     f"{100 * r['network_share']:6.1f}% {r['peak_memory_bytes'] / 2**30:8.2f}G "
                     f"{r['vs_dds_paper']:11.3f}x {diff:>14}")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a check)")
    ap.add_argument("--size", type=int, default=256, help="slice size H = W (published 256)")
    ap.add_argument("--slices", type=int, default=256, help="slices of the volume")
    ap.add_argument("--views", type=int, default=8, help="parallel-beam CT views")
    ap.add_argument("--steps", type=int, default=50, help="DDS steps = NFE per slice")
    ap.add_argument("--timed-steps", type=int, default=2, help="steps timed per variant")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of " + ", ".join(VARIANTS))
    ap.add_argument("--chunk", type=int, default=20, help="slices per network call (published 20)")
    ap.add_argument("--chunks", type=int, nargs="*", default=[8, 32],
                    help="other chunk sizes, tried with the fastest variant")
    ap.add_argument("--model-channels", type=int, default=None, help="override the ADM width (256)")
    ap.add_argument("--channel-mult", default=None, help="override channel_mult, e.g. 1,1")
    ap.add_argument("--num-head-channels", type=int, default=None, help="override (64)")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend (eager: traces only, for a quick CPU check)")
    ap.add_argument("--op-norm-sq", type=float, default=None,
                    help="||A||^2 if known (default: power iteration, counted in the setup)")
    ap.add_argument("--full", action="store_true", help="also run all steps once with the fastest variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("benchmarks/gpu.py: no CUDA device; pass --device cpu for a check run")
        torch.backends.cudnn.benchmark = True
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"benchmarks/gpu.py: unknown variants {unknown}; choose from {VARIANTS}")
    config = adm_config(args)
    net = build_net(config, device, args.seed)
    parameters = sum(p.numel() for p in net.parameters())
    op, y = problem(args, device)
    rows = []
    for name in names:
        rows.append(run_variant(name, variant_settings(name, device, args.chunk), net, op, y, args, device))
        print(f"# {name}: done", flush=True)
    timed = [r for r in rows if "skipped" not in r]
    best = min(timed, key=lambda r: r["seconds_per_volume"]) if timed else None
    if best is not None:
        for chunk in args.chunks:
            if chunk == args.chunk:
                continue
            settings = dict(variant_settings(best["variant"], device, chunk))
            rows.append(run_variant(f"chunk-{chunk}", settings, net, op, y, args, device))
            rows[-1]["base_variant"] = best["variant"]
    reference = next((r["volume"] for r in rows if r["variant"] == "fp32" and "volume" in r), None)
    for r in rows:
        volume = r.pop("volume", None)
        r["max_rel_diff"] = (None if reference is None or volume is None else
                             float((volume - reference).abs().max() / reference.abs().max()))
    result: dict[str, Any] = {
        "benchmark": "dds-gpu", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "volume": [args.slices, args.size, args.size],
        "views": args.views, "steps": args.steps, "timed_steps": args.timed_steps,
        "parameters": parameters, "network_config": config["model"],
        "dds_paper_seconds": PAPER_SECONDS, "rows": rows,
        "command": " ".join([sys.executable, *sys.argv]) if argv is None else argv}
    if args.full and best is not None:
        settings = variant_settings(best["variant"], device, best["chunk"])
        result["full_run"] = {"variant": best["variant"], **full_run(settings, net, op, y, args, device),
                              "predicted_seconds": best["seconds_per_volume"]}
    print(table(rows, args))
    print(f"parameters: {parameters / 1e6:.1f} M")
    if "full_run" in result:
        f = result["full_run"]
        print(f"full {args.steps}-step run ({f['variant']}): {f['seconds']:.1f} s "
              f"(predicted {f['predicted_seconds']:.1f} s)")
    text = json.dumps(result, indent=2, default=str)
    print(text if args.json is None else f"wrote {args.json}")
    if args.json is not None:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.json)
    return result


if __name__ == "__main__":
    main()
