"""MR priors with a "normalised" intensity card reconstruct independently of the file's scale:
the same measurement times 1e-3 or 1e3 gives the same reconstruction times that factor."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from denoisers import mri_problem
from medrecon.errors import DataError, UserError
from medrecon.metrics import psnr
from medrecon.samplers.intensity import mri_intensity, prior_map_for_measurement
from medrecon.samplers.run import reconstruct

PERCENTILE = 99.0


@pytest.fixture(scope="module")
def problem():
    op, y, truth, den = mri_problem(acceleration=4)
    # the target that maps this measurement's SENSE percentile onto the prior's own units
    target = mri_intensity(op, y, PERCENTILE, 1.0).scale
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
    assert one.scale == pytest.approx(1.0, rel=1e-4)          # target chosen so that y maps to itself
    assert seven.lo == 0 and seven.scale == pytest.approx(7.0, rel=1e-4)
    with pytest.raises(UserError, match="pass op and y"):
        prior_map_for_measurement(m, _card("normalised", target))
