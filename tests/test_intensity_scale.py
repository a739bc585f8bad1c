"""MR priors with a "normalised" intensity card reconstruct independently of the file's scale:
the same measurement times 1e-3 or 1e3 gives the same reconstruction times that factor."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from denoisers import mri_problem
from medrecon.errors import DataError, UserError
from medrecon.metrics import psnr
from medrecon.samplers.intensity import mri_intensity, prior_map_for_measurement
from medrecon.samplers.run import reconstruct

PERCENTILE = 99.0


def sense_by_hand(op, y: torch.Tensor, iterations: int) -> np.ndarray:
    """The SENSE image of the normalisation, computed here: ``iterations`` steps of plain CG on
    ``A^H A x = A^H y`` from x = 0, one system per slice, sums in float64 (a second
    implementation: ``op.forward`` / ``op.adjoint`` only)."""
    b = op.adjoint(y).to(torch.complex128)
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    dot = lambda u, v: (u.conj() * v).real.sum(dim=(1, 2))          # noqa: E731 - per slice
    rr = dot(r, r)
    for _ in range(iterations):
        ap = op.adjoint(op.forward(p.to(torch.complex64))).to(torch.complex128)
        alpha = (rr / dot(p, ap)).reshape(-1, 1, 1)
        x, r = x + alpha * p, r - alpha * ap
        rr_new = dot(r, r)
        p = r + (rr_new / rr).reshape(-1, 1, 1) * p
        rr = rr_new
    return x.abs().numpy()


@pytest.fixture(scope="module")
def problem():
    op, y, truth, den = mri_problem(acceleration=4)
    # the target that maps this measurement's SENSE percentile onto the prior's own units:
    # numpy's percentile of the hand-made 10-step SENSE image
    target = float(np.percentile(sense_by_hand(op, y, 10), PERCENTILE))
    return op, y, truth, den, target


def _card(kind: str, target: float) -> dict:
    if kind == "normalised":
        return {"name": "test-mr", "intensity": {"convention": "normalised", "window": [0.0, 1.0],
                                                 "units": "normalised",
                                                 "normalisation": {"method": "percentile",
                                                                   "percentile": PERCENTILE, "target": target}}}
    return {"name": "test-window", "intensity": {"convention": "window01", "window": [0.0, 1.0], "units": "window01"}}


def _run(problem, card: dict, factor: float) -> torch.Tensor:
    op, y, _, den, _ = problem
    den.card = card
    m = SimpleNamespace(task="cs-mri", attrs={})
    try:
        return reconstruct("dds", op, y * factor, den, m, steps=6, seed=0).x / factor
    finally:
        del den.card


@pytest.mark.parametrize("factor", [1e-3, 1e3])
def test_normalised_prior_is_scale_free(problem, factor: float) -> None:
    _, _, truth, _, target = problem
    card = _card("normalised", target)
    base = _run(problem, card, 1.0)
    scaled = _run(problem, card, factor)
    p_base, p_scaled = psnr(base, truth, 1.0), psnr(scaled, truth, 1.0)
    assert p_base > 25.0, p_base                               # a real reconstruction (measured 30.3 dB)
    assert abs(p_scaled - p_base) < 0.1, (p_base, p_scaled)
    assert float((scaled - base).abs().max() / base.abs().max()) < 1e-3


@pytest.mark.parametrize("factor", [1e-3, 1e3])
def test_recorded_noise_is_used_and_scale_free(problem, factor: float) -> None:
    """A noisy measurement's recorded k-space sigma (working units, as ``medrecon simulate``
    writes it) sets DDS's noise-weighted proximal step in prior units: scaling the data and its
    recorded noise by a factor gives the same reconstruction times that factor."""
    from medrecon.physics.noise import complex_gaussian

    op, y, truth, den, target = problem
    sigma = 0.05
    noisy = complex_gaussian(y, sigma, seed=3) * op.mask
    den.card = _card("normalised", target)
    try:
        runs = {}
        for f in (1.0, factor):
            m = SimpleNamespace(task="cs-mri", attrs={"options": {"sigma": sigma * f}})
            runs[f] = reconstruct("dds", op, noisy * f, den, m, steps=6, seed=0)
        plain = reconstruct("dds", op, noisy, den, SimpleNamespace(task="cs-mri", attrs={}),
                            steps=6, seed=0)
    finally:
        del den.card
    base, scaled = runs[1.0], runs[factor]
    scale = base.info["intensity_map"][1]
    assert base.info["noise_sigma_working"] == sigma
    assert base.info["gamma"] == pytest.approx((0.1 * scale / sigma) ** 2, rel=1e-6)
    assert scaled.info["gamma"] == pytest.approx(base.info["gamma"], rel=1e-4)
    p_base, p_scaled = psnr(base.x, truth, 1.0), psnr(scaled.x / factor, truth, 1.0)
    assert abs(p_scaled - p_base) < 0.1, (p_base, p_scaled)
    assert p_base > psnr(plain.x, truth, 1.0) + 3.0       # the recorded noise was used


def test_window_prior_depends_on_scale(problem) -> None:
    """The control: a fixed-window card is not scale-free (what the normalisation fixes): the
    same data 1000 times larger no longer fit its window, and the run is refused rather than
    returning a meaningless image (medrecon.samplers.run.check_prior_fit)."""
    _, _, truth, _, target = problem
    card = _card("window", target)
    assert psnr(_run(problem, card, 1.0), truth, 1.0) > 25.0
    with pytest.raises(DataError, match="does not fit this measurement"):
        _run(problem, card, 1e3)


def test_normalised_card_needs_mri_data(problem) -> None:
    op, y, _, _, target = problem
    m = SimpleNamespace(task="cs-mri", attrs={})
    one = prior_map_for_measurement(m, _card("normalised", target), op, y)
    seven = prior_map_for_measurement(m, _card("normalised", target), op, y * 7.0)
    assert one.lo == 0 and one.scale == pytest.approx(1.0, rel=1e-4)   # target chosen: y maps to itself
    assert seven.lo == 0 and seven.scale == pytest.approx(7.0, rel=1e-4)
    with pytest.raises(UserError, match="pass op and y"):
        prior_map_for_measurement(m, _card("normalised", target))


def test_mri_intensity_is_the_percentile_of_the_sense_magnitude_over_the_target(problem) -> None:
    """Percentile, target and the number of CG steps each change the scale as computed here."""
    op, y, _, _, _ = problem
    for percentile, target, iterations in ((99.0, 1.0, 10), (90.0, 2.0, 10), (50.0, 0.5, 3), (100.0, 1.0, 1)):
        want = np.percentile(sense_by_hand(op, y, iterations), percentile) / target
        got = mri_intensity(op, y, percentile, target, iterations)
        assert got.lo == 0.0 and got.scale == pytest.approx(want, rel=1e-4), (percentile, target, iterations)
    with pytest.raises(UserError, match="0 < percentile <= 100"):
        mri_intensity(op, y, 0.0)
    with pytest.raises(DataError, match="empty"):
        mri_intensity(op, torch.zeros_like(y))


def test_fully_sampled_single_coil_normalises_by_the_image_itself() -> None:
    """A = F (one coil of ones, every k-space sample): SENSE returns the image, so the scale is
    the image's own magnitude percentile over the target."""
    from medrecon.physics.mri import SenseOperator

    rng = np.random.default_rng(0)
    img = (rng.random((2, 8, 8)) * np.exp(1j * rng.random((2, 8, 8)))).astype(np.complex64)
    op = SenseOperator(np.ones((1, 8, 8), np.complex64))
    y = op.forward(torch.from_numpy(img))
    got = mri_intensity(op, y, 95.0, 4.0)
    assert got.scale == pytest.approx(np.percentile(np.abs(img), 95.0) / 4.0, rel=1e-5)
