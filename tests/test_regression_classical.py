"""Regression on Shepp-Logan phantoms: every task and classical method keeps its golden PSNR
within +/- 0.05 dB (tests/golden_cases.py; a loss and a gain both fail), and the expected
orderings hold."""

import pytest

from golden_cases import check
from regression_cases import CASES, measure

_cache: dict[str, float] = {}


def _psnr(name: str) -> float:
    if name not in _cache:
        _cache[name] = measure(name)
    return _cache[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_psnr(name: str) -> None:
    check(name, _psnr(name))


def test_tv_beats_fbp_by_5db_at_8_views() -> None:
    assert _psnr("sv8-tv") >= _psnr("sv8-fbp") + 5.0


def test_sense_beats_zero_filled_at_x4() -> None:
    assert _psnr("mri4-sense") > _psnr("mri4-zero-filled")
