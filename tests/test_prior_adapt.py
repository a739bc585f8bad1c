"""LoRA + bias adapters on a frozen prior (medrecon.prior.adapt, issue 24)."""

from __future__ import annotations

import pytest
import torch

from medrecon.errors import UserError
from medrecon.prior.adapt import LoraDenoiser, adapted_parameter_count
from medrecon.prior.network import EDMUNetDenoiser, UNetConfig

TINY = dict(image_size=32, channels=(8, 16), attention_levels=(False, False), num_res_blocks=1,
            num_head_channels=16, norm_num_groups=4, mid_attention=False)


def _net() -> EDMUNetDenoiser:
    torch.manual_seed(3)
    net = EDMUNetDenoiser(UNetConfig(**TINY)).eval()
    with torch.no_grad():   # non-zero biases, so that a zero offset is a real test
        for name, p in net.named_parameters():
            if name.endswith(".bias"):
                p.add_(0.01 * torch.randn(p.shape))
    return net


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 1, 32, 32, generator=g), torch.tensor([0.1, 0.3, 1.0])


def _loss(adapter: LoraDenoiser, seed: int) -> torch.Tensor:
    x, s = _batch(seed)
    target = torch.rand(x.shape, generator=torch.Generator().manual_seed(100 + seed))
    return ((adapter.denoise(x, s) - target) ** 2).mean()


def test_zero_initialised_up_projection_gives_the_base_network_bit_for_bit() -> None:
    net = _net()
    adapter = LoraDenoiser(net, rank=4, seed=5)
    x, s = _batch()
    with torch.no_grad():
        assert torch.equal(adapter.denoise(x, s), net.denoise(x, s))
    assert all(float(p.detach().abs().max()) > 0 for p in adapter.down.values())   # A is not zero
    assert adapted_parameter_count(adapter) < sum(p.numel() for p in net.parameters())


def test_adaptation_changes_only_adapter_parameters() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    adapter = LoraDenoiser(net, rank=2, lr=1e-2, seed=0)
    x, s = _batch()
    with torch.no_grad():
        y0 = adapter.denoise(x, s)
    for i in range(3):
        adapter.optimizer_step(_loss(adapter, i))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)        # bitwise unchanged
    assert all(p.grad is None for p in net.parameters())                 # no gradient reached it
    assert any(float(p.detach().abs().max()) > 0 for p in adapter.up.values())
    assert any(float(p.detach().abs().max()) > 0 for p in adapter.bias.values())
    with torch.no_grad():
        assert not torch.allclose(adapter.denoise(x, s), y0)             # the network did change


def test_adaptation_lowers_the_loss_it_minimises() -> None:
    adapter = LoraDenoiser(_net(), rank=4, lr=3e-3, seed=0)
    first = float(_loss(adapter, 0))
    for _ in range(20):
        adapter.optimizer_step(_loss(adapter, 0))
    assert float(_loss(adapter, 0)) < 0.9 * first


def test_state_round_trip_resumes_bit_for_bit() -> None:
    a = LoraDenoiser(_net(), rank=3, lr=1e-2, seed=7)
    for i in range(2):
        a.optimizer_step(_loss(a, i))
    saved = {k: v.clone() for k, v in a.state_tensors().items()}
    assert any(k.startswith("adapt.opt.") for k in saved) and "adapt.rng" in saved
    draws_a = torch.randperm(10, generator=a.generator)
    for i in range(2, 4):
        a.optimizer_step(_loss(a, i))
    b = LoraDenoiser(_net(), rank=3, lr=1e-2, seed=99)   # another seed: everything comes from the state
    b.load_state_tensors(saved)
    assert torch.equal(torch.randperm(10, generator=b.generator), draws_a)
    for i in range(2, 4):
        b.optimizer_step(_loss(b, i))
    sa, sb = a.state_tensors(), b.state_tensors()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_summed_gradients_of_two_halves_equal_the_whole() -> None:
    """``reduce`` is how processes share one adapter: the sum of per-process gradients."""
    whole = LoraDenoiser(_net(), rank=2, lr=1e-2, seed=1)
    whole.optimizer_step(_loss(whole, 0) + _loss(whole, 1))
    split = LoraDenoiser(_net(), rank=2, lr=1e-2, seed=1)
    other = LoraDenoiser(_net(), rank=2, lr=1e-2, seed=1)
    other.optimizer.zero_grad()
    _loss(other, 1).backward()
    other_grad = torch.cat([p.grad.reshape(-1) for p in other.adapter_parameters()])
    split.optimizer_step(_loss(split, 0), reduce=lambda g: g + other_grad)
    for p, q in zip(whole.adapter_parameters(), split.adapter_parameters()):
        assert torch.allclose(p, q, atol=1e-7, rtol=0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UserError, match="rank"):
        LoraDenoiser(_net(), rank=0)
    with pytest.raises(UserError, match="learning rate"):
        LoraDenoiser(_net(), lr=-1.0)
