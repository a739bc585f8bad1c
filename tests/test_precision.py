"""The prior network's precision: ``auto`` detects fast bf16 (CPU flags, CUDA support), the
samplers run the network under that autocast only, and the run records what ran."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrecon.errors import UserError
from medrecon.prior.precision import cpu_flags, resolve_precision

TINY = dict(image_size=32, channels=(8, 16), attention_levels=(False, False), num_res_blocks=1,
            num_head_channels=16, norm_num_groups=4)


@pytest.mark.parametrize("flags, expected", [
    ({"sse4_2", "avx2", "fma"}, "float32"),                       # e.g. this AMD EPYC
    ({"avx2", "avx512f", "avx512bw"}, "float32"),                 # AVX-512 without BF16
    ({"avx512f", "avx512_bf16"}, "bfloat16"),
    ({"amx_tile", "amx_bf16", "amx_int8"}, "bfloat16"),
])
def test_auto_on_the_cpu_follows_the_bf16_flags(flags: set, expected: str) -> None:
    got = resolve_precision("auto", "cpu", flags=flags)
    assert got.name == expected and got.record()["network"] == expected
    assert (got.dtype is torch.bfloat16) == (expected == "bfloat16")


def test_explicit_settings_and_refusal() -> None:
    assert resolve_precision("float32", "cpu", flags={"amx_bf16"}).dtype is None
    assert resolve_precision("bfloat16", "cpu", flags=set()).dtype is torch.bfloat16
    with pytest.raises(UserError, match="precision must be one of auto, float32, bfloat16"):
        resolve_precision("fp16", "cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu avx2 amx_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()
    # this machine: auto is float32 exactly when the flags lack AMX and AVX-512 BF16
    here = cpu_flags()
    fast = bool(here & {"amx_bf16", "avx512_bf16"})
    assert resolve_precision("auto", "cpu").name == ("bfloat16" if fast else "float32")


def test_dds_runs_the_network_in_the_resolved_precision() -> None:
    """bfloat16 changes the result a little (the network ran in bf16) and is recorded; float32
    equals auto on a CPU without fast bf16; the data consistency stays float32."""
    from medrecon.phantoms import random_ellipsoids
    from medrecon.prior.network import EDMUNetDenoiser, UNetConfig
    from medrecon.samplers import dds
    from medrecon.tasks import CTOptions, build_operator, data_in_working_units, simulate
    from medrecon.volume import Volume

    torch.manual_seed(0)
    den = EDMUNetDenoiser(UNetConfig(**TINY)).eval()
    with torch.no_grad():              # MONAI zero-initialises the last layer: give it weights
        for p in den.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    vol = Volume.from_array(random_ellipsoids((3, 32, 32), seed=1), modality="CT", units="a.u.")
    m = simulate(vol, "sparse-view-ct", ct=CTOptions(views=8))
    op = build_operator(m, backend="torch")
    y = data_in_working_units(m, op)
    runs = {p: dds(op, y, den, steps=3, seed=2, precision=p) for p in ("float32", "bfloat16", "auto")}
    assert runs["bfloat16"].info["precision"]["network"] == "bfloat16"
    assert runs["float32"].info["precision"] == {"setting": "float32", "network": "float32",
                                                 "reason": "asked for"}
    assert runs["bfloat16"].x.dtype == torch.float32
    diff = float((runs["bfloat16"].x - runs["float32"].x).abs().max() / runs["float32"].x.abs().max())
    assert 0 < diff < 0.05, diff
    if not cpu_flags() & {"amx_bf16", "avx512_bf16"}:
        assert torch.equal(runs["auto"].x, runs["float32"].x)
