"""DDS with the prior adapted to the measurement (``adapt=true``; medrecon.samplers.adaptation)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

import distributed_cases as cases
from medrecon.errors import UserError
from medrecon.io.sampler_state import DirectoryStateStore
from medrecon.prior.network import EDMUNetDenoiser, UNetConfig
from medrecon.samplers.adaptation import differentiable_cg, total_variation
from medrecon.samplers.interruption import SamplingInterrupted
from medrecon.samplers.config import DdsConfig
from medrecon.samplers.dds import dds

TINY = dict(image_size=32, channels=(8, 16), attention_levels=(False, False), num_res_blocks=1,
            num_head_channels=16, norm_num_groups=4, mid_attention=False)
ADAPT = dict(adapt=True, adapt_steps=2, adapt_slices=3, adapt_lr=1e-2, adapt_rank=2)


def tiny_net() -> EDMUNetDenoiser:
    torch.manual_seed(3)
    return EDMUNetDenoiser(UNetConfig(**TINY)).eval()


@pytest.fixture(scope="module")
def ct():
    m = cases.ct_measurement()
    _, op, y = cases._local(m, None)
    return op, y


def test_adapt_off_keeps_the_identity_of_earlier_runs() -> None:
    ident = DdsConfig().identity()
    assert not any(k.startswith("adapt") for k in ident)
    on = DdsConfig(adapt=True, adapt_steps=5).identity()
    assert on["adapt"] is True and on["adapt_steps"] == 5


@pytest.mark.parametrize("field, value", [("adapt", "yes"), ("adapt_steps", 0), ("adapt_lr", 0.0),
                                          ("adapt_cg", -1), ("adapt_tv", -0.1),
                                          ("adapt_until_sigma", float("nan"))])
def test_bad_adapt_settings_are_refused_by_name(field: str, value) -> None:
    with pytest.raises(UserError, match=field):
        DdsConfig(**{field: value})


def test_dds_adaptation_trains_only_the_adapter_and_changes_the_result(ct) -> None:
    op, y = ct
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    kw = dict(steps=4, seed=2, chunk=4)
    plain = dds(op, y, net, **kw)
    adapted = dds(op, y, net, **kw, **ADAPT)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    info = adapted.info
    assert info["adapt_optimizer_steps"] == 4 * 2
    assert info["adapt_images_forward"] == 4 * 2 * 3
    assert info["adapt_passes_per_slice"] == pytest.approx(2 * 24 / cases.N_SLICES)
    assert not torch.equal(plain.x, adapted.x)
    assert float((plain.x - adapted.x).abs().max()) > 1e-4
    assert info["adapt_loss_last"] < info["adapt_loss_first"]


def test_until_sigma_limits_adaptation_to_the_noisy_steps(ct) -> None:
    op, y = ct
    seen = []
    res = dds(op, y, tiny_net(), steps=4, seed=2, chunk=4, adapt_until_sigma=1.0,
              trace=lambda i, q: seen.append(q["sigma"]), **ADAPT)
    assert res.info["adapt_optimizer_steps"] == 2 * sum(s >= 1.0 for s in seen)
    assert 0 < sum(s >= 1.0 for s in seen) < 4


def test_adapted_dds_resumes_bit_for_bit(ct, tmp_path: Path) -> None:
    op, y = ct
    kw = dict(steps=5, seed=1, chunk=4, adapt_cg=1, adapt_tv=0.01, **ADAPT)
    full = dds(op, y, tiny_net(), **kw)
    calls = {"n": 0}

    def interrupt(step: int, tensors: dict) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(SamplingInterrupted, match="after step 3/5"):
        dds(op, y, tiny_net(), store=DirectoryStateStore(tmp_path), callback=interrupt, **kw)
    resumed = dds(op, y, tiny_net(), store=DirectoryStateStore(tmp_path), resume=True, **kw)
    assert resumed.info["resumed_from"] == 3 and torch.equal(resumed.x, full.x)


def test_differentiable_cg_solves_a_small_system_and_tv_of_a_ramp() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(2, 6, 6, generator=g, dtype=torch.float64)
    spd = m @ m.transpose(1, 2) + 6 * torch.eye(6, dtype=torch.float64)

    def normal(v: torch.Tensor) -> torch.Tensor:    # [2, 6, 1] stacks, one system per slice
        return spd @ v

    b = torch.randn(2, 6, 1, generator=g, dtype=torch.float64)
    x = differentiable_cg(normal, b, torch.zeros_like(b), 6)
    assert torch.allclose(x, torch.linalg.solve(spd, b), atol=1e-8)
    ramp = torch.arange(5.0)[None, None, :].expand(1, 4, 5)
    assert float(total_variation(ramp)[0]) == pytest.approx(1.0)


# -- two gloo processes -------------------------------------------------------------------------
def _adapted_slab(rank: int, world: int) -> torch.Tensor:
    from medrecon.distributed.slab import Slab

    slab = Slab.of_group(cases.N_SLICES)
    _, op, y = cases._local(cases.ct_measurement(), slab)
    return dds(op, y, tiny_net(), steps=3, seed=5, chunk=4, slab=slab, **ADAPT).x


def test_two_processes_hold_one_adapter_and_equal_one_process(ct) -> None:
    from medrecon.distributed.local import run_local

    op, y = ct
    single = dds(op, y, tiny_net(), steps=3, seed=5, chunk=4, **ADAPT).x
    parts = run_local(_adapted_slab, 2, timeout=300)
    got = torch.cat(parts)
    diff = float((got - single).abs().max() / single.abs().max())
    # the adapter's gradient is one backward pass over all chosen slices in one process, a sum of
    # per-rank backward passes under torchrun: equal up to float32 summation order, not bit for bit
    assert diff <= 2e-4, diff
