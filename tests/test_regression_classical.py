"""Regression on Shepp-Logan phantoms: every task and classical method keeps its measured PSNR
(within 0.5 dB of the golden value), and the expected orderings hold."""

import json

import pytest

from regression_cases import CASES, GOLDEN, measure

GOLDENS = json.loads(GOLDEN.read_text())
_cache: dict[str, float] = {}


def _psnr(name: str) -> float:
    if name not in _cache:
        _cache[name] = measure(name)
    return _cache[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_psnr(name: str) -> None:
    assert name in GOLDENS, f"no golden value for {name}; run python tests/regression_cases.py"
    assert _psnr(name) >= GOLDENS[name] - 0.5, f"{name}: {_psnr(name):.2f} dB < golden {GOLDENS[name]:.2f} - 0.5"


def test_tv_beats_fbp_by_5db_at_8_views() -> None:
    assert _psnr("sv8-tv") >= _psnr("sv8-fbp") + 5.0


def test_sense_beats_zero_filled_at_x4() -> None:
    assert _psnr("mri4-sense") > _psnr("mri4-zero-filled")
