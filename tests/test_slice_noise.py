"""Noise correlated across slices (``slice_noise_period``, after ISCS): exact anchors, unit
variance, the designed correlation of neighbours, and one definition for the whole volume (a slab
of a distributed run takes its rows of the one-process noise)."""

from __future__ import annotations

import math

import pytest
import torch

from medrecon.samplers.noise import NoiseSource
from medrecon.samplers.slice_noise import anchor_count, interpolate_anchors


def test_anchors_are_exact_and_paths_keep_unit_variance() -> None:
    g = torch.Generator().manual_seed(0)
    n, p = 9, 4
    anchors = torch.randn(anchor_count(n, p), 1, 64, 64, generator=g)
    assert anchors.shape[0] == 4                       # anchors at 0, 4, 8 and 12 (beyond the last slice)
    noise = interpolate_anchors(anchors, n, p)
    assert noise.shape == (n, 64, 64)
    for j in range(3):
        torch.testing.assert_close(noise[j * p], anchors[j, 0], rtol=0, atol=0)
    # slice 1: t = 1/4 between anchors 0 and 1
    expected = math.cos(math.pi / 8) * anchors[0, 0] + math.sin(math.pi / 8) * anchors[1, 0]
    torch.testing.assert_close(noise[1], expected)


@pytest.mark.parametrize("period", [2, 4])
def test_neighbours_correlate_by_design(period: int) -> None:
    g = torch.Generator().manual_seed(1)
    n = 2 * period + 1
    anchors = torch.randn(anchor_count(n, period), 1, 256, 256, generator=g)
    noise = interpolate_anchors(anchors, n, period).reshape(n, -1)
    assert noise.var(dim=1).sub(1).abs().max() < 0.02
    corr = (noise[:-1] * noise[1:]).mean(dim=1)
    assert corr.sub(math.cos(math.pi / (2 * period))).abs().max() < 0.02


def test_complex_rows_correlate_per_part() -> None:
    anchors = torch.randn(anchor_count(5, 2), 2, 32, 32, generator=torch.Generator().manual_seed(2))
    noise = interpolate_anchors(anchors, 5, 2)
    assert noise.shape == (10, 32, 32)
    torch.testing.assert_close(noise[0], anchors[0, 0], rtol=0, atol=0)   # re(0)
    torch.testing.assert_close(noise[1], anchors[0, 1], rtol=0, atol=0)   # im(0)
    torch.testing.assert_close(noise[4], anchors[1, 0], rtol=0, atol=0)   # re(2) is anchor 1


class _Slab:
    """The two methods of :class:`medrecon.distributed.slab.Slab` that NoiseSource uses."""

    def __init__(self, lo: int, hi: int, n: int) -> None:
        self.lo, self.hi, self.n, self.count, self.distributed = lo, hi, n, hi - lo, True

    def global_rows(self, local_rows: int) -> int:
        return local_rows // self.count * self.n

    def take(self, full: torch.Tensor, per_slice: int = 1) -> torch.Tensor:
        return full[self.lo * per_slice:self.hi * per_slice]


@pytest.mark.parametrize("rows", [1, 2])
def test_a_slab_takes_its_rows_of_the_whole_volume(rows: int) -> None:
    whole = NoiseSource(7).normal((7 * rows, 8, 8), torch.float32, torch.device("cpu"), 3, rows)
    parts = [NoiseSource(7, _Slab(lo, hi, 7)).normal(((hi - lo) * rows, 8, 8), torch.float32,
                                                      torch.device("cpu"), 3, rows)
             for lo, hi in ((0, 3), (3, 5), (5, 7))]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=0)


def test_dds_with_correlated_noise_is_seeded_and_differs_from_independent() -> None:
    from denoisers import ct_problem

    from medrecon.samplers.dds import dds

    op, y, x_true, den = ct_problem(views=4, n=32, n_slices=6)
    a = dds(op, y, den, steps=4, seed=3, slice_noise_period=3).x
    b = dds(op, y, den, steps=4, seed=3, slice_noise_period=3).x
    c = dds(op, y, den, steps=4, seed=3).x
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-4
