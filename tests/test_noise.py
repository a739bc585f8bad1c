"""Poisson transmission noise (CT) and circular complex Gaussian noise (MRI): statistics, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from medrecon.errors import UserError
from medrecon.physics.noise import complex_gaussian, poisson_transmission, transmission_counts

N = 200_000


@pytest.mark.parametrize("p, i0", [(0.5, 1000.0), (3.0, 1e4), (0.0, 50.0)])
def test_counts_follow_poisson(p: float, i0: float) -> None:
    counts = transmission_counts(torch.full((N,), p), i0, seed=1)
    rate = i0 * math.exp(-p)
    # mean within 5 standard errors, variance (= mean for Poisson) within 3 %
    assert abs(float(counts.mean()) - rate) < 5 * math.sqrt(rate / N)
    assert float(counts.var()) == pytest.approx(rate, rel=0.03)
    assert torch.equal(counts, counts.round()) and float(counts.min()) >= 0


def test_noisy_line_integrals_statistics() -> None:
    p, i0 = 1.0, 1e4
    noisy = poisson_transmission(torch.full((N,), p), i0, seed=2)
    rate = i0 * math.exp(-p)
    # delta method: -log(counts / i0) has mean ~ p and variance ~ 1 / rate
    assert float(noisy.mean()) == pytest.approx(p, abs=1e-3)
    assert float(noisy.var()) == pytest.approx(1 / rate, rel=0.03)


def test_poisson_is_seeded_and_keeps_shape_dtype_device() -> None:
    p = torch.rand(3, 7, 11, generator=torch.Generator().manual_seed(0)) * 4
    a, b = poisson_transmission(p, 500.0, seed=7), poisson_transmission(p, 500.0, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, poisson_transmission(p, 500.0, seed=8))
    assert a.shape == p.shape and a.dtype == p.dtype and a.device == p.device
    assert poisson_transmission(p.double(), 500.0, seed=7).dtype == torch.float64


def test_noiseless_and_clamping() -> None:
    p = torch.tensor([0.0, 1.0, 2.0])
    same = poisson_transmission(p, None, seed=0)
    assert torch.equal(same, p) and same.data_ptr() != p.data_ptr()
    # no photon arrives through 50 attenuation lengths: clamped to one photon, log(i0)
    dark = poisson_transmission(torch.full((100,), 50.0), 100.0, seed=0)
    assert torch.allclose(dark, torch.full((100,), math.log(100.0)))


def test_mu_scale() -> None:
    p = torch.rand(1000, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 300
    a = poisson_transmission(p, 1e3, seed=3, mu_scale=0.02)   # p in mm, attenuation 0.02 / mm
    b = poisson_transmission(p * 0.02, 1e3, seed=3)           # the same exponents, same draws
    torch.testing.assert_close(a * 0.02, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", [dict(i0=0.0), dict(i0=-5.0), dict(i0=float("inf")),
                                 dict(mu_scale=0.0), dict(seed=1.5)])
def test_poisson_rejects_bad_input(bad) -> None:
    kwargs = dict(i0=100.0, seed=0, mu_scale=1.0)
    kwargs.update(bad)
    with pytest.raises(UserError):
        poisson_transmission(torch.ones(4), **kwargs)


def test_complex_gaussian_statistics() -> None:
    k = torch.zeros(N, dtype=torch.complex64)
    sigma = 0.3
    n = complex_gaussian(k, sigma, seed=4)
    assert n.dtype == torch.complex64
    assert float((n.abs() ** 2).mean()) == pytest.approx(sigma ** 2, rel=0.02)       # E|n|^2
    assert float(n.real.var()) == pytest.approx(sigma ** 2 / 2, rel=0.02)
    assert float(n.imag.var()) == pytest.approx(sigma ** 2 / 2, rel=0.02)
    assert abs(float((n.real * n.imag).mean())) < 5 * sigma ** 2 / 2 / math.sqrt(N)
    assert abs(complex(n.mean())) < 5 * sigma / math.sqrt(N)


def test_complex_gaussian_seeded_additive_and_validated() -> None:
    k = torch.randn(2, 4, 8, 8, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    a = complex_gaussian(k, 0.1, seed=5)
    assert torch.equal(a, complex_gaussian(k, 0.1, seed=5)) and a.dtype == torch.complex128
    assert not torch.equal(a, complex_gaussian(k, 0.1, seed=6))
    torch.testing.assert_close(a - k, complex_gaussian(torch.zeros_like(k), 0.1, seed=5))
    assert torch.equal(complex_gaussian(k, 0.0, seed=5), k)
    assert torch.equal(complex_gaussian(k, None, seed=5), k)
    with pytest.raises(UserError, match="complex"):
        complex_gaussian(k.real, 0.1, seed=0)
    with pytest.raises(UserError, match="sigma"):
        complex_gaussian(k, -1.0, seed=0)
