"""MRI physics: SENSE operator vs SigPy, sampling masks, birdcage and ESPIRiT coil maps."""

from __future__ import annotations


import numpy as np
import pytest
import sigpy as sp
import sigpy.mri
import torch

from medrecon.errors import UserError
from medrecon.physics.mri import (MASK_KINDS, MRIInputError, SamplingMask, SenseOperator,
                                  birdcage_maps, center_lines, coil_combine, espirit_maps, fft2c,
                                  gaussian_1d, ifft2c, make_mask, poisson_2d, uniform_1d)


def _cplx(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _object(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """A complex two-ellipse test object with a smooth phase, and its support (bool)."""
    yy, xx = np.mgrid[:ny, :nx]
    u, v = (yy - ny / 2) / (ny / 2), (xx - nx / 2) / (nx / 2)
    support = (u / 0.8) ** 2 + (v / 0.65) ** 2 <= 1
    mag = support + 0.5 * (((u + 0.2) / 0.25) ** 2 + ((v - 0.1) / 0.15) ** 2 <= 1)
    return (mag * np.exp(0.5j * u)).astype(np.complex64), support


# -- FFT and SENSE operator --------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8, 6), (9, 7), (16, 13)])
def test_fft2c_is_sigpy_centred_orthonormal_fft(shape):
    x = _cplx((2, *shape), 0)
    k = fft2c(torch.from_numpy(x)).numpy()
    assert _rel(k, sp.fft(x, axes=(-2, -1), norm="ortho", center=True)) < 1e-6
    assert abs(np.linalg.norm(k) / np.linalg.norm(x) - 1) < 1e-6
    assert _rel(ifft2c(torch.from_numpy(k)).numpy(), x) < 1e-6
    # DC of a constant image sits at (Y // 2, X // 2)
    dc = fft2c(torch.ones(shape, dtype=torch.complex64)).abs()
    assert int(dc.argmax()) == (shape[0] // 2) * shape[1] + shape[1] // 2


@pytest.mark.parametrize("coils,shape", [(1, (24, 20)), (4, (24, 20)), (5, (15, 17))])
def test_sense_equals_sigpy(coils, shape):
    maps = _cplx((coils, *shape), 1)
    mask = np.random.default_rng(2).random(shape) < 0.4
    ref = sigpy.mri.linop.Sense(maps, weights=mask.astype(np.float32))
    op = SenseOperator(maps, mask)
    x, y = _cplx(shape, 3), _cplx((coils, *shape), 4)
    assert _rel(op.forward(torch.from_numpy(x)[None])[0].numpy(), ref(x)) < 1e-5
    assert _rel(op.adjoint(torch.from_numpy(y)[None])[0].numpy(), ref.H(y)) < 1e-5


def test_per_slice_maps_and_masks_equal_sigpy_slice_by_slice():
    n_z, c, shape = 3, 4, (12, 10)
    maps = _cplx((n_z, c, *shape), 5)
    masks = np.stack([uniform_1d(shape, 2.0, 0.2, seed=s).mask for s in range(n_z)])
    op = SenseOperator(torch.from_numpy(maps), torch.from_numpy(masks.astype(np.float32)))
    assert op.in_shape == (n_z, *shape) and op.out_shape == (n_z, c, *shape)
    x, y = _cplx((n_z, *shape), 6), _cplx((n_z, c, *shape), 7)
    fx = op.forward(torch.from_numpy(x)).numpy()
    ay = op.adjoint(torch.from_numpy(y)).numpy()
    for z in range(n_z):
        ref = sigpy.mri.linop.Sense(maps[z], weights=masks[z].astype(np.float32))
        assert _rel(fx[z], ref(x[z])) < 1e-5
        assert _rel(ay[z], ref.H(y[z])) < 1e-5


def test_shared_maps_leave_z_free_and_masked_entries_are_zero():
    mask = uniform_1d((16, 12), 4.0, seed=3)
    op = SenseOperator(birdcage_maps(4, (16, 12)), mask)
    assert op.in_shape == (None, 16, 12) and op.out_shape == (None, 4, 16, 12)
    assert op.n_coils == 4 and op.image_shape == (16, 12)
    assert op.acceleration == pytest.approx(mask.acceleration)
    for n_z in (1, 5):
        k = op.forward(torch.from_numpy(_cplx((n_z, 16, 12), n_z)))
        assert k.shape == (n_z, 4, 16, 12) and k.dtype == torch.complex64
        unsampled = ~torch.from_numpy(mask.mask)
        assert float(k[:, :, unsampled].abs().max()) == 0.0
        assert float(k[:, :, ~unsampled].abs().min()) > 0.0


def test_single_coil_is_masked_centred_fft():
    mask = gaussian_1d((16, 13), 2.0, seed=4)
    op = SenseOperator.single_coil((16, 13), mask)
    x = torch.from_numpy(_cplx((2, 16, 13), 8))
    expected = fft2c(x) * torch.from_numpy(mask.mask)
    assert torch.allclose(op.forward(x)[:, 0], expected, atol=1e-6)


def test_subset_slices_per_slice_data():
    n_z, shape = 4, (10, 9)
    maps = torch.from_numpy(_cplx((n_z, 3, *shape), 9))
    masks = np.stack([uniform_1d(shape, 2.0, 0.2, seed=s).mask for s in range(n_z)])
    op = SenseOperator(maps, masks)
    x = torch.from_numpy(_cplx((n_z, *shape), 10))
    sub = op.subset(slice(1, 3))
    assert sub.in_shape == (2, *shape)
    assert torch.allclose(sub.forward(x[1:3]), op.forward(x)[1:3], atol=1e-6)
    y = op.forward(x)
    assert torch.allclose(sub.adjoint(y[1:3]), op.adjoint(y)[1:3], atol=1e-6)
    shared = SenseOperator(maps[0], masks[0])
    assert shared.subset(slice(0, 2)) is shared
    with pytest.raises(ValueError):
        op.subset(slice(5, 7))


def test_normal_is_identity_inside_support_when_fully_sampled():
    shape = (32, 28)
    _, support = _object(*shape)
    maps = birdcage_maps(6, shape, support=support)
    op = SenseOperator(maps)  # full sampling
    x = torch.from_numpy(_cplx((2, *shape), 11))
    out = op.normal(x)
    inside = torch.from_numpy(support)
    assert float((out - x)[:, inside].abs().max()) < 1e-5
    assert float(out[:, ~inside].abs().max()) == 0.0


def test_coil_combine_is_sense_adjoint_of_coil_images():
    shape = (12, 10)
    maps = birdcage_maps(4, shape)
    coil_images = torch.from_numpy(_cplx((3, 4, *shape), 12))
    op = SenseOperator(maps)
    assert torch.allclose(coil_combine(coil_images, maps), op.adjoint(fft2c(coil_images)), atol=1e-5)
    per_slice = maps.expand(3, -1, -1, -1)
    assert torch.allclose(coil_combine(coil_images, per_slice), coil_combine(coil_images, maps))
    with pytest.raises(MRIInputError, match="do not match"):
        coil_combine(coil_images, maps[:3])


def test_sense_rejects_bad_input_with_clear_errors():
    maps = birdcage_maps(2, (8, 6))
    with pytest.raises(MRIInputError, match="sampling mask has shape"):
        SenseOperator(maps, np.ones((8, 5), bool))
    with pytest.raises(MRIInputError, match="only 0 and 1"):
        SenseOperator(maps, np.full((8, 6), 0.5))
    with pytest.raises(MRIInputError, match="coil maps must be"):
        SenseOperator(maps[0, 0])
    with pytest.raises(MRIInputError, match="3 slices"):
        SenseOperator(maps.expand(2, -1, -1, -1), np.ones((3, 8, 6), bool))
    err = pytest.raises(UserError, SenseOperator, torch.full((1, 8, 6), float("nan")))
    assert isinstance(err.value, ValueError) and "NaN" in str(err.value)


# -- sampling masks ----------------------------------------------------------------------------

def _make(kind: str, shape=(64, 48), acc=4.0, seed=0) -> SamplingMask:
    kw = {"calib": (12, 12)} if kind == "poisson2d" else {}
    return make_mask(kind, shape, acc, seed=seed, **kw)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_masks_are_seeded_and_seeds_differ(kind):
    a, b, c = _make(kind, seed=3), _make(kind, seed=3), _make(kind, seed=4)
    assert a.mask.dtype == np.bool_ and a.mask.shape == (64, 48) and a.kind == kind
    assert np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.mask, c.mask)
    assert a.params["seed"] == 3 and a.acceleration_requested == 4.0


@pytest.mark.parametrize("kind,acc,tol", [("uniform1d", 4.0, 0.02), ("uniform1d", 3.0, 0.02),
                                          ("gaussian1d", 6.0, 0.04), ("poisson2d", 4.0, 0.1),
                                          ("poisson2d", 8.0, 0.1)])
def test_effective_acceleration_matches_request(kind, acc, tol):
    m = _make(kind, (128, 96), acc, seed=1)
    assert abs(m.acceleration - acc) <= tol * acc
    assert m.sampled_fraction == pytest.approx(float(m.mask.mean()))
    assert m.acceleration == pytest.approx(1.0 / m.sampled_fraction)


@pytest.mark.parametrize("ny,acc,center,lines,n_center", [(256, 4.0, 0.08, 64, 20),
                                                         (100, 3.0, 0.08, 33, 8),
                                                         (256, 2.0, 0.15, 128, 38),
                                                         (64, 1.0, 0.08, 64, 5)])
@pytest.mark.parametrize("kind", ["uniform1d", "gaussian1d"])
def test_1d_masks_have_exact_line_counts_and_full_centre(kind, ny, acc, center, lines, n_center):
    m = make_mask(kind, (ny, 20), acc, seed=7, center_fraction=center)
    rows = m.mask.any(axis=1)
    assert np.array_equal(m.mask.all(axis=1), rows), "1D masks sample whole ky rows"
    assert int(rows.sum()) == lines == m.params["n_lines"]
    centre = center_lines(ny, n_center)
    assert len(centre) == n_center == m.params["n_center_lines"] and ny // 2 in centre
    assert rows[centre].all()


def test_gaussian_lines_concentrate_near_the_centre():
    ny = 256
    far = {"uniform1d": [], "gaussian1d": []}
    for seed in range(10):
        for kind in far:
            rows = np.flatnonzero(make_mask(kind, (ny, 8), 4.0, seed=seed).mask[:, 0])
            far[kind].append(np.mean(np.abs(rows - ny // 2)))
    assert np.mean(far["gaussian1d"]) < 0.8 * np.mean(far["uniform1d"])


def test_poisson_has_full_calibration_region():
    m = poisson_2d((64, 64), 5.0, calib=(16, 16), seed=2)
    assert m.mask[24:40, 24:40].all()
    assert m.params["calib"] == [16, 16]


def test_make_mask_rejects_bad_requests():
    with pytest.raises(MRIInputError, match="unknown mask kind 'radial'"):
        make_mask("radial", (64, 64), 4.0)
    with pytest.raises(ValueError, match="impossible"):
        make_mask("uniform1d", (256, 64), 20.0)  # 13 lines < 20 centre lines
    with pytest.raises(ValueError, match="impossible"):
        make_mask("gaussian1d", (16, 64), 17.0, center_fraction=0.0)  # fewer than one line
    with pytest.raises(ValueError, match="impossible"):
        make_mask("poisson2d", (32, 32), 4.0, calib=(24, 24))
    with pytest.raises(MRIInputError, match=">= 1"):
        make_mask("gaussian1d", (64, 64), 0.5)
    with pytest.raises(MRIInputError, match="> 1"):
        make_mask("poisson2d", (64, 64), 1.0)
    with pytest.raises(MRIInputError, match="no option"):
        make_mask("uniform1d", (64, 64), 4.0, calib=(8, 8))
    with pytest.raises(MRIInputError, match="seed"):
        uniform_1d((64, 64), 4.0, seed=None)  # type: ignore[arg-type]


# -- coil maps ---------------------------------------------------------------------------------

def test_birdcage_maps_are_normalised_inside_support():
    _, support = _object(40, 36)
    maps = birdcage_maps(8, (40, 36), support=support)
    assert maps.shape == (8, 40, 36) and maps.dtype == torch.complex64
    power = (maps.abs() ** 2).sum(0)
    inside = torch.from_numpy(support)
    assert float((power[inside] - 1).abs().max()) < 1e-5
    assert float(power[~inside].abs().max()) == 0.0
    assert float((birdcage_maps(8, (40, 36)).abs() ** 2).sum(0).sub(1).abs().max()) < 1e-5
    with pytest.raises(MRIInputError, match="n_coils"):
        birdcage_maps(0, (8, 8))


def test_espirit_maps_recover_the_image_from_fully_sampled_kspace():
    shape = (64, 64)
    x, support = _object(*shape)
    true_maps = birdcage_maps(8, shape)
    kspace = SenseOperator(true_maps).forward(torch.from_numpy(x)[None])
    maps = espirit_maps(kspace[0])
    assert maps.shape == (8, *shape) and maps.dtype == torch.complex64
    combined = coil_combine(ifft2c(kspace), maps)[0].numpy()
    # magnitude equals the truth (measured 1.4e-5)
    assert _rel(np.abs(combined), np.abs(x)) < 1e-3
    # phase: ESPIRiT references coil 0, so the image carries coil 0's phase; up to a global phase
    ref = true_maps[0].numpy() / np.abs(true_maps[0].numpy())
    target = x * ref
    g = np.vdot(combined, target)
    assert _rel(combined * g / abs(g), target) < 1e-2  # measured 2.8e-3
    # the maps span the true ones at every object pixel
    agreement = (maps.conj() * true_maps).sum(0).abs().numpy()
    assert agreement[support].min() > 0.999


def test_espirit_uses_only_the_calibration_region_and_handles_slices():
    shape = (48, 48)
    x, _ = _object(*shape)
    mask = poisson_2d(shape, 3.0, calib=(20, 20), seed=0)
    full = SenseOperator(birdcage_maps(6, shape)).forward(torch.from_numpy(np.stack([x, x.T])))
    under = full * mask.to_tensor()
    maps_full = espirit_maps(full, calib_width=20)
    maps_under = espirit_maps(under, calib_width=20)
    assert maps_full.shape == (2, 6, *shape)
    assert float((maps_full - maps_under).abs().max()) < 1e-4
    with pytest.raises(MRIInputError, match="calib_width"):
        espirit_maps(full[0], calib_width=64)
    with pytest.raises(MRIInputError, match="complex"):
        espirit_maps(full[0].abs())


@pytest.mark.parametrize("shape", [(2, 6, 8), (2, 8, 8), (1, 10, 4), (2, 5, 7), (2, 6, 9)])
def test_fft2c_modulation_equals_shifted_fft(shape) -> None:
    """The even-size fast path (checkerboard modulation) equals the explicit shifts exactly."""
    x = torch.randn(*shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    dims = (-2, -1)
    ref = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)
    ref_inv = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)
    assert torch.allclose(fft2c(x), ref, atol=1e-6)
    assert torch.allclose(ifft2c(x), ref_inv, atol=1e-6)
