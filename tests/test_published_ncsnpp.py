"""NCSN++ (DiffusionMBIR) re-implementation against the published-code fixtures (tests/data/published)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medrecon.errors import UserError
from published_fixtures import DATA, TOL, recorded_keys, tiny_config, tiny_io
from medrecon.published import NCSNpp, NCSNppDenoiser, build_network, prepare_for_inference
from medrecon.published.importer import split_card_options, load_published, ncsnpp_states, read_config

REPO = Path(__file__).resolve().parents[1]


def run(net: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x, sigma)


def test_reproduces_reference_from_safetensors() -> None:
    net = NCSNpp(tiny_config("ncsnpp"))
    net.load_state_dict(load_file(DATA / "ncsnpp_tiny.safetensors"), strict=True)
    d = tiny_io("ncsnpp")
    err = (run(net, d["x"], d["sigma"]) - d["out"]).abs().max().item()
    assert err < TOL, err


def test_reproduces_reference_from_checkpoint_with_ema() -> None:
    ckpt = load_published(DATA / "ncsnpp_tiny_checkpoint.pth")
    ema, raw, step = ncsnpp_states(ckpt, tiny_config("ncsnpp"), "fixture")
    assert step == 0
    d = tiny_io("ncsnpp")
    net = NCSNpp(tiny_config("ncsnpp"))
    net.load_state_dict(ema, strict=True)
    out_ema = run(net, d["x"], d["sigma"])
    net.load_state_dict(raw, strict=True)
    out_raw = run(net, d["x"], d["sigma"])
    assert (out_ema - d["out"]).abs().max().item() < TOL
    assert (out_raw - d["out_raw_model"]).abs().max().item() < TOL
    # the EMA mapping matters: raw weights give a clearly different output
    assert (out_raw - d["out"]).abs().max().item() > 0.1


def test_ema_state_equals_published_inference_weights() -> None:
    ema, _, _ = ncsnpp_states(load_published(DATA / "ncsnpp_tiny_checkpoint.pth"), tiny_config("ncsnpp"), "f")
    ref = load_file(DATA / "ncsnpp_tiny.safetensors")
    assert sorted(ema) == sorted(ref) and len(ref) == 278
    for k in ref:
        assert torch.equal(ema[k], ref[k]), k


def test_full_size_config_matches_recorded_keys_on_meta() -> None:
    cfg, _, _ = split_card_options(read_config(REPO / "configs/published/ncsnpp_aapm256.yaml", "ncsnpp"))
    net = build_network("ncsnpp", cfg, "meta")
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch."))
           for k, v in net.state_dict().items()]
    assert got == recorded_keys("ncsnpp_full_AAPM256_keys.txt", "module.")
    assert sum(p.numel() for p in net.parameters()) == 61_433_601
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 61_433_473
    out = net(torch.empty(1, 1, 256, 256, device="meta"), torch.empty(1, device="meta"))
    assert out.shape == (1, 1, 256, 256)


def test_full_size_attention_only_in_bottleneck() -> None:
    cfg, _, _ = split_card_options(read_config(REPO / "configs/published/ncsnpp_aapm256.yaml", "ncsnpp"))
    net = build_network("ncsnpp", cfg, "meta")
    attn = [i for i, m in enumerate(net.all_modules) if type(m).__name__ == "AttnBlock"]
    assert attn == [27] and len(net.all_modules) == 54


def _denoiser() -> NCSNppDenoiser:
    net = NCSNpp(tiny_config("ncsnpp"))
    net.load_state_dict(load_file(DATA / "ncsnpp_tiny.safetensors"))
    return NCSNppDenoiser(prepare_for_inference(net, "cpu"))


def test_adapter_score_and_denoiser() -> None:
    den, d = _denoiser(), tiny_io("ncsnpp")
    x, s = d["x"], d["sigma"]
    with torch.no_grad():
        score = den.score(x, s)
        assert (score - d["out"]).abs().max().item() < TOL
        dx = den.denoise(x, s)
        ref = x + s.reshape(-1, 1, 1, 1) ** 2 * d["out"]
        assert (dx - ref).abs().max().item() < TOL * 400     # sigma^2 = 400 scales the fp32 error
        # VP view from the same network: eps = -sigma * score at x_ve = x_vp / sqrt(abar)
        abar = 1 / (1 + s.double() ** 2)
        x_vp = x * abar.sqrt().float().reshape(-1, 1, 1, 1)
        eps = den.eps_vp(x_vp, abar.float())
        assert (eps + s.reshape(-1, 1, 1, 1) * d["out"]).abs().max().item() < 1e-3
    assert (den.image_size, den.sigma_min, den.sigma_max) == (32, 0.01, 378.0)


def test_scalar_sigma_broadcasts() -> None:
    den, d = _denoiser(), tiny_io("ncsnpp")
    with torch.no_grad():
        a = den.score(d["x"], torch.tensor(0.5))
        b = den.score(d["x"], torch.tensor([0.5, 0.5]))
    assert torch.equal(a, b)


def test_channels_last_matches_contiguous() -> None:
    d = tiny_io("ncsnpp")
    net = NCSNpp(tiny_config("ncsnpp"))
    net.load_state_dict(load_file(DATA / "ncsnpp_tiny.safetensors"))
    net = prepare_for_inference(net, "cpu", channels_last=True)
    x = d["x"].contiguous(memory_format=torch.channels_last)
    assert (run(net, x, d["sigma"]) - d["out"]).abs().max().item() < TOL


@pytest.mark.parametrize("option", [{"progressive": "output_skip"}, {"model.fir": False},
                                    {"resblock_type": "ddpm"}, {"bogus_option": 1}])
def test_config_refuses_unsupported_options(option: dict) -> None:
    with pytest.raises(UserError):
        NCSNpp({**tiny_config("ncsnpp"), **option})


def test_config_requires_sizes() -> None:
    cfg = {k: v for k, v in tiny_config("ncsnpp").items() if k != "model.nf"}
    with pytest.raises(UserError, match="nf"):
        NCSNpp(cfg)


def test_refuses_other_slice_sizes() -> None:
    net = NCSNpp(tiny_config("ncsnpp"))
    with pytest.raises(ValueError, match="built for 32x32"):
        net(torch.zeros(1, 1, 64, 64), torch.ones(1))


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5, 3)])
def test_fir_resampling_matches_upfirdn_definition(taps: tuple[int, ...]) -> None:
    """Up: zero-insertion, pad (2, 1), filter 4K. Down: pad (1, 1), filter K, keep even samples."""
    from medrecon.published.layers import fir_downsample, fir_filter, fir_kernel_2d, fir_upsample

    k = fir_kernel_2d(taps)
    x = torch.randn(2, 3, 8, 8)
    up = torch.zeros(2, 3, 16, 16)
    up[:, :, ::2, ::2] = x
    ref_up = fir_filter(torch.nn.functional.pad(up, (2, 1, 2, 1)), 4 * k)
    assert (fir_upsample(x, k) - ref_up).abs().max().item() < 1e-6
    ref_down = fir_filter(torch.nn.functional.pad(x, (1, 1, 1, 1)), k)[:, :, ::2, ::2]
    assert (fir_downsample(x, k) - ref_down).abs().max().item() < 1e-6
    assert torch.allclose(k.sum(), torch.tensor(1.0))
