import numpy as np
import pytest
import torch

from medrecon.volume import (DEFAULT_CT_WINDOW, MU_WATER, Volume, default_affine, from_window,
                             hu_to_mu, mu_to_hu, to_window)


def test_hu_mu_fixed_points_and_inverse():
    assert hu_to_mu(0.0) == pytest.approx(MU_WATER)
    assert hu_to_mu(-1000.0) == pytest.approx(0.0)
    assert mu_to_hu(2 * MU_WATER) == pytest.approx(1000.0)
    hu = np.linspace(-1024, 3071, 57)
    np.testing.assert_allclose(mu_to_hu(hu_to_mu(hu)), hu, atol=1e-9)
    t = torch.tensor([-1000.0, 0.0, 1000.0])
    assert torch.allclose(hu_to_mu(t), torch.tensor([0.0, MU_WATER, 2 * MU_WATER]))


def test_window_clipped_unclipped_and_inverse():
    x = np.array([-2000.0, -1000.0, 0.0, 1000.0, 3000.0])
    np.testing.assert_allclose(to_window(x, (-1000, 1000)), [0, 0, 0.5, 1, 1])
    raw = to_window(x, (-1000, 1000), clip=False)
    np.testing.assert_allclose(raw, [-0.5, 0, 0.5, 1, 2])
    np.testing.assert_allclose(from_window(raw, (-1000, 1000)), x)
    t = to_window(torch.tensor([-5000.0, 5000.0]), (-1000, 1000))
    assert t.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="lo < hi"):
        to_window(x, (5, 5))


def test_volume_window_round_trip_recovers_hu():
    hu = np.random.default_rng(0).uniform(-900, 900, (3, 5, 4)).astype(np.float32)
    v = Volume.from_array(hu, spacing=(2, 1, 1), modality="CT", units="HU")
    w = v.to_window()
    assert w.units == "window01" and w.window == DEFAULT_CT_WINDOW and w.window_units == "HU"
    assert 0.0 <= w.array.min() and w.array.max() <= 1.0
    back = w.from_window()
    assert back.units == "HU"
    np.testing.assert_allclose(back.array, hu, atol=1e-3)
    mu = v.to_units("1/mm")
    np.testing.assert_allclose(mu.to_units("HU").array, hu, atol=1e-2)
    np.testing.assert_allclose(w.to_units("1/mm").array, mu.array, rtol=1e-5, atol=1e-8)


def test_default_affine_and_geometry_helpers():
    v = Volume.from_array(np.zeros((4, 3, 2)), spacing=(3.0, 2.0, 0.5))
    np.testing.assert_allclose(v.affine, default_affine((3.0, 2.0, 0.5)))
    # voxel (z, y, x) = (1, 2, 3) -> LPS (x * dx, y * dy, z * dz)
    np.testing.assert_allclose(v.affine @ [1, 2, 3, 1], [1.5, 4.0, 3.0, 1])
    assert v.orientation_codes() == "LPS"
    assert v.array.dtype == np.float32 and v.shape == (4, 3, 2)


def test_volume_rejects_inconsistent_input():
    with pytest.raises(ValueError, match=r"\[Z, Y, X\]"):
        Volume.from_array(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="column norms"):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 1, 1), affine=np.diag([2.0, 1, 1, 1]))
    with pytest.raises(ValueError, match="units"):
        Volume.from_array(np.zeros((1, 2, 2)), units="furlongs")
    with pytest.raises(ValueError, match="window01"):
        Volume.from_array(np.zeros((1, 2, 2)), units="window01")


def test_with_array_keeps_geometry_and_accepts_tensors():
    v = Volume.from_array(np.zeros((2, 3, 4)), spacing=(2, 1, 1), modality="CT", units="HU",
                          source={"PatientID": "p"})
    w = v.with_array(torch.ones(2, 3, 4), description="recon")
    assert np.array_equal(w.affine, v.affine) and w.source == v.source
    assert w.description == "recon" and w.array.sum() == 24
    with pytest.raises(ValueError, match="shape"):
        v.with_array(np.zeros((2, 3, 5)))
