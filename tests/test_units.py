"""Declared units and modality (--units, --modality), the HU warning, and priors that do not fit."""

import json
import logging

import nibabel as nib
import numpy as np
import pytest

from medrecon.cli import main
from medrecon.errors import UserError
from medrecon.units import check_prior, declare, prior_modality, prior_problems, warn_if_hu_like
from medrecon.volume import Volume

CT_CARD = {"name": "chest-ct", "intensity": {"convention": "window01", "window": [-1000.0, 1000.0], "units": "HU"}}
MR_CARD = {"name": "brain", "intensity": {"convention": "normalised", "window": [0.0, 1.0], "units": "normalised"}}
AU_CARD = {"name": "phantom", "intensity": {"convention": "window01", "window": [0.0, 1.0], "units": "a.u."}}


def _plain_hu_nifti(path, shape=(4, 32, 32)) -> np.ndarray:
    """A CT-like volume in HU written by plain nibabel: no medrecon header, so no units."""
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    body = np.hypot(yy - y / 2, xx - x / 2) < y / 3
    hu = np.where(body, 40.0, -1000.0)[None].repeat(z, 0).astype(np.float32)
    hu[:, y // 2 - 2:y // 2 + 2, x // 2 - 2:x // 2 + 2] = 700.0
    nib.save(nib.Nifti1Image(np.ascontiguousarray(hu.transpose(2, 1, 0)), np.diag([-1.0, -1.0, 2.0, 1.0])),
             str(path))
    return hu


def test_declare_fills_only_what_the_file_does_not_record() -> None:
    v = Volume.from_array(np.zeros((2, 4, 4)))
    assert (v.modality, v.units) == ("OT", "a.u.")
    hu = declare(v, "HU")
    assert (hu.modality, hu.units) == ("CT", "HU")                 # HU implies CT
    assert declare(v, modality="MR").modality == "MR"
    assert declare(hu, "HU", "CT") is hu                            # nothing to change
    with pytest.raises(UserError, match="records units 'HU'"):
        declare(hu, "1/mm")
    with pytest.raises(UserError, match="records modality 'CT'"):
        declare(hu, modality="MR")


def test_hu_like_numbers_on_a_ct_task_get_a_warning_saying_what_was_assumed(caplog) -> None:
    hu = Volume.from_array(np.array([-1024.0, 40.0, 900.0]).reshape(1, 1, 3) * np.ones((2, 3, 3)))
    with caplog.at_level(logging.WARNING):
        assert warn_if_hu_like(hu, "sparse-view-ct", "x.nii")
    assert "look like Hounsfield units" in caplog.text and "0 = -1000 HU" in caplog.text
    assert "--units HU" in caplog.text
    assert not warn_if_hu_like(hu, "cs-mri")                        # not a CT task
    assert not warn_if_hu_like(declare(hu, "HU"), "sparse-view-ct")  # units known
    assert not warn_if_hu_like(Volume.from_array(np.random.rand(2, 3, 3)), "sparse-view-ct")  # [0, 1] scale


def test_prior_modality_comes_from_the_card_units() -> None:
    assert prior_modality(CT_CARD) == "CT" and prior_modality(MR_CARD) == "MR"
    assert prior_modality(AU_CARD) is None and prior_modality({**AU_CARD, "modality": "MR"}) == "MR"


def test_a_prior_of_the_other_modality_or_a_ct_prior_on_au_data_is_refused() -> None:
    assert prior_problems(CT_CARD, "sparse-view-ct", "HU") == []
    assert prior_problems(AU_CARD, "sparse-view-ct", "a.u.") == []
    assert prior_problems(MR_CARD, "cs-mri", "a.u.") == []
    with pytest.raises(UserError, match="is a MR prior .* CT data"):
        check_prior(MR_CARD, "sparse-view-ct", "HU")
    with pytest.raises(UserError, match="is a CT prior .* MR data"):
        check_prior(CT_CARD, "cs-mri", "a.u.")
    with pytest.raises(UserError, match="--units HU") as exc:
        check_prior(CT_CARD, "limited-angle-ct", "a.u.")
    assert "--force" in str(exc.value)
    check_prior(CT_CARD, "limited-angle-ct", "a.u.", force=True)  # warned, not refused


def test_cli_refuses_a_ct_prior_on_au_data_before_any_work(tmp_path, capsys, caplog) -> None:
    _plain_hu_nifti(tmp_path / "ct.nii.gz")
    with caplog.at_level(logging.WARNING):
        assert main(["simulate", "--task", "sparse-view-ct", "--views", "8", "--input",
                     str(tmp_path / "ct.nii.gz"), "--output", str(tmp_path / "au.h5")]) == 0
    assert "look like Hounsfield units" in caplog.text
    assert main(["reconstruct", "--input", str(tmp_path / "au.h5"), "--method", "dds", "--prior", "chest-ct",
                 "--output", str(tmp_path / "x.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "simulate again with --units HU" in err and "Traceback" not in err
    assert not (tmp_path / "x.nii.gz").exists()


def test_units_hu_makes_the_simulation_physical(tmp_path) -> None:
    from medrecon.io.measurements import load_measurement

    hu = _plain_hu_nifti(tmp_path / "ct.nii.gz")
    assert main(["simulate", "--task", "sparse-view-ct", "--views", "8", "--units", "HU", "--input",
                 str(tmp_path / "ct.nii.gz"), "--output", str(tmp_path / "hu.h5")]) == 0
    m = load_measurement(tmp_path / "hu.h5")
    assert m.attrs["volume"]["units"] == "HU" and m.attrs["volume"]["modality"] == "CT"
    np.testing.assert_array_equal(m.arrays["reference"], hu)
    assert main(["--quiet", "reconstruct", "--input", str(tmp_path / "hu.h5"), "--method", "fbp",
                 "--output", str(tmp_path / "fbp.nii.gz")]) == 0
    metrics = json.loads((tmp_path / "fbp.metrics.json").read_text())
    assert metrics["data_range"] == 2000.0 and metrics["convention"]["window_hu"] == [-1000.0, 1000.0]


@pytest.mark.slow
def test_plain_hu_nifti_through_simulate_and_dds_with_the_chest_prior(tmp_path) -> None:
    """The issue's done-when: a CT NIfTI in HU written by plain nibabel (8 slices of the chest CT
    test slab), `simulate --units HU`, `reconstruct --prior chest-ct`; DDS beats FBP by > 5 dB."""
    from medrecon.datasets import chest_ct_slab

    v = chest_ct_slab("test")
    hu = v.array[8:16]
    dz, dy, dx = v.spacing
    nib.save(nib.Nifti1Image(np.ascontiguousarray(hu.transpose(2, 1, 0)).astype(np.int16),
                             np.diag([-dx, -dy, dz, 1.0])), str(tmp_path / "ct.nii.gz"))
    assert main(["simulate", "--task", "sparse-view-ct", "--views", "8", "--units", "HU", "--input",
                 str(tmp_path / "ct.nii.gz"), "--output", str(tmp_path / "m.h5")]) == 0
    psnr = {}
    for method in ("fbp", "dds"):
        extra = ["--prior", "chest-ct"] if method == "dds" else []
        assert main(["--quiet", "reconstruct", "--input", str(tmp_path / "m.h5"), "--method", method,
                     "--output", str(tmp_path / f"{method}.nii.gz"), *extra]) == 0
        psnr[method] = json.loads((tmp_path / f"{method}.metrics.json").read_text())["psnr"]
    # measured: FBP 15.7 dB, DDS 24.5 dB (HU window [-1000, 1000], 8 views)
    assert psnr["dds"] > 22.0 and psnr["dds"] > psnr["fbp"] + 5.0, psnr


# -- which cards are CT, which MR, and what is refused (every branch, by hand) ----------------------
def _card(units=None, convention=None, modality=None, name="p") -> dict:
    intensity = {"window": [0.0, 1.0]}
    if units is not None:
        intensity["units"] = units
    if convention is not None:
        intensity["convention"] = convention
    card = {"name": name, "intensity": intensity}
    if modality is not None:
        card["modality"] = modality
    return card


@pytest.mark.parametrize("card, expected", [
    (_card("HU", "window01"), "CT"),
    (_card("1/mm", "window01"), "CT"),
    (_card("normalised", "normalised"), "MR"),
    (_card(None, "normalised"), "MR"),                 # the convention alone says MR
    (_card("normalised", None), "MR"),                 # and so do the units alone
    (_card("a.u.", "window01"), None),
    (_card("window01", "window01"), None),
    (_card("hu", "window01"), None),                    # units are exact names
    (_card(None, None), None),
    (_card("a.u.", "window01", modality="mr"), "MR"),   # an explicit modality, any case
    (_card("HU", "window01", modality="MR"), "MR"),     # ... comes first
    (_card("normalised", "normalised", modality="ct"), "CT"),
    (_card("HU", "window01", modality="OT"), "CT"),     # not CT/MR: the units decide
    ({"name": "no-intensity"}, None),
    (None, None), ({}, None),
])
def test_prior_modality_of_every_kind_of_card(card, expected) -> None:
    assert prior_modality(card) == expected


@pytest.mark.parametrize("card, task, units, refused", [
    (_card("HU", "window01"), "sparse-view-ct", "HU", None),
    (_card("1/mm", "window01"), "limited-angle-ct", "1/mm", None),
    (_card("1/mm", "window01"), "sparse-view-ct", "HU", None),
    (_card("HU", "window01"), "sparse-view-ct", "a.u.", "simulated from a volume in a.u."),
    (_card("1/mm", "window01"), "limited-angle-ct", "a.u.", "simulated from a volume in a.u."),
    (_card("HU", "window01"), "cs-mri", "a.u.", "is a CT prior .* but the measurement is MR data"),
    (_card("1/mm", "window01"), "cs-mri", "HU", "is a CT prior"),
    (_card("normalised", "normalised"), "sparse-view-ct", "HU", "is a MR prior .* CT data"),
    (_card("normalised", "normalised"), "limited-angle-ct", "a.u.", "is a MR prior"),
    (_card("normalised", "normalised"), "cs-mri", "a.u.", None),
    (_card("a.u.", "window01"), "sparse-view-ct", "a.u.", None),   # modality not known: never refused
    (_card("a.u.", "window01"), "cs-mri", "a.u.", None),
    (None, "sparse-view-ct", "a.u.", None),
])
def test_prior_problems_every_branch(card, task, units, refused) -> None:
    problems = prior_problems(card, task, units)
    if refused is None:
        assert problems == []
        check_prior(card, task, units)
        return
    assert len(problems) == 1
    with pytest.raises(UserError, match=refused) as exc:
        check_prior(card, task, units)
    assert "'p'" in str(exc.value) and str(exc.value).endswith("or pass --force to use it anyway")


def test_forced_problems_are_warned_not_raised(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="medrecon.units"):
        check_prior(_card("normalised", "normalised"), "sparse-view-ct", "HU", force=True)
    assert "is a MR prior" in caplog.text and "--force: using it anyway" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medrecon.units"):
        check_prior(_card("HU", "window01"), "sparse-view-ct", "HU", force=True)
    assert caplog.text == ""


def test_declared_units_make_ct_only_when_physical() -> None:
    from medrecon.units import data_modality, looks_like_hu

    v = Volume.from_array(np.zeros((2, 4, 4)))
    assert declare(v, "1/mm").modality == "CT" and declare(v, "1/mm").units == "1/mm"
    assert declare(v, "a.u.").modality == "OT"
    assert declare(v, "HU", "MR").modality == "MR"          # an explicit modality wins
    with pytest.raises(UserError, match="--units must be one of"):
        declare(v, "mm")
    with pytest.raises(UserError, match="--modality must be one of"):
        declare(v, modality="PET")
    assert [data_modality(t) for t in ("sparse-view-ct", "limited-angle-ct", "cs-mri")] == ["CT", "CT", "MR"]
    # HU-like: some voxel strictly below -500 and some strictly above +100
    assert looks_like_hu(np.array([-501.0, 101.0]))
    assert not looks_like_hu(np.array([-500.0, 101.0])) and not looks_like_hu(np.array([-501.0, 100.0]))
    assert not looks_like_hu(np.array([])) and not looks_like_hu(np.array([-900 + 0j, 900]))
