"""VE/VP conversions and schedules of the samplers, checked against independent derivations."""

import math

import pytest
import torch

from denoisers import GaussianFourierDenoiser, smooth_power_spectrum, smooth_template
from medrecon.samplers.dds import ddim_update, dds_sigmas
from medrecon.samplers.config import DdsConfig
from medrecon.samplers.schedules import (alpha_bar_from_sigma, ddim_timesteps, eps_from_denoised,
                                         geometric_sigmas, largest_timestep_below,
                                         score_from_denoised, sigma_from_alpha_bar, ve_to_vp,
                                         vp_alpha_bars, vp_to_ve)


def _gaussian(n: int = 16) -> GaussianFourierDenoiser:
    return GaussianFourierDenoiser(smooth_template(n), smooth_power_spectrum(n, 2.0, 0.02))


def test_published_ddim_timesteps_and_cap() -> None:
    assert ddim_timesteps(50) == list(range(980, -1, -20))
    assert ddim_timesteps(50, t_max=999) == list(range(980, -1, -20))
    capped = ddim_timesteps(50, t_max=933)
    assert capped[0] == 933 and capped[-1] == 0 and len(set(capped)) == 50
    assert all(a > b for a, b in zip(capped, capped[1:]))
    abar = vp_alpha_bars()
    t = largest_timestep_below(abar, 80.0)
    assert sigma_from_alpha_bar(float(abar[t])) <= 80.0 < sigma_from_alpha_bar(float(abar[t + 1]))
    ts, sig = dds_sigmas(DdsConfig(), 1000.0)
    assert ts == list(range(980, -1, -20)) and sig[-1] == pytest.approx(0.01, rel=1e-3)


def test_sigma_alpha_bar_round_trip() -> None:
    abar = vp_alpha_bars()
    sig = sigma_from_alpha_bar(abar)
    assert torch.allclose(alpha_bar_from_sigma(sig), abar, rtol=1e-12, atol=0)
    x = torch.randn(3, 4, 4, dtype=torch.float64)
    for t in (0, 500, 999):
        a = float(abar[t])
        assert torch.allclose(ve_to_vp(vp_to_ve(x, a), sigma_from_alpha_bar(a)), x, atol=1e-12)


def test_geometric_sigmas() -> None:
    s = geometric_sigmas(0.01, 378.0, 2000)
    assert s[0] == pytest.approx(378.0) and s[-1] == pytest.approx(0.01)
    ratios = [b / a for a, b in zip(s, s[1:])]
    assert max(ratios) - min(ratios) < 1e-9


@pytest.mark.parametrize("t", [10, 300, 700, 950])
def test_eps_vp_matches_exact_vp_posterior(t: int) -> None:
    """Denoiser.eps_vp (VE denoiser + change of variables) == E[eps | x_vp] derived in VP."""
    den = _gaussian()
    a = float(vp_alpha_bars()[t])
    gen = torch.Generator().manual_seed(t)
    x0 = den.sample(4, gen)
    eps = torch.randn(x0.shape, dtype=torch.float64, generator=gen)
    x_vp = (math.sqrt(a) * x0 + math.sqrt(1 - a) * eps)[:, None]
    got = den.eps_vp(x_vp, torch.full((4,), a, dtype=torch.float64))
    exact = den.eps_vp_exact(x_vp, a)
    assert torch.allclose(got, exact, rtol=1e-6, atol=1e-6 * float(exact.abs().max()))


def test_score_and_tweedie_from_denoiser() -> None:
    """score = (D - x) / s^2 equals the analytic Gaussian score -(C + s^2 I)^{-1} (x - mean)."""
    den = _gaussian()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=gen) * 3
    s = 1.7
    d = den.denoise(x, torch.full((2,), s, dtype=torch.float64))
    p = den.power.to(torch.float64)
    analytic = -torch.fft.ifft2(torch.fft.fft2(x - den.mean.to(torch.float64), norm="ortho")
                                / (p + s * s), norm="ortho").real
    assert torch.allclose(score_from_denoised(x, d, s), analytic, atol=1e-10)
    assert torch.allclose(den.score(x, torch.full((2,), s, dtype=torch.float64)), analytic, atol=1e-10)
    eps = eps_from_denoised(x, d, s)
    assert torch.allclose(x - s * eps, d, atol=1e-12)                         # Tweedie, VE form
    assert torch.allclose(-s * score_from_denoised(x, d, s), eps, atol=1e-12)  # eps = -s score


@pytest.mark.parametrize("eta", [0.0, 0.85])
def test_ve_ddim_update_is_the_vp_update(eta: float) -> None:
    """The VE re-noising step mapped to VP equals the published VP DDS formula with eps_vp."""
    den = _gaussian()
    abar = vp_alpha_bars()
    t, t_next = 600, 580
    a, a2 = float(abar[t]), float(abar[t_next])
    s, s2 = sigma_from_alpha_bar(a), sigma_from_alpha_bar(a2)
    gen = torch.Generator().manual_seed(2)
    x_vp = torch.randn(3, 1, 16, 16, dtype=torch.float64, generator=gen)
    z = torch.randn(x_vp.shape, dtype=torch.float64, generator=gen)
    # VP: published formulas
    eps = den.eps_vp(x_vp, torch.full((3,), a, dtype=torch.float64))
    x0 = (x_vp - math.sqrt(1 - a) * eps) / math.sqrt(a)
    vp_next = (math.sqrt(a2) * x0 + eta * math.sqrt(1 - a2) * z
               + math.sqrt(1 - eta**2) * math.sqrt(1 - a2) * eps)
    # VE: what the sampler does
    x_ve = vp_to_ve(x_vp, a)
    d = den.denoise(x_ve, torch.full((3,), s, dtype=torch.float64))
    ve_next = ddim_update(d, eps_from_denoised(x_ve, d, s), s2, eta, z)
    assert torch.allclose(d, x0, atol=1e-9)
    assert torch.allclose(ve_to_vp(ve_next, s2), vp_next, atol=1e-9)
