"""The comparison figure: physical aspect, CT windows (never abs), MR magnitude, stated scales."""

import numpy as np
import pytest

from medrecon.metrics import ct_convention, magnitude_convention, psnr
from medrecon.viz import CT_WINDOWS_HU, comparison_figure, ct_display, data_display, nice_ceil


def _ct_volume(shape=(6, 20, 24)) -> np.ndarray:
    """HU: air (-1000) around a water cylinder (0) holding a bone rod (+1000)."""
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    r = np.hypot(yy - y / 2, xx - x / 2)
    slab = np.where(r < min(y, x) / 3, 0.0, -1000.0)
    slab[r < 2] = 1000.0
    return np.repeat(slab[None], z, axis=0).astype(np.float32)


def _axes(fig) -> dict:
    return {ax.get_label(): ax for ax in fig.axes if "/" in ax.get_label()}


def test_panel_aspect_follows_voxel_spacing() -> None:
    import matplotlib.pyplot as plt

    ref = _ct_volume()
    spacing = (2.5, 0.7, 0.9)  # dz, dy, dx in mm
    fig = comparison_figure(ref, {"fbp": ref + 5.0}, ct_display("HU"), spacing)
    try:
        axes = _axes(fig)
        dz, dy, dx = spacing
        for name in ("reference", "fbp", "fbp-error"):
            assert axes[f"{name}/axial"].get_aspect() == pytest.approx(dy / dx)
            assert axes[f"{name}/coronal"].get_aspect() == pytest.approx(dz / dx)
            assert axes[f"{name}/sagittal"].get_aspect() == pytest.approx(dz / dy)
        # the grid rows are as tall as the planes are in mm: coronal rows Z dz, axial rows Y dy
        gs = axes["fbp/axial"].get_subplotspec().get_gridspec()
        heights = gs.get_height_ratios()
        assert heights[0] == pytest.approx(20 * dy) and heights[1] == pytest.approx(6 * dz)
    finally:
        plt.close(fig)


def test_ct_panels_use_a_window_not_abs() -> None:
    import matplotlib.pyplot as plt

    ref = _ct_volume()
    recon = ref.copy()
    recon[:, 2, 2] = -1200.0  # below the window: must stay negative on screen, not fold to +1200
    for window in ("prior", "soft-tissue", "lung"):
        display = ct_display("HU", window)
        lo, hi = CT_WINDOWS_HU.get(window, (-1000.0, 1000.0))
        fig = comparison_figure(ref, {"tv": recon}, display, (1.0, 1.0, 1.0))
        try:
            axes = _axes(fig)
            for name in ("reference", "tv"):
                image = axes[f"{name}/axial"].get_images()[0]
                assert image.get_clim() == pytest.approx((lo, hi))
                shown = np.asarray(image.get_array())
                z = ref.shape[0] // 2
                np.testing.assert_array_equal(shown, (recon if name == "tv" else ref)[z])
                assert shown.min() < -999  # air is shown as air
            error = np.asarray(axes["tv-error/axial"].get_images()[0].get_array())
            assert error[2, 2] == pytest.approx(-200.0)  # signed: recon - reference
        finally:
            plt.close(fig)


def test_ct_window_in_working_units_and_attenuation() -> None:
    assert (ct_display("a.u.").lo, ct_display("a.u.").hi) == pytest.approx((0.0, 1.0))
    soft = ct_display("a.u.", "soft-tissue")
    assert (soft.lo, soft.hi) == pytest.approx(((-160 + 1000) / 2000, (240 + 1000) / 2000))
    mu = ct_display("1/mm")
    assert (mu.lo, mu.hi) == pytest.approx((0.0, 2 * 0.0192))
    card = {"name": "p", "intensity": {"convention": "window01", "window": [-500.0, 500.0], "units": "HU"}}
    assert (ct_display("HU", "prior", card).lo, ct_display("HU", "prior", card).hi) == (-500.0, 500.0)


def test_complex_mr_is_shown_as_magnitude_and_panels_state_their_metrics() -> None:
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    mag = rng.random((4, 16, 16)).astype(np.float32) + 0.5
    phase = np.exp(1j * rng.uniform(-np.pi, np.pi, mag.shape))
    ref = (mag * phase).astype(np.complex64)
    recon = ((mag + 0.05) * phase).astype(np.complex64)
    display = data_display(ref, "a.u.")
    conv = magnitude_convention(mag, "a.u.")
    fig = comparison_figure(ref, {"dds": recon}, display, (1.0, 1.0, 1.0), conv)
    try:
        axes = _axes(fig)
        shown = np.asarray(axes["dds/axial"].get_images()[0].get_array())
        np.testing.assert_allclose(shown, np.abs(recon[2]), rtol=1e-6)
        title = axes["dds/coronal"].get_title()
        expected = psnr(np.abs(recon[:, 8]), mag[:, 8], conv.data_range)
        assert "coronal y=8/16" in title and f"PSNR {expected:.2f} dB" in title and "SSIM" in title
        assert "reference: sagittal x=8/16" == axes["reference/sagittal"].get_title()
        bar_labels = [ax.get_ylabel() for ax in fig.axes if not ax.get_label()]
        assert any("scale +-0.05" in label for label in bar_labels)  # 99th pct of |error| = 0.05
    finally:
        plt.close(fig)


def test_error_scale_is_a_round_number_above_the_99th_percentile() -> None:
    assert nice_ceil(0.05) == pytest.approx(0.05)
    assert nice_ceil(0.051) == pytest.approx(0.1)
    assert nice_ceil(130.0) == pytest.approx(200.0)
    assert nice_ceil(7.0) == pytest.approx(10.0)


def test_figure_file_and_convention_in_the_note(tmp_path) -> None:
    from medrecon.viz import triplanar_figure

    ref = _ct_volume()
    path = triplanar_figure(ref, {"fbp": ref + 10.0}, tmp_path / "f.png", ct_display("HU"),
                            convention=ct_convention("HU"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(Exception, match="already exists"):
        triplanar_figure(ref, {"fbp": ref}, tmp_path / "f.png", ct_display("HU"))


def test_a_thin_slab_is_stretched_along_z_and_says_so() -> None:
    import matplotlib.pyplot as plt

    ref = _ct_volume((4, 40, 40))   # 4 mm thick, 40 mm wide: 0.1 < 0.25
    fig = comparison_figure(ref, {"tv": ref}, ct_display("HU"), (1.0, 1.0, 1.0))
    try:
        axes = _axes(fig)
        assert axes["tv/coronal"].get_aspect() == pytest.approx(3.0)   # ceil(0.25 / 0.1)
        assert "(z x3)" in axes["tv/coronal"].get_title() and "(z x3)" not in axes["tv/axial"].get_title()
    finally:
        plt.close(fig)


def test_an_affine_gives_the_radiological_orientation() -> None:
    """A volume stored with x towards the right and y towards the front (RAS-like index axes) is
    shown like one stored in LPS order: the same picture."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    lps = rng.random((6, 10, 12)).astype(np.float32)
    flipped = lps[:, ::-1, ::-1].copy()
    affine = np.zeros((4, 4))
    affine[2, 0], affine[1, 1], affine[0, 2], affine[3, 3] = 1.0, -1.0, -1.0, 1.0   # z->S, y->A, x->R
    display = data_display(lps, "a.u.")
    figs = [comparison_figure(lps, {}, display), comparison_figure(flipped, {}, display, affine=affine)]
    try:
        for plane in ("axial", "coronal", "sagittal"):
            a, b = (np.asarray(_axes(f)[f"reference/{plane}"].get_images()[0].get_array()) for f in figs)
            np.testing.assert_array_equal(a, b)
    finally:
        for f in figs:
            plt.close(f)
