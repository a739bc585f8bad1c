"""What a newcomer meets (issue 22): the default prior fits the data and is named; a figure
costs no hidden reconstruction; evaluate takes the original study; the Python API is the CLI's;
`prior list` / `prior show` / `info` say which prior fits."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from medrecon.cli import main

DATA = files("medrecon") / "data"


def _simulate(tmp: Path, task: str, volume: str, out: str, *extra: str) -> Path:
    assert main(["--quiet", "simulate", "--task", task, "--input", str(DATA / volume), "--slices", "0:2",
                 "--output", str(tmp / out), *extra]) == 0
    return tmp / out


@pytest.mark.parametrize("task,volume,prior", [
    ("sparse-view-ct", "lung2_slab.nii.gz", "body-ct"),     # HU, 2.51 mm pixels
    ("cs-mri", "brain2_slab.nii.gz", "brain-mri"),          # MR, 1.56 mm pixels
])
def test_dds_without_prior_takes_the_prior_of_the_data_and_names_it(task, volume, prior, tmp_path, caplog) -> None:
    meas = _simulate(tmp_path, task, volume, "m.h5")
    caplog.set_level("INFO")
    assert main(["reconstruct", "--input", str(meas), "--method", "dds", "--set", "steps=2", "--set",
                 "start_sigma=0", "--output", str(tmp_path / "r.nii.gz")]) == 0
    assert f"prior: {prior} (the shipped" in caplog.text
    for name in ("r.config.json", "r.metrics.json"):
        record = json.loads((tmp_path / name).read_text())["prior"]
        assert record["name"] == prior and record["chosen"] == "default" and "mm pixels" in record["reason"]
    config = json.loads((tmp_path / "r.config.json").read_text())
    assert config["settings"]["prior"] == prior


def test_default_prior_refuses_when_no_shipped_prior_covers_the_pixels() -> None:
    from medrecon.errors import UserError
    from medrecon.prior.catalog import default_prior
    assert default_prior("CT", "HU", 3.37).name == "body-ct"
    assert default_prior("CT", "HU", 0.842).name == "body-ct"      # a clinical CT's own pixels
    assert default_prior("CT", "HU", 3.37, shipped=["chest-ct"]).name == "chest-ct"
    assert default_prior("MR", "a.u.", 2.0).name == "brain-mri"
    assert default_prior("CT", "a.u.", 1.0).name == "phantom"      # medrecon's working window
    with pytest.raises(UserError, match=r"no shipped prior fits CT data at 0.3 mm.*body-ct \(CT, 0.5-4.08"):
        default_prior("CT", "HU", 0.3)
    with pytest.raises(UserError, match=r"no shipped prior fits CT data at 0.842 mm.*chest-ct \(CT, 1.901-4.04"):
        default_prior("CT", "HU", 0.842, shipped=["chest-ct", "phantom"])
    with pytest.raises(UserError, match="no shipped prior fits MR data at 5 mm"):
        default_prior("MR", "a.u.", 5.0)


def test_default_priors_skip_names_that_are_not_shipped(monkeypatch) -> None:
    from medrecon.prior import catalog
    monkeypatch.setitem(catalog.DEFAULT_PRIORS, "CT", ("not-shipped-ct", "chest-ct"))
    assert catalog.default_prior("CT", "HU", 2.5).name == "chest-ct"


def test_figure_reconstructs_nothing_but_the_method(tmp_path, monkeypatch, capsys) -> None:
    """`--figure --report` used to run FBP and ADMM-TV behind the user's back; now the figure
    shows the reference, this run and the --compare volumes, and the table lists them all."""
    import medrecon.methods as methods
    meas = _simulate(tmp_path, "sparse-view-ct", "lung2_slab.nii.gz", "m.h5")
    assert main(["--quiet", "reconstruct", "--input", str(meas), "--method", "sirt", "--set", "iterations=5",
                 "--output", str(tmp_path / "sirt.nii.gz")]) == 0
    calls = []
    real = methods.run_method
    monkeypatch.setattr(methods, "run_method", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    capsys.readouterr()
    assert main(["--quiet", "reconstruct", "--input", str(meas), "--method", "fbp", "--figure", "--report",
                 str(tmp_path / "fbp.html"), "--compare", str(tmp_path / "sirt.nii.gz"), "--output",
                 str(tmp_path / "fbp.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert calls == ["fbp"]
    rows = [ln.split()[0] for ln in out.splitlines() if ln.startswith(("fbp ", "sirt "))]
    assert rows == ["sirt", "fbp"] and (tmp_path / "fbp.png").stat().st_size > 10_000
    assert "sirt" in (tmp_path / "fbp.html").read_text()


def test_compare_on_another_grid_is_refused(tmp_path, capsys) -> None:
    meas = _simulate(tmp_path, "sparse-view-ct", "lung2_slab.nii.gz", "m.h5")
    assert main(["--quiet", "phantom", "--shape", "2", "64", "64", "--output", str(tmp_path / "p.nii.gz")]) == 0
    rc = main(["reconstruct", "--input", str(meas), "--method", "fbp", "--compare", str(tmp_path / "p.nii.gz"),
               "--output", str(tmp_path / "fbp.nii.gz")])
    assert rc == 2 and "--compare" in capsys.readouterr().err
    assert not (tmp_path / "fbp.nii.gz").exists()


def test_evaluate_against_the_original_dicom_study(tmp_path, capsys) -> None:
    """The study (6 x 256 x 256 at 0.8 mm) is the reference of a reconstruction of a 128 x 128
    slab of it: resampled onto the reconstruction's grid, the PSNR agrees with the one against
    the reference stored in the measurement (made by simulate's own resampling: block means) within
    0.01 dB."""
    from dicom_factory import phantom_hu, write_series
    study = tmp_path / "study"
    write_series(study, phantom_hu((6, 256, 256)), spacing=(3.0, 0.8, 0.8))
    meas, recon = tmp_path / "m.h5", tmp_path / "r.nii.gz"
    assert main(["--quiet", "simulate", "--task", "sparse-view-ct", "--views", "32", "--input", str(study),
                 "--size", "128", "--slices", "1:5", "--output", str(meas)]) == 0
    assert main(["--quiet", "reconstruct", "--input", str(meas), "--method", "fbp", "--output", str(recon)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--reference", str(study), "--recon", str(recon), "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "resampled onto the reconstruction's grid" in out
    study_psnr = json.loads((tmp_path / "e.json").read_text())["psnr"]
    stored_psnr = json.loads((tmp_path / "r.metrics.json").read_text())["psnr"]
    assert stored_psnr > 15 and abs(study_psnr - stored_psnr) < 0.01, (study_psnr, stored_psnr)
    assert main(["evaluate", "--reference", str(meas), "--recon", str(recon)]) == 0
    assert "stored in the measurement file" in capsys.readouterr().out
    assert main(["evaluate", "--grid", "strict", "--reference", str(study), "--recon", str(recon)]) == 2


def test_resampling_a_volume_onto_its_own_grid_is_exact_and_a_shift_moves_it() -> None:
    from medrecon.resample import resample_onto
    from medrecon.volume import Volume
    rng = np.random.default_rng(0)
    v = Volume.from_array(rng.random((4, 16, 16)).astype(np.float32), spacing=(2.0, 1.0, 1.0))
    np.testing.assert_allclose(resample_onto(v, v.shape, v.affine).array, v.array, atol=1e-6)
    shifted = v.affine.copy()
    shifted[:3, 3] += v.affine[:3, 2]            # one voxel along x
    out = resample_onto(v, (4, 16, 15), shifted).array
    np.testing.assert_allclose(out, v.array[:, :, 1:], atol=1e-6)


def test_help_documents_the_api() -> None:
    import medrecon
    for name in ("load", "simulate", "reconstruct", "evaluate", "list_priors"):
        doc = getattr(medrecon, name).__doc__
        assert doc and len(doc) > 300, name
    doc = medrecon.reconstruct.__doc__
    for word in ("[Z, Y, X]", "HU", "prior", "Default None", "settings", "device"):
        assert word in doc, word


def test_api_round_trip_matches_the_cli(tmp_path) -> None:
    """medrecon.simulate + reconstruct + evaluate give the numbers the CLI writes."""
    import medrecon
    meas = _simulate(tmp_path, "sparse-view-ct", "lung2_slab.nii.gz", "m.h5", "--views", "16")
    assert main(["--quiet", "reconstruct", "--input", str(meas), "--method", "fbp", "--output",
                 str(tmp_path / "fbp.nii.gz")]) == 0
    cli = json.loads((tmp_path / "fbp.metrics.json").read_text())["psnr"]
    volume = medrecon.load(DATA / "lung2_slab.nii.gz")
    m = medrecon.simulate(volume, "sparse-view-ct", views=16, slices=(0, 2))
    recon = medrecon.reconstruct(m, "fbp")
    assert recon.units == "HU" and recon.shape == (2, 128, 128)
    assert medrecon.evaluate(m, recon)["psnr"] == pytest.approx(cli, abs=1e-4)
    assert medrecon.evaluate(volume, recon)["psnr"] == pytest.approx(cli, abs=1e-3)   # same grid, slab of it
    with pytest.raises(Exception, match="unknown simulation option"):
        medrecon.simulate(volume, "sparse-view-ct", view=8)


def test_prior_list_and_show(capsys) -> None:
    assert main(["prior", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    chest = next(ln for ln in lines if ln.startswith("chest-ct"))
    assert "CT" in chest and "1.901-4.04 mm" in chest and "params" in chest and "lung1" in chest
    assert any(ln.startswith("phantom") and " - " in ln for ln in lines)
    assert main(["prior", "show", "brain-mri"]) == 0
    assert json.loads(capsys.readouterr().out)["pixel_spacing_mm"] == [1.302, 2.4]


def test_info_names_the_prior_that_fits(tmp_path, capsys) -> None:
    assert main(["info", str(DATA / "lung2_slab.nii.gz")]) == 0
    assert "priors: body-ct is the default" in capsys.readouterr().out
    from dicom_factory import phantom_hu, write_series
    write_series(tmp_path / "s", phantom_hu((3, 512, 512)), spacing=(5.0, 0.842, 0.842))
    assert main(["info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "priors: body-ct is the default" in out                    # 0.842 mm: in body-ct's range
    write_series(tmp_path / "fine", phantom_hu((3, 512, 512)), spacing=(5.0, 0.3, 0.3))
    assert main(["info", str(tmp_path / "fine")]) == 0
    out = capsys.readouterr().out   # 0.3 mm: below every range; 512 -> 256 gives 0.6 mm (body-ct)
    assert "none fits at 0.3 mm pixels; body-ct fits after resampling to 256 x 256" in out
    meas = _simulate(tmp_path, "sparse-view-ct", "lung2_slab.nii.gz", "m.h5")
    assert main(["info", str(meas)]) == 0
    out = capsys.readouterr().out
    assert "priors: body-ct" in out and "wedge" not in out and "acceleration" not in out


def test_progress_bars_name_method_and_stage() -> None:
    from medrecon.progress import describe, labelled, stage
    with stage("dds"):
        assert describe("dds") == "dds"
        assert labelled("dds warm start", describe)("ADMM-TV") == "dds warm start: ADMM-TV"
    assert describe("ADMM-TV") == "ADMM-TV"
