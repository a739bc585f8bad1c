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


# ---------------------------------------------------------------------------------------------
# The one convention (medrecon.metrics docstring) and the body mask
# ---------------------------------------------------------------------------------------------
from medrecon.metrics import (body_mask, ct_convention, magnitude_convention,  # noqa: E402
                              measurement_convention, score)


def test_ct_convention_is_the_hu_window_width_in_every_unit() -> None:
    assert ct_convention("HU").data_range == 2000.0
    assert ct_convention("a.u.").data_range == pytest.approx(1.0)       # working units
    assert ct_convention("1/mm").data_range == pytest.approx(2 * 0.0192)
    card = {"name": "p", "intensity": {"convention": "window01", "window": [-1350.0, 150.0], "units": "HU"}}
    conv = ct_convention("HU", card)
    assert conv.data_range == 1500.0 and "prior p" in conv.describe()
    # a window01 volume keeps its own HU window: [-1000, 1000] in a [-500, 500] window is [-0.5, 1.5]
    assert ct_convention("window01", volume_window=(-500.0, 500.0)).window == pytest.approx((-0.5, 1.5))
    # a prior in a.u. (the phantom prior) says nothing about HU: the default window
    au_card = {"name": "phantom", "intensity": {"convention": "window01", "window": [0.0, 1.0], "units": "a.u."}}
    assert ct_convention("HU", au_card).window_hu == (-1000.0, 1000.0)


def test_the_same_reconstruction_scores_the_same_in_hu_and_in_working_units() -> None:
    rng = np.random.default_rng(3)
    hu = rng.uniform(-1000, 1000, (4, 16, 16))
    recon = hu + rng.normal(0, 30, hu.shape)
    to_w = lambda v: (v + 1000) / 2000  # noqa: E731
    a = score(recon, hu, ct_convention("HU"))
    b = score(to_w(recon), to_w(hu), ct_convention("a.u."))
    assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-9) and a["ssim"] == pytest.approx(b["ssim"], abs=1e-6)
    assert a["convention"]["kind"] == "ct-window" and "2000 HU" in a["convention"]["description"]


def test_mr_convention_is_the_99_9th_percentile_of_the_magnitude() -> None:
    ref = np.linspace(0, 10, 4 * 10 * 10).reshape(4, 10, 10) * np.exp(1j * 0.3)
    conv = magnitude_convention(ref, "a.u.")
    assert conv.data_range == pytest.approx(np.percentile(np.abs(ref), 99.9))
    m = measurement_convention(type("M", (), {"task": "cs-mri", "attrs": {"volume": {"units": "a.u."}}})(), ref)
    assert m.kind == "magnitude" and m.data_range == conv.data_range
    ct = measurement_convention(type("M", (), {"task": "sparse-view-ct", "attrs": {"volume": {"units": "HU"}}})(),
                                ref.real)
    assert ct.kind == "ct-window" and ct.data_range == 2000.0


def test_body_mask_keeps_the_lungs_and_drops_the_air_and_the_table() -> None:
    z, n = 6, 48
    yy, xx = np.mgrid[:n, :n]
    body = np.hypot(yy - 24, xx - 24) < 16
    lung = np.hypot(yy - 24, xx - 18) < 5
    ref = np.full((z, n, n), -1000.0)
    ref[:, body] = 40.0
    ref[:, lung] = -850.0          # inside the body: a hole the mask must fill
    ref[:, 44:46, 8:40] = 200.0    # a separate table below the body
    mask = body_mask(ref, ct_convention("HU"))
    assert mask[:, body].all() and not mask[:, ~body].any()


def test_a_mask_stops_air_from_inflating_the_metrics() -> None:
    ref = np.full((6, 48, 48), -1000.0)
    yy, xx = np.mgrid[:48, :48]
    inside = np.hypot(yy - 24, xx - 24) < 12
    ref[:, inside] = np.random.default_rng(0).normal(40, 50, (6, int(inside.sum())))
    recon = ref + np.where(inside, 100.0, 0.0)         # errors only inside; air is perfect
    conv = ct_convention("HU")
    whole, masked = score(recon, ref, conv), score(recon, ref, conv, body_mask(ref, conv))
    assert masked["psnr"] == pytest.approx(20 * math.log10(2000 / 100), abs=1e-6)
    assert whole["psnr"] > masked["psnr"] + 5 and masked["ssim"] < whole["ssim"]
    assert masked["mask"]["voxels"] == 6 * int(inside.sum()) and whole["mask"] is None
    assert masked["planes"]["axial"]["psnr"] == pytest.approx(masked["psnr"], abs=1e-6)


def test_working_unit_scores_of_the_benchmarks_equal_the_convention() -> None:
    """benchmarks/diffusion.py scores working-unit volumes with data range 1; for CT in HU and MR
    in any scale that is exactly the convention applied in the volume's own units."""
    from medrecon.methods import run_method
    from medrecon.phantoms import shepp_logan_3d
    from medrecon.tasks import CTOptions, MRIOptions, simulate, to_volume_units
    from medrecon.volume import Volume

    hu = 2000.0 * shepp_logan_3d((4, 32, 32)) - 1000.0
    m = simulate(Volume.from_array(hu, modality="CT", units="HU"), "sparse-view-ct", ct=CTOptions(views=12))
    w = run_method(m, "fbp")
    ours = score(to_volume_units(w, m), hu, measurement_convention(m, hu))
    bench = volume_metrics(w.numpy(), (hu + 1000.0) / 2000.0, 1.0)
    assert ours["psnr"] == pytest.approx(bench["psnr"], abs=1e-6)
    assert ours["ssim"] == pytest.approx(bench["ssim"], abs=1e-6)

    mr = 230.0 * shepp_logan_3d((4, 32, 32), contrast="mr")
    m = simulate(Volume.from_array(mr, modality="MR"), "cs-mri", mri=MRIOptions(acceleration=2.0, coils=2))
    w = run_method(m, "zero-filled")
    ours = score(to_volume_units(w, m), mr, measurement_convention(m, mr))
    bench = volume_metrics(w.abs().numpy(), mr / float(m.attrs["scale"]), 1.0)
    assert ours["psnr"] == pytest.approx(bench["psnr"], abs=1e-5)
    assert ours["ssim"] == pytest.approx(bench["ssim"], abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Which axis is which plane, and the body mask in every unit (hand-computed expectations)
# ---------------------------------------------------------------------------------------------
def _row_error_case():
    """[Z, Y, X] = [9, 10, 12] (every plane's slices fit SSIM's 7-voxel window): the whole row
    y = 2 is wrong by 0.5 in every axial slice."""
    ref = np.random.default_rng(4).random((9, 10, 12))
    x = ref.copy()
    x[:, 2, :] += 0.5
    return x, ref


def test_coronal_is_axis_1_and_sagittal_axis_2() -> None:
    x, ref = _row_error_case()
    # coronal slices vol[:, y]: slice y = 2 is wrong everywhere (MSE 0.25), the other 9 are exact
    coronal = plane_metrics(x, ref, 1.0, "coronal")
    assert coronal["psnr"] == pytest.approx(10 * math.log10(1 / 0.25), abs=1e-9)
    # sagittal slices vol[:, :, x]: 12 slices of 9 x 10, each with one wrong row of 10 (MSE 0.25 / 10)
    sagittal = plane_metrics(x, ref, 1.0, "sagittal")
    assert sagittal["psnr"] == pytest.approx(10 * math.log10(10 / 0.25), abs=1e-9)
    # axial slices vol[z]: 9 slices of 10 x 12, each with one wrong row of 12 (MSE 0.25 / 10)
    axial = plane_metrics(x, ref, 1.0, "axial")
    assert axial["psnr"] == pytest.approx(10 * math.log10(10 / 0.25), abs=1e-9)
    # SSIM per plane: the mean over that plane's slices of scikit-image's 2D SSIM, window 7
    from skimage.metrics import structural_similarity as sk

    def mean_ssim(slices_x, slices_ref):
        return np.mean([sk(a, b, data_range=1.0, win_size=7) for a, b in zip(slices_x, slices_ref)])

    assert coronal["ssim"] == pytest.approx(mean_ssim(x.transpose(1, 0, 2), ref.transpose(1, 0, 2)), abs=1e-12)
    assert sagittal["ssim"] == pytest.approx(mean_ssim(x.transpose(2, 0, 1), ref.transpose(2, 0, 1)), abs=1e-12)
    assert axial["ssim"] == pytest.approx(mean_ssim(x, ref), abs=1e-12)
    # and the whole volume: MSE 0.25 / 10, SSIM with a 7 x 7 x 7 window
    assert psnr(x, ref, 1.0) == pytest.approx(10 * math.log10(10 / 0.25), abs=1e-9)
    assert ssim(x, ref, 1.0) == pytest.approx(sk(x, ref, data_range=1.0, win_size=7), abs=1e-12)
    # identical volumes: every plane exact
    assert all(plane_metrics(ref, ref, 1.0, p)["psnr"] == math.inf for p in ("axial", "coronal", "sagittal"))


def test_a_column_error_is_one_bad_sagittal_slice() -> None:
    _, ref = _row_error_case()
    x = ref.copy()
    x[:, :, 5] -= 0.2                   # column x = 5 wrong in every axial slice
    assert plane_metrics(x, ref, 1.0, "sagittal")["psnr"] == pytest.approx(10 * math.log10(1 / 0.04), abs=1e-9)
    assert plane_metrics(x, ref, 1.0, "coronal")["psnr"] == pytest.approx(10 * math.log10(12 / 0.04), abs=1e-9)


def test_plane_masks_follow_their_plane() -> None:
    """A mask covering rows y < 3 only: coronal slices y >= 3 are left out, sagittal and axial
    slices are scored on their rows y < 3."""
    ref = np.random.default_rng(5).random((4, 6, 8))
    x = ref.copy()
    x[:, 0, :] += 0.3                   # inside the mask (row 0)
    x[:, 4, :] += 0.9                   # outside it
    mask = np.zeros(ref.shape, bool)
    mask[:, :3, :] = True
    coronal = plane_metrics(x, ref, 1.0, "coronal", mask)
    # coronal slices 0, 1, 2 count; one of them (y = 0) has MSE 0.09; the others are exact (inf)
    assert coronal["psnr"] == pytest.approx(10 * math.log10(1 / 0.09), abs=1e-9)
    for plane in ("sagittal", "axial"):     # every slice: 3 masked rows, one of them wrong by 0.3
        assert plane_metrics(x, ref, 1.0, plane, mask)["psnr"] == pytest.approx(
            10 * math.log10(3 / 0.09), abs=1e-9), plane
    assert psnr(x, ref, 1.0, mask) == pytest.approx(10 * math.log10(3 / 0.09), abs=1e-9)
    # a slice the mask covers below MIN_MASK_FRACTION is left out: one voxel of 48 (2 %) counts
    from medrecon.metrics import MIN_MASK_FRACTION
    thin = np.zeros(ref.shape, bool)
    thin[2, 0, 0] = True                # axial slice 2: 1 of 48 voxels
    assert 1 / 48 >= MIN_MASK_FRACTION
    assert plane_metrics(x, ref, 1.0, "axial", thin)["psnr"] == pytest.approx(10 * math.log10(1 / 0.09), abs=1e-9)
    # exactly MIN_MASK_FRACTION (1 voxel of 100) still counts
    edge = np.zeros((4, 10, 10), bool)
    edge[1, 3, 3] = True
    wide = np.random.default_rng(6).random((4, 10, 10))
    assert 1 / 100 == MIN_MASK_FRACTION
    assert plane_metrics(wide + 0.1, wide, 1.0, "axial", edge)["psnr"] == pytest.approx(20.0, abs=1e-9)
    none = plane_metrics(x, ref, 1.0, "coronal", np.zeros(ref.shape, bool))
    assert math.isnan(none["psnr"]) and math.isnan(none["ssim"])


# The body threshold is -500 HU in any units: HU itself, medrecon's a.u. ([-1000, 1000] HU ->
# [0, 1]), 1/mm (mu_water (1 + HU / 1000)), and window01 of the volume's own HU window.
MU_W = 0.0192
_THRESHOLDS = [
    ("HU", None, None, -500.0),
    ("a.u.", None, None, 0.25),
    ("a.u.", {"name": "lung", "intensity": {"convention": "window01", "window": [-1350.0, 150.0], "units": "HU"}},
     None, 0.25),
    ("1/mm", None, None, 0.5 * MU_W),
    ("window01", None, (-500.0, 500.0), 0.0),
    ("window01", None, (-1000.0, 0.0), 0.5),
    ("HU", {"name": "p", "intensity": {"convention": "window01", "window": [-1350.0, 150.0], "units": "HU"}},
     None, -500.0),
]


def _disc_in_a_ring(inner: float, ring: float, air: float) -> tuple[np.ndarray, np.ndarray]:
    z, n = 3, 32
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - 16, xx - 16)
    ref = np.full((z, n, n), air)
    ref[:, r < 12] = ring
    ref[:, r < 8] = inner
    return ref, np.broadcast_to(r < 8, ref.shape)


@pytest.mark.parametrize("units, card, window, threshold", _THRESHOLDS)
def test_body_mask_threshold_is_minus_500_hu_in_every_unit(units, card, window, threshold) -> None:
    conv = ct_convention(units, card, volume_window=window)
    per_hu = {"HU": 1.0, "a.u.": 1 / 2000, "1/mm": MU_W / 1000,
              "window01": 1 / (window[1] - window[0]) if window else None}[units]
    step = 20 * per_hu                  # 20 HU in the volume's units
    air = threshold - 25 * step         # -1000 HU
    # a disc 20 HU above the threshold inside a ring 20 HU below it: the mask is the disc only
    ref, disc = _disc_in_a_ring(threshold + step, threshold - step, air)
    np.testing.assert_array_equal(body_mask(ref, conv), disc)
    # a ring exactly at the threshold is outside (strictly above counts)
    if units in ("HU", "window01"):     # thresholds exact in floating point
        ref, disc = _disc_in_a_ring(threshold + step, threshold, air)
        np.testing.assert_array_equal(body_mask(ref, conv), disc)
    # 20 HU below everywhere: nothing is body
    ref, _ = _disc_in_a_ring(threshold - step, threshold - step, air)
    assert not body_mask(ref, conv).any()


def test_body_mask_of_magnitude_images_is_ten_percent_of_the_range() -> None:
    conv = magnitude_convention(np.full((3, 32, 32), 50.0), "a.u.")     # data range 50: threshold 5
    assert conv.data_range == 50.0
    ref, disc = _disc_in_a_ring(5.1, 4.9, 0.0)
    np.testing.assert_array_equal(body_mask(ref, conv), disc)
    ref, disc = _disc_in_a_ring(5.1, 5.0, 0.0)      # exactly at the threshold: outside
    np.testing.assert_array_equal(body_mask(ref, conv), disc)


def test_hu_windows_of_cards_and_measurements_in_other_units() -> None:
    from medrecon.metrics import prior_hu_window

    mu_card = {"name": "mu", "intensity": {"convention": "window01", "window": [0.0, 2 * MU_W], "units": "1/mm"}}
    assert prior_hu_window(mu_card) == pytest.approx((-1000.0, 1000.0))
    conv = ct_convention("1/mm", mu_card)
    assert conv.window == pytest.approx((0.0, 2 * MU_W)) and conv.window_hu == pytest.approx((-1000.0, 1000.0))
    assert ct_convention("1/mm", window_hu=(-500.0, 500.0)).window == pytest.approx((0.5 * MU_W, 1.5 * MU_W))
    assert ct_convention("a.u.", window_hu=(-500.0, 500.0)).window == pytest.approx((0.25, 0.75))
    assert prior_hu_window({"intensity": {"convention": "normalised", "window": [0, 1], "units": "HU"}}) is None
    m = type("M", (), {"task": "limited-angle-ct",
                       "attrs": {"volume": {"units": "window01", "window": [-500.0, 500.0]}}})()
    conv = measurement_convention(m, np.zeros((2, 4, 4)))
    assert conv.window == pytest.approx((-0.5, 1.5)) and conv.data_range == pytest.approx(2.0)
