import math

import numpy as np
import pytest
import torch

from medrecon.metrics import format_table, plane_metrics, psnr, ssim, volume_metrics


def test_psnr_known_value() -> None:
    ref = np.zeros((4, 8, 8))
    x = ref + 0.1  # MSE = 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
    assert psnr(x, ref, 1.0) == pytest.approx(20.0, abs=1e-9)
    assert psnr(ref, ref, 1.0) == math.inf


def test_psnr_scales_with_data_range() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((3, 8, 8))
    x = ref + 0.05 * rng.standard_normal(ref.shape)
    assert psnr(x, ref, 2.0) - psnr(x, ref, 1.0) == pytest.approx(20 * math.log10(2), abs=1e-9)


def test_ssim_identity_and_degradation() -> None:
    rng = np.random.default_rng(1)
    ref = rng.random((9, 16, 16))
    assert ssim(ref, ref, 1.0) == pytest.approx(1.0)
    assert ssim(ref + 0.3 * rng.standard_normal(ref.shape), ref, 1.0) < 0.75


def test_planes_see_different_errors() -> None:
    ref = np.random.default_rng(0).random((8, 8, 8))
    x = ref.copy()
    x[3] += 1.0  # one bad axial slice: one axial slice fails, every coronal/sagittal slice has one bad row
    axial = plane_metrics(x, ref, 1.0, "axial")
    coronal = plane_metrics(x, ref, 1.0, "coronal")
    assert axial["psnr"] == pytest.approx(0.0)  # the finite mean is over the one bad slice
    assert coronal["psnr"] == pytest.approx(10 * math.log10(8))


def test_constant_reference_slices_are_left_out() -> None:
    ref = np.zeros((4, 8, 8))
    ref[1:3, 2:6, 2:6] = np.random.default_rng(1).random((2, 4, 4))
    x = ref + 0.1 * (ref > 0)
    axial = plane_metrics(x, ref, 1.0, "axial")
    # only the two slices with structure count: MSE = 0.01 * 16 / 64 on each
    assert axial["psnr"] == pytest.approx(20.0 + 10 * math.log10(4), abs=1e-9)


def test_volume_metrics_torch_complex_and_table() -> None:
    ref = torch.rand(4, 8, 8)
    m = volume_metrics(ref.to(torch.complex64) * 1j, ref, 1.0)  # magnitude equals the reference
    assert m["psnr"] > 100 and set(m["planes"]) == {"axial", "coronal", "sagittal"}
    assert "axi PSNR" in format_table({"x": volume_metrics(ref + 0.1, ref, 1.0)})


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((2, 2)), np.zeros((2, 3)), 1.0)


def test_thin_volumes_have_metrics() -> None:
    """A 2-slice volume: coronal/sagittal slices are 2 voxels tall, too short for an SSIM window."""
    ref = np.random.default_rng(2).random((2, 16, 16))
    m = volume_metrics(ref + 0.05, ref, 1.0)
    assert 0 < m["ssim"] < 1 and 0 < m["planes"]["axial"]["ssim"] < 1
    assert math.isnan(m["planes"]["coronal"]["ssim"]) and math.isfinite(m["planes"]["coronal"]["psnr"])
