"""Phantoms: shapes, ranges, seeded determinism, Shepp-Logan structure, reserved seeds."""

import time

import numpy as np
import pytest

from medrecon.errors import UserError
from medrecon.phantoms import (TEST_SEED_START, VALIDATION_SEED_START, check_training_seeds,
                               ellipsoid_family, random_ellipsoids, shepp_logan_3d)


@pytest.mark.parametrize("contrast", ["ct", "mr"])
def test_shepp_logan_shape_range_and_values(contrast: str) -> None:
    vol = shepp_logan_3d((16, 64, 48), contrast)
    assert vol.shape == (16, 64, 48) and vol.dtype == np.float32
    assert vol.min() == 0.0 and vol.max() == 1.0
    levels = {round(float(v), 3) for v in np.unique(vol)}
    expected = {0.0, 0.2, 0.3, 1.0} if contrast == "ct" else {0.0, 0.1, 0.5, 0.8, 1.0}
    assert levels == expected


def test_shepp_logan_ct_structure() -> None:
    """Background outside the skull, bright skull rim, 0.2 brain, dark ventricles; left-right mirror
    symmetric skull shell in x and z."""
    vol = shepp_logan_3d((32, 128, 128))
    mid = vol[16]
    assert mid[0, 0] == 0.0 and mid[64, 64] == pytest.approx(0.2)
    assert mid[:, 64].max() == 1.0  # the skull rim crosses the central column
    assert mid[64, 49] == 0.0 and mid[64, 78] == 0.0  # both ventricles (x = -0.22, +0.22)
    outer = vol >= 0.999  # the skull shell: ellipsoids 1 and 2 are centred, so it is mirror symmetric
    np.testing.assert_array_equal(outer, outer[:, :, ::-1])
    np.testing.assert_array_equal(outer, outer[::-1])


def test_random_ellipsoids_seeded_and_in_range() -> None:
    a = random_ellipsoids((8, 64, 64), seed=5)
    b = random_ellipsoids((8, 64, 64), seed=5)
    c = random_ellipsoids((8, 64, 64), seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for v in (a, c, random_ellipsoids((8, 64, 64), seed=7, contrast="mr")):
        assert v.min() >= 0.0 and v.max() <= 1.0 and v.dtype == np.float32
        assert v[:, 0, 0].max() == 0.0 and v[4, 32, 32] > 0.0  # background corner, head centre
    fam = ellipsoid_family(3, (8, 64, 64), first_seed=5)
    assert fam.shape == (3, 8, 64, 64)
    np.testing.assert_array_equal(fam[0], a)


def test_phantoms_are_fast() -> None:
    t = time.perf_counter()
    shepp_logan_3d((64, 128, 128))
    random_ellipsoids((64, 128, 128), seed=1)
    assert time.perf_counter() - t < 2.0


def test_reserved_seeds_are_refused_for_training() -> None:
    check_training_seeds(range(0, 64))
    with pytest.raises(UserError, match="reserved"):
        check_training_seeds([3, TEST_SEED_START + 1])
    with pytest.raises(UserError, match="reserved"):
        check_training_seeds(range(VALIDATION_SEED_START - 2, VALIDATION_SEED_START + 1))
    with pytest.raises(UserError):
        random_ellipsoids((4, 8, 8), seed=-1)
    with pytest.raises(UserError):
        shepp_logan_3d((4, 8), "ct")
    with pytest.raises(UserError):
        shepp_logan_3d((4, 8, 8), "pet")
