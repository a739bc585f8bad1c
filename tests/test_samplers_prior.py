"""DDS with the shipped phantom prior on a held-out phantom (test seeds are never trained on).

Golden values were measured with torch 2.13 (CPU); the tolerance covers floating-point
differences between machines, not a change of behaviour.
"""

import torch

from medrecon.metrics import psnr
from medrecon.phantoms import TEST_SEED_START, random_ellipsoids
from medrecon.physics.ct import make_ct_operator, parallel_geometry, sparse_view_angles
from medrecon.prior.checkpoint import load_prior
from medrecon.samplers import dds
from medrecon.solvers.fbp import fbp

GOLDEN_DDS10 = 21.31      # dB, 3 slices, 8 views, 10 steps, seed 0
TOLERANCE = 0.5           # dB


def _problem(slices: slice):
    x = torch.from_numpy(random_ellipsoids((24, 128, 128), seed=TEST_SEED_START + 5)[slices].copy())
    g = parallel_geometry((128, 128), sparse_view_angles(8))
    op = make_ct_operator(g)
    y = op(x)
    return x, g, op, y


def test_dds_phantom_prior_beats_fbp_at_8_views() -> None:
    x, g, op, y = _problem(slice(10, 13))
    den = load_prior("phantom")
    base = psnr(fbp(y, g), x, 1.0)                        # measured 10.6 dB
    got = psnr(dds(op, y, den, steps=10, seed=0).x, x, 1.0)
    assert got > base + 8.0, (got, base)
    assert abs(got - GOLDEN_DDS10) < TOLERANCE, got
