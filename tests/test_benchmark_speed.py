"""benchmarks/gpu.py and benchmarks/distributed.py at a tiny size on the CPU, so they cannot rot:
their numbers are consistent with their definitions, the variants really differ where they
should, and the distributed configurations give the one-process volume."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    """``benchmarks/<name>.py`` as the module ``benchmarks.<name>`` (importable by name, as the
    processes spawned by the distributed benchmark need)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"benchmarks.{name}")


def test_gpu_benchmark_is_the_published_network_at_full_size() -> None:
    gpu = _load("gpu")
    from medrecon.published.build import build_network

    args = gpu.parse_args([])
    assert (args.size, args.slices, args.steps, args.views, args.device) == (256, 256, 50, 8, "cuda")
    net = build_network("adm", gpu.adm_config(args), "meta")
    assert sum(p.numel() for p in net.parameters()) == 374_022_658          # DDS's AAPM256 ADM


def test_gpu_benchmark_tiny_on_cpu(tmp_path: Path) -> None:
    gpu = _load("gpu")
    out = gpu.main(["--device", "cpu", "--size", "32", "--slices", "4", "--model-channels", "32",
                    "--channel-mult", "1,1", "--num-head-channels", "16", "--compile-backend",
                    "eager", "--timed-steps", "1", "--chunks", "2", "--json", str(tmp_path / "g.json")])
    assert json.loads((tmp_path / "g.json").read_text())["rows"] == json.loads(json.dumps(out["rows"]))
    rows = {r["variant"]: r for r in out["rows"]}
    assert list(rows) == ["fp32", "bf16", "channels-last", "compile", "cuda-graphs", "chunk-2"]
    assert rows["cuda-graphs"]["skipped"] == "CUDA graphs need a CUDA device"
    timed = [r for r in out["rows"] if "skipped" not in r]
    for r in timed:
        per_step = r["network_seconds_per_step"] + r["physics_seconds_per_step"]
        assert r["seconds_per_volume"] == pytest.approx(r["setup_seconds"] + 50 * per_step)
        assert r["vs_dds_paper"] == pytest.approx(r["seconds_per_volume"] / 960.0)
        assert 0 < r["network_share"] < 1 and r["peak_memory_bytes"] > 0
    assert rows["fp32"]["max_rel_diff"] == 0.0
    # bf16 autocast really computes in bf16 (a small, non-zero change); compile (eager backend:
    # traced, same kernels) gives exactly the channels-last volume
    assert 0 < rows["bf16"]["max_rel_diff"] < 1e-2
    assert rows["compile"]["max_rel_diff"] == rows["channels-last"]["max_rel_diff"]
    fastest = min(timed[:4], key=lambda r: r["seconds_per_volume"])["variant"]
    assert rows["chunk-2"]["base_variant"] == fastest and rows["chunk-2"]["chunk"] == 2


def test_distributed_benchmark_tiny(tmp_path: Path) -> None:
    bench = _load("distributed")
    out = bench.main(["--slices", "5", "--size", "32", "--method", "tv", "--set", "iterations=3",
                      "--json", str(tmp_path / "d.json")])
    one, two = out["rows"]
    assert (one["config"], two["config"]) == ("1x2", "2x1")
    assert [r["slices"] for r in two["ranks"]] == [[0, 3], [3, 5]]
    assert [r["threads"] for r in one["ranks"] + two["ranks"]] == [2, 1, 1]
    assert one["comm_share"] == 0.0 and 0 < two["comm_share"] <= 1
    assert one["max_abs_diff"] == 0.0 and two["max_abs_diff"] == 0.0      # the same volume
    assert all(r["rss_peak_bytes"] > 0 for r in one["ranks"] + two["ranks"])
    assert json.loads((tmp_path / "d.json").read_text())["job"]["method"] == "tv"
