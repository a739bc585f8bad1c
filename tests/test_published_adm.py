"""ADM UNet (DDS) re-implementation against the published-code fixtures, and the VP adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medrecon.errors import UserError
from published_fixtures import DATA, TOL, recorded_keys, tiny_config, tiny_io
from medrecon.published import ADMConfig, ADMDenoiser, ADMUNet, autocast_context, build_network
from medrecon.published.importer import split_card_options, adm_state, load_published, read_config

REPO = Path(__file__).resolve().parents[1]


def tiny_net(state: dict | None = None) -> ADMUNet:
    net = ADMUNet(tiny_config("adm"))
    net.load_state_dict(state if state is not None else load_file(DATA / "adm_tiny.safetensors"),
                        strict=True)
    return net.eval()


@pytest.mark.parametrize("source", ["safetensors", "pt"])
def test_reproduces_reference_outputs(source: str) -> None:
    if source == "pt":
        state = adm_state(load_published(DATA / "adm_tiny.pt"), tiny_config("adm"), "fixture")
    else:
        state = load_file(DATA / "adm_tiny.safetensors")
    net, d = tiny_net(state), tiny_io("adm")
    with torch.no_grad():
        out = net(d["x"], d["t"])
        out_frac = net(d["x"], d["t_frac"])
    assert out.shape == (2, 2, 32, 32)
    assert (out - d["out"]).abs().max().item() < TOL
    assert (out_frac - d["out_t_frac"]).abs().max().item() < TOL


def test_resolved_config_matches_published_hyperparameters() -> None:
    cfg = ADMConfig.from_dict(tiny_config("adm"))
    assert (cfg.model_channels, cfg.out_channels, cfg.attention_ds, cfg.channel_mult) == (32, 2, (2,), (1, 1))
    full, _, _ = split_card_options(read_config(REPO / "configs/published/adm_aapm256.yaml", "adm"))
    f = ADMConfig.from_dict(full)
    assert f.channel_mult == (1, 1, 2, 2, 4, 4) and f.attention_ds == (16,) and f.heads(1024) == 16


def test_full_size_config_matches_recorded_keys_on_meta() -> None:
    cfg, _, _ = split_card_options(read_config(REPO / "configs/published/adm_aapm256.yaml", "adm"))
    net = build_network("adm", cfg, "meta")
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch."))
           for k, v in net.state_dict().items()]
    assert got == recorded_keys("adm_full_AAPM256_keys.txt")
    assert sum(p.numel() for p in net.parameters()) == 374_022_658
    out = net(torch.empty(1, 1, 256, 256, device="meta"), torch.empty(1, device="meta"))
    assert out.shape == (1, 2, 256, 256)


def test_schedule_matches_fixture_alpha_bar() -> None:
    den = ADMDenoiser(tiny_net())
    d = tiny_io("adm")
    abar = den.alpha_bar[d["t"].long()]
    assert torch.allclose(abar.float(), d["alpha_bar_t"], rtol=1e-6, atol=0)
    assert abs(den.sigma_min - 0.0100005) < 1e-6 and 150 < den.sigma_max < 160


def test_timestep_exact_at_integers_and_monotone_between() -> None:
    den = ADMDenoiser(tiny_net())
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    assert torch.equal(den.timestep(den.alpha_bar[t]), t.double())
    # a float32 schedule (as samplers often hold it) still hits the integer steps exactly
    assert torch.equal(den.timestep(den.alpha_bar[t].float()), t.double())
    # halfway in log(alpha_bar) between steps 10 and 11 -> t = 10.5
    la = den.log_alpha_bar
    mid = torch.exp((la[10] + la[11]) / 2).reshape(1)
    assert abs(den.timestep(mid).item() - 10.5) < 1e-9
    sig = torch.logspace(-1.9, 2.1, 50, dtype=torch.float64)
    ts = den.timestep(1 / (1 + sig**2))
    assert torch.all(ts[1:] > ts[:-1])
    # outside the trained range: clamped to [0, T-1]
    assert den.timestep(torch.tensor([1.0 - 1e-9, 1e-8])).tolist() == [0.0, 999.0]


def test_adapter_eps_at_integer_timestep_equals_network() -> None:
    den, d = ADMDenoiser(tiny_net()), tiny_io("adm")
    x, t = d["x"], d["t"]
    with torch.no_grad():
        raw = den.net(x, t)[:, :1]
        eps = den.eps_vp(x, den.alpha_bar[t.long()])
        eps_frac = den.eps_at_timestep(x, d["t_frac"])
    assert (eps - raw).abs().max().item() < TOL
    assert (raw - d["out"][:, :1]).abs().max().item() < TOL
    assert (eps_frac - d["out_t_frac"][:, :1]).abs().max().item() < TOL


def test_adapter_denoise_is_vp_tweedie() -> None:
    den, d = ADMDenoiser(tiny_net()), tiny_io("adm")
    x_ve = d["x"] * 3.0
    sigma = torch.tensor([0.7, 12.0])
    abar = 1 / (1 + sigma.double() ** 2)
    with torch.no_grad():
        dx = den.denoise(x_ve, sigma)
        t = den.timestep(abar)
        eps = den.net(x_ve * abar.sqrt().float().reshape(-1, 1, 1, 1), t.float())[:, :1]
    assert ((t - t.floor()) > 0).all()                    # genuinely fractional timesteps
    ref = x_ve - sigma.reshape(-1, 1, 1, 1) * eps
    assert (dx - ref).abs().max().item() < TOL * 20
    # the base-class score follows from D: (D - x) / sigma^2 = -eps / sigma
    with torch.no_grad():
        score = den.score(x_ve, sigma)
    assert (score + eps / sigma.reshape(-1, 1, 1, 1)).abs().max().item() < 1e-4


def test_autocast_context_is_noop_on_cpu() -> None:
    with autocast_context("cpu"):
        assert not torch.is_autocast_enabled("cpu")
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("option", [{"use_scale_shift_norm": False}, {"resblock_updown": False},
                                    {"use_new_attention_order": True}, {"out_channels": 1}])
def test_config_refuses_unsupported_options(option: dict) -> None:
    with pytest.raises(UserError):
        ADMUNet({**tiny_config("adm"), **option})
