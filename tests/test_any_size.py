"""A prior's contract is its pixel spacing, not its matrix size (issue 19).

- The fully convolutional ``edm-unet`` priors apply to slices of any size: sizes that are not a
  multiple of the network's down-sampling factor are padded (edge values repeated) and cropped back.
- Network calls are chunked so that their estimated memory fits what the device has free.
- A measurement whose pixel spacing lies outside the card's ``pixel_spacing_mm`` is refused with
  both numbers (``--force`` overrides); fixed-size (published) priors keep their size.
- Multi-scale training data: slices resampled to physical pixel spacings, never upsampled much.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrecon.prior.network import EDMUNetDenoiser, UNetConfig

TINY = dict(image_size=32, channels=(8, 16), attention_levels=(False, False), num_res_blocks=1,
            num_head_channels=16, norm_num_groups=4, mid_attention=False)


def _net() -> EDMUNetDenoiser:
    torch.manual_seed(3)
    return EDMUNetDenoiser(UNetConfig(**TINY)).eval()


def test_any_size_is_the_crop_of_the_padded_call() -> None:
    net = _net()
    assert not net.fixed_size and net.size_multiple == 2
    x = torch.rand(2, 1, 41, 36, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.2, 0.05])
    with torch.no_grad():
        out = net.denoise(x, sigma)
        padded = torch.nn.functional.pad(x, (0, 0, 0, 1), mode="replicate")  # 41 -> 42 rows: one row below
        ref = net.denoise(padded, sigma)[..., :41, :]
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # a 48 x 40 slice (multiples of 2) runs unpadded, and its centre differs from a 32 x 32 crop's
    # only near the crop border: a fully convolutional net, no global operation
    big = torch.rand(1, 1, 48, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = net.denoise(big, torch.tensor([0.1]))
    assert whole.shape == big.shape and torch.isfinite(whole).all()


def test_memory_chunk_follows_the_estimate() -> None:
    from medrecon.samplers.prior_calls import memory_chunk

    net = _net()
    assert net.bytes_per_pixel == 64 * 8
    per_image = 64 * 8 * 100 * 100
    assert memory_chunk(net, (100, 100), 20, torch.device("cpu"), fraction=0.5, available=10 * per_image) == 5
    assert memory_chunk(net, (100, 100), 4, torch.device("cpu"), fraction=0.5, available=10 * per_image) == 4
    assert memory_chunk(net, (100, 100), 20, torch.device("cpu"), fraction=0.5, available=per_image) == 1


def test_chunking_does_not_change_the_result() -> None:
    from medrecon.samplers.prior_calls import prior_chunked

    net = _net()
    x = torch.rand(5, 24, 24, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(prior_chunked(net, x, 0.1, 5), prior_chunked(net, x, 0.1, 2), rtol=1e-5, atol=1e-6)


def _card(spacing):
    return {"name": "p", "intensity": {"convention": "window01", "window": [-1000, 1000], "units": "HU"},
            **({"pixel_spacing_mm": spacing} if spacing else {})}


def test_pixel_spacing_outside_the_card_is_refused_with_both_numbers() -> None:
    from medrecon.errors import UserError
    from medrecon.units import check_prior, prior_problems

    card = _card([0.5, 4.08])
    assert prior_problems(card, "sparse-view-ct", "HU", 0.5) == []
    assert prior_problems(card, "sparse-view-ct", "HU", 4.08) == []
    assert prior_problems(card, "sparse-view-ct", "HU", 4.15) == []    # within the 2 % slack
    assert prior_problems(card, "sparse-view-ct", "HU", 0.495) == []   # within the 2 % slack
    assert prior_problems(card, "sparse-view-ct", "HU", None) == []
    assert prior_problems(_card(None), "sparse-view-ct", "HU", 10.0) == []
    for spacing in (0.48, 4.2, 10.0):   # outside the range and its 2 % slack
        (message,) = prior_problems(card, "sparse-view-ct", "HU", spacing)
        assert "0.5-4.08 mm" in message and f"{spacing:.3g} mm" in message
    with pytest.raises(UserError, match="--force"):
        check_prior(card, "sparse-view-ct", "HU", pixel_spacing=10.0)
    check_prior(card, "sparse-view-ct", "HU", force=True, pixel_spacing=10.0)  # warns only


def test_fixed_size_prior_refuses_another_size(tmp_path) -> None:
    from medrecon.errors import DataError
    from medrecon.prior.card import any_image_size
    from medrecon.prior.checkpoint import load_prior, save_prior

    net = _net()
    card = {"name": "t", "architecture": {"family": "edm-unet", "config": UNetConfig(**TINY).to_dict()},
            "parameterisation": "edm", "noise": {}, "image_size": 32,
            "intensity": {"convention": "window01", "window": [0.0, 1.0], "units": "a.u."}, "training": {}}
    d = save_prior(tmp_path / "p", card, net.state_dict())
    assert load_prior(d, image_shape=(50, 70)).fixed_size is False
    assert any_image_size(card) and not any_image_size({"architecture": {"family": "ncsnpp"}})
    card["architecture"]["family"] = "adm"   # a fixed-size family: the size check comes first
    (d / "model_card.json").write_text(__import__("json").dumps(dict(card, format="medrecon-prior/1",
                                                                     weights={"ema": "ema.safetensors"})))
    with pytest.raises(DataError, match="32x32 slices only, the data are 50x70"):
        load_prior(d, image_shape=(50, 70))


def test_cli_refuses_a_10_mm_grid_in_one_line(tmp_path, capsys) -> None:
    import nibabel as nib

    from medrecon.cli import main

    array = np.full((24, 24, 2), -1000.0, np.float32)
    array[6:18, 6:18] = 40.0
    nib.save(nib.Nifti1Image(array, np.diag([10.0, 10.0, 5.0, 1.0])), str(tmp_path / "coarse.nii.gz"))
    assert main(["--quiet", "simulate", "--task", "sparse-view-ct", "--input", str(tmp_path / "coarse.nii.gz"),
                 "--units", "HU", "--views", "8", "--output", str(tmp_path / "m.h5")]) == 0
    capsys.readouterr()
    assert main(["--quiet", "reconstruct", "--input", str(tmp_path / "m.h5"), "--method", "dds", "--prior",
                 "chest-ct", "--output", str(tmp_path / "r.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1.901-4.04 mm" in err and "10 mm" in err
    assert not (tmp_path / "r.nii.gz").exists()


def test_multiscale_levels_resample_and_never_upsample_much() -> None:
    from medrecon.prior.data import at_pixel_spacing, multiscale_levels
    from medrecon.volume import Volume

    array = np.zeros((3, 40, 60), np.float32)
    array[:, 10:30, 10:50] = 1000.0
    vol = Volume(array=array, spacing=(5.0, 1.0, 1.0), affine=np.diag([5.0, 1.0, 1.0, 1.0]), modality="CT",
                 units="HU")
    intensity = {"convention": "window01", "window": [-1000.0, 1000.0]}
    levels = multiscale_levels(vol, [0.5, 0.8, 1.0, 2.0], intensity, minimum=16)
    assert [s for s, _ in levels] == [0.8, 1.0, 2.0]        # 0.5 mm would upsample 2x (limit 1.5x)
    sizes = {s: a.shape for s, a in levels}
    assert sizes[1.0] == (3, 60, 60) and sizes[2.0] == (3, 30, 30) and sizes[0.8] == (3, 75, 75)
    # physical size kept: the bright block covers 20 x 40 mm at every level
    for s, a in levels:
        assert abs((a[0] > 0.75).sum() * s * s - 800.0) < 0.15 * 800.0, s
    # padding to a minimum size, with the volume's minimum (air -> 0 in the window)
    small = at_pixel_spacing(vol, 2.0, 48)
    assert small.shape == (3, 48, 48) and small[0, 0, 0] == 0.0


def test_multiscale_batches_are_seeded_and_seek_tissue() -> None:
    from medrecon.prior.data import draw_multiscale_batch

    levels = [torch.zeros(4, 200, 200), torch.zeros(3, 100, 100)]
    for lev in levels:
        lev[:, :40, :40] = 1.0   # tissue in one corner only
    a = draw_multiscale_batch(levels, 8, torch.Generator().manual_seed(5), 32, 10.0, 0.2)
    b = draw_multiscale_batch(levels, 8, torch.Generator().manual_seed(5), 32, 10.0, 0.2)
    assert a.shape == (8, 1, 32, 32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    many = torch.cat([draw_multiscale_batch(levels, 8, torch.Generator().manual_seed(s), 32, 0.0, 0.0, tries=1)
                      for s in range(20)])
    seeking = torch.cat([draw_multiscale_batch(levels, 8, torch.Generator().manual_seed(s), 32, 0.0, 0.0, tries=3)
                         for s in range(20)])
    assert (seeking > 0.5).float().mean() > (many > 0.5).float().mean()


@pytest.mark.parametrize("size,spacing", [(256, 1.3), (512, 0.7)])
def test_cli_reconstructs_a_ct_study_at_its_own_grid(size, spacing, tmp_path) -> None:
    """A CT series of 256 x 256 or 512 x 512 is simulated and reconstructed by DDS with the
    shipped body-ct prior without --size: the output keeps the study's grid (one step, no warm
    start, to keep the test fast)."""
    import nibabel as nib

    from dicom_factory import phantom_hu, write_series
    from medrecon.cli import main

    write_series(tmp_path / "study", phantom_hu((1, size, size)), spacing=(5.0, spacing, spacing))
    assert main(["--quiet", "simulate", "--task", "sparse-view-ct", "--views", "8", "--input",
                 str(tmp_path / "study"), "--output", str(tmp_path / "m.h5")]) == 0
    assert main(["--quiet", "reconstruct", "--input", str(tmp_path / "m.h5"), "--method", "dds", "--prior",
                 "body-ct", "--set", "steps=1", "--set", "start_sigma=0", "--output",
                 str(tmp_path / "r.nii.gz")]) == 0
    out = nib.load(str(tmp_path / "r.nii.gz"))
    assert sorted(out.shape) == [1, size, size]
    np.testing.assert_allclose(sorted(out.header.get_zooms())[:2], [spacing, spacing], rtol=1e-4)
