"""The prior-fit check (medrecon.samplers.run.check_prior_fit): every branch, at its boundaries,
on hand-built images whose 1st and 99th percentiles are known exactly."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from matrix_operator import MatrixOperator
from medrecon.errors import DataError
from medrecon.samplers.run import check_prior_fit

CARD = {"name": "chest", "intensity": {"window": [-1000.0, 1000.0], "units": "HU"}}
N = 101         # 101 values: the 1st and 99th percentiles are the 2nd and 100th smallest


def image(p1: float, p99: float, seed: int = 0) -> torch.Tensor:
    """[1, 1, 101] float64 whose three lowest values are p1 and three highest p99 (so any
    interpolation between neighbours gives them exactly), in a seeded random order."""
    v = np.concatenate([[p1] * 3, np.linspace(p1, p99, N - 4)[1:-1], [p99] * 3])
    v = v[np.random.default_rng(seed).permutation(N)]
    return torch.from_numpy(v).reshape(1, 1, N)


def _op() -> MatrixOperator:
    return MatrixOperator(torch.eye(N, dtype=torch.float64), (1, N))


# (p1, p99, outcome): "ok", "warn" or "refuse"; the bounds are inclusive
CASES = [
    (0.0, 1.0, "ok"), (0.0, 0.3, "ok"), (0.0, 1.5, "ok"), (-0.5, 1.0, "ok"),
    (0.0, 0.29, "warn"), (0.0, 1.51, "warn"), (-0.51, 1.0, "warn"),
    (0.0, 0.1, "warn"), (0.0, 4.0, "warn"), (-3.0, 1.0, "warn"), (-3.0, 4.0, "warn"),
    (0.0, 0.099, "refuse"), (0.0, 4.01, "refuse"), (-3.01, 1.0, "refuse"),
    (-3.01, 0.05, "refuse"), (-10.0, 20.0, "refuse"), (0.0, 0.0, "refuse"), (-5.0, -1.0, "refuse"),
]


@pytest.mark.parametrize("p1, p99, outcome", CASES)
def test_every_branch_of_the_prior_fit(p1: float, p99: float, outcome: str, caplog) -> None:
    x = image(p1, p99)
    assert np.percentile(x.numpy(), [1, 99]).tolist() == [p1, p99]       # the hand-built case
    with caplog.at_level(logging.WARNING, logger="medrecon.samplers.run"):
        if outcome == "refuse":
            with pytest.raises(DataError) as exc:
                check_prior_fit(x, _op(), x, CARD)
            text = str(exc.value)
            assert "prior 'chest' (window [-1000.0, 1000.0] HU) does not fit this measurement" in text
            assert f"[{p1:.3g}, {p99:.3g}] (1st-99th percentile)" in text
            assert caplog.text == ""
            return
        got = check_prior_fit(x, _op(), x, CARD)
    assert got == (p1, p99)
    if outcome == "warn":
        assert "prior 'chest'" in caplog.text and "fits this measurement poorly" in caplog.text
        assert f"[{p1:.3g}, {p99:.3g}]" in caplog.text
    else:
        assert caplog.text == ""


def test_without_an_image_ten_cgls_steps_give_one() -> None:
    """No warm start: the image is the least-squares solution of the prior-unit data (here
    A = 2 I, so x = y / 2), not the data themselves."""
    x = image(0.0, 3.0)
    op = MatrixOperator(2.0 * torch.eye(N, dtype=torch.float64), (1, N))
    y = op.forward(x)
    assert check_prior_fit(None, op, y, CARD) == pytest.approx((0.0, 3.0), abs=1e-12)
    half = MatrixOperator(0.5 * torch.eye(N, dtype=torch.float64), (1, N))
    with pytest.raises(DataError, match=r"spans \[0, 6\]"):       # x = 2 y: p99 = 6, y's is 3
        check_prior_fit(None, half, half.forward(image(0.0, 6.0)), CARD)


def test_complex_images_are_judged_by_their_magnitude() -> None:
    mag = image(0.2, 1.2)
    phase = torch.linspace(0.0, 6.0, N, dtype=torch.float64).reshape(1, 1, N)
    x = torch.polar(mag, phase)
    assert float(x.real.min()) < -1.0                                  # real parts far below -0.5
    assert check_prior_fit(x, _op(), x, CARD) == pytest.approx((0.2, 1.2), abs=1e-12)


class _Slab:
    """Stands in for a distributed Slab of one slice per rank: ``all_gather`` returns every
    slice's sampled values in slice order (this rank's slice first)."""

    def __init__(self, others: list, distributed: bool = True) -> None:
        self.others, self.distributed = others, distributed
        self.n, self.count = 1 + len(others), 1

    def all_gather(self, value: torch.Tensor) -> torch.Tensor:
        return torch.cat([value, *[o.reshape(1, -1).to(value.dtype) for o in self.others]])


def test_distributed_ranks_judge_the_whole_volume() -> None:
    mine = image(0.0, 1.0)
    other = torch.full((N,), 9.0, dtype=torch.float64)   # the other slab is far too bright
    whole = np.concatenate([mine.flatten().numpy(), other.numpy()])
    p1, p99 = np.percentile(whole, [1, 99])
    assert p99 == 9.0
    with pytest.raises(DataError, match=rf"spans \[{p1:.3g}, 9\]"):
        check_prior_fit(mine, _op(), mine, CARD, _Slab([other]))
    # a slab that is not distributed (one process) judges what it has
    assert check_prior_fit(mine, _op(), mine, CARD, _Slab([other], distributed=False)) == (0.0, 1.0)
    third = image(-0.2, 0.4, seed=1).flatten()
    whole = np.concatenate([mine.flatten().numpy(), third.numpy()])
    got = check_prior_fit(mine, _op(), mine, CARD, _Slab([third]))
    assert got == pytest.approx(tuple(np.percentile(whole, [1, 99])), abs=1e-12)


def test_a_card_without_an_intensity_block_is_named_plainly() -> None:
    x = image(0.0, 20.0)
    with pytest.raises(DataError, match=r"prior 'bare' \(window None\) does not fit"):
        check_prior_fit(x, _op(), x, {"name": "bare"})
