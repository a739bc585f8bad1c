"""Few-step DDS (issue 21): fitted step schedules shipped beside a prior's card, picked by the
``steps`` value, validated on load, recorded in the run's info and metrics; more data
consistency per network call (``dc_iterations``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from denoisers import ct_problem
from medrecon.errors import DataError, UserError
from medrecon.metrics import psnr
from medrecon.prior.card import SHIPPED_DIR
from medrecon.samplers.config import DdsConfig
from medrecon.samplers.dds import dds, dds_sigmas
from medrecon.samplers.fewstep import (FORMAT, SCHEDULES_FILE, StepSchedule, karras_sigmas,
                                       read_schedules, resolve_schedule, write_schedules)

SHIPPED_WITH_SCHEDULES = ("body-ct", "brain-mri")


@pytest.fixture(scope="module")
def ct():
    return ct_problem(views=4)


def _doc(**entry) -> dict:
    return {"format": FORMAT, "prior": "x", "schedules": {"3": {"sigmas": [0.3, 0.1, 0.02], **entry}}}


@pytest.mark.parametrize("prior", SHIPPED_WITH_SCHEDULES)
def test_shipped_schedule_files_load_and_validate(prior: str) -> None:
    path = SHIPPED_DIR / prior / SCHEDULES_FILE
    schedules = read_schedules(path)
    assert schedules, f"{path} holds no schedule"
    for steps, entry in schedules.items():
        assert entry.steps == steps and list(entry.sigmas) == sorted(entry.sigmas, reverse=True)
        assert entry.start_sigma == DdsConfig(start_sigma=0.3).start_sigma
        assert entry.fit["psnr"] >= entry.fit["psnr_uniform"]   # the fit never ships a loss
    doc = json.loads(path.read_text())
    assert doc["prior"] == prior
    for held_out in ("lung2", "brain2", "pelvis", "41"):          # fitted on training data only
        assert held_out not in doc["fitted_on"]


@pytest.mark.parametrize("change, message", [
    ({"sigmas": [0.3, 0.1]}, "must be a list of 3 noise levels"),
    ({"sigmas": [0.1, 0.3, 0.02]}, "strictly descending"),
    ({"sigmas": [0.3, 0.1, -0.02]}, "positive finite"),
    ({"eta": 1.5}, "'eta' must be a number in"),
    ({"dc_iterations": 0}, "'dc_iterations' must be a positive integer"),
    ({"warp": 2}, "unknown key"),
])
def test_a_bad_schedule_entry_is_refused_in_one_line(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / SCHEDULES_FILE
    doc = _doc()
    doc["schedules"]["3"].update(change)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message) as err:
        read_schedules(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"), ("[]", "must be a JSON object"),
    (json.dumps({"format": "other/1", "schedules": {}}), "format 'other/1'"),
    (json.dumps({"format": FORMAT, "schedules": {"three": {"sigmas": [1.0]}}}), "not a positive step count"),
])
def test_a_damaged_schedule_file_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / SCHEDULES_FILE
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_schedules(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _with_schedules(den, tmp_path: Path, schedules: dict) -> None:
    write_schedules(tmp_path / SCHEDULES_FILE, "test", schedules)
    den.prior_dir = tmp_path


def test_the_steps_value_picks_its_schedule(ct, tmp_path: Path) -> None:
    _, _, _, den = ct
    entry = StepSchedule((0.2, 0.05, 0.01), eta=0.5, dc_iterations=2, start_sigma=0.0)
    _with_schedules(den, tmp_path, {3: entry})
    try:
        got = resolve_schedule(DdsConfig(steps=3), den)
        assert got.name == "fitted" and got.sigmas == entry.sigmas
        assert (got.eta, got.dc_iterations, got.cg_iterations) == (0.5, 2, 5)
        other = resolve_schedule(DdsConfig(steps=4), den)          # no entry for 4 steps: uniform
        assert other.name == "uniform" and "no fitted schedule for 4 steps (it has 3)" in other.reason
        assert resolve_schedule(DdsConfig(steps=3, schedule="uniform"), den).name == "uniform"
        warm = resolve_schedule(DdsConfig(steps=3, start_sigma=0.3), den)
        assert warm.name == "uniform" and "fitted for start_sigma 0" in warm.reason
        with pytest.raises(UserError, match="no fitted schedule for 4 steps"):
            resolve_schedule(DdsConfig(steps=4, schedule="fitted"), den)
    finally:
        del den.prior_dir


def test_dds_runs_and_records_the_fitted_schedule(ct, tmp_path: Path) -> None:
    op, y, truth, den = ct
    entry = StepSchedule((2.0, 0.5, 0.05), eta=0.0, dc_iterations=2)
    _with_schedules(den, tmp_path, {3: entry})
    try:
        fitted = dds(op, y, den, steps=3, seed=0)
        uniform = dds(op, y, den, steps=3, seed=0, schedule="uniform")
    finally:
        del den.prior_dir
    rec = fitted.info["schedule"]
    assert rec["name"] == "fitted" and rec["sigmas"] == list(entry.sigmas)
    assert (rec["eta"], rec["dc_iterations"]) == (0.0, 2) and rec["source"].endswith(SCHEDULES_FILE)
    assert fitted.info["sigma_first"] == 2.0 and fitted.info["sigma_last"] == 0.05
    assert uniform.info["schedule"]["name"] == "uniform"
    assert uniform.info["schedule"]["sigmas"][0] == uniform.info["sigma_first"]
    assert not torch.allclose(fitted.x, uniform.x)
    assert psnr(fitted.x, truth, 1.0) > 25


def test_a_schedule_above_the_start_is_refused(ct, tmp_path: Path) -> None:
    _, _, _, den = ct
    with pytest.raises(UserError, match="starts at sigma 1, above 0.3"):
        dds_sigmas(DdsConfig(steps=2, start_sigma=0.3), 80.0, [1.0, 0.1])


def test_more_data_consistency_per_call_lowers_the_residual(ct) -> None:
    op, y, _, den = ct
    one = dds(op, y, den, steps=3, seed=0, schedule="uniform")
    three = dds(op, y, den, steps=3, seed=0, schedule="uniform", dc_iterations=3)
    assert three.info["schedule"]["dc_iterations"] == 3
    assert three.info["residual"] < one.info["residual"]


def test_settings_validate_and_identity_stays_as_before() -> None:
    with pytest.raises(UserError, match="schedule must be one of auto, uniform, fitted"):
        DdsConfig(schedule="trO")
    with pytest.raises(UserError, match="dc_iterations must be a positive integer"):
        DdsConfig(dc_iterations=0)
    ident = DdsConfig().identity()
    assert "schedule" not in ident and "dc_iterations" not in ident
    assert DdsConfig(schedule="uniform", dc_iterations=2).identity()["dc_iterations"] == 2


def test_karras_levels() -> None:
    s = karras_sigmas(5, 0.3, 0.01, 3.0)
    assert s[0] == pytest.approx(0.3) and s[-1] == pytest.approx(0.01)
    assert all(b < a for a, b in zip(s, s[1:]))
    assert karras_sigmas(1, 0.3, 0.01, 2.0) == [0.3]


@pytest.mark.slow
def test_fitted_schedule_beats_uniform_on_training_data() -> None:
    """The shipped body-ct 5-step schedule against the uniform 5 steps on 4 slices of the
    abdomen's training part, 8 views, 128 x 128, the task's default DDS: measured PSNR (the fit
    measured 31.05 vs 30.34 dB here; on lung1's 4 slices only 28.45 vs 28.27)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from fit_schedules import Evaluator, training_case

    ev = Evaluator("body-ct", [training_case("abdomen-train", 4)])
    entry = read_schedules(SHIPPED_DIR / "body-ct")[5]
    fitted, uniform = ev(5, entry, "shipped"), ev(5, None, "uniform")
    assert fitted > uniform + 0.4, (fitted, uniform)


def test_the_cli_records_the_schedule_in_config_and_metrics(tmp_path: Path) -> None:
    """``medrecon reconstruct --method dds`` with a prior directory that ships a 2-step schedule:
    ``--set steps=2`` runs it, and the config and metrics JSON say which schedule ran (from
    noise, no ADMM-TV warm start: a few seconds)."""
    import shutil

    from medrecon.cli import main

    prior = tmp_path / "prior"
    shutil.copytree(SHIPPED_DIR / "phantom", prior)
    write_schedules(prior / SCHEDULES_FILE, "phantom",
                    {2: StepSchedule((2.0, 0.5), start_sigma=0.0, fit={"psnr": 1, "psnr_uniform": 0})})
    assert main(["--quiet", "phantom", "--kind", "ellipsoids", "--seed", "1000003", "--shape", "2",
                 "128", "128", "--output", str(tmp_path / "ph.nii.gz")]) == 0
    assert main(["--quiet", "simulate", "--task", "sparse-view-ct", "--views", "8", "--input",
                 str(tmp_path / "ph.nii.gz"), "--output", str(tmp_path / "m.h5")]) == 0
    for steps, name in ((2, "fitted"), (3, "uniform")):
        out = tmp_path / f"r{steps}.nii.gz"
        assert main(["--quiet", "reconstruct", "--input", str(tmp_path / "m.h5"), "--method", "dds",
                     "--prior", str(prior), "--set", f"steps={steps}", "--set", "start_sigma=0",
                     "--output", str(out)]) == 0
        metrics = json.loads((tmp_path / f"r{steps}.metrics.json").read_text())
        config = json.loads((tmp_path / f"r{steps}.config.json").read_text())
        assert metrics["schedule"]["name"] == name == config["sampler"]["schedule"]["name"]
        assert len(metrics["schedule"]["sigmas"]) == steps
    assert metrics["schedule"]["setting_reason"].startswith("auto: prior 'phantom' ships no fitted")


def test_metrics_json_records_what_the_network_ran_and_the_schedule() -> None:
    """``reconstruct``'s metrics JSON takes ``precision`` and ``schedule`` from the sampler's
    info (the first sample's for a posterior run) and leaves out what was not recorded."""
    from medrecon.commands.reconstruct import what_ran

    one = {"precision": {"dtype": "float32"}, "schedule": {"kind": "uniform"}, "seed": 0}
    assert what_ran(one) == {"precision": {"dtype": "float32"}, "schedule": {"kind": "uniform"}}
    assert what_ran({"runs": [{"schedule": {"kind": "fitted"}}, one]}) == {"schedule": {"kind": "fitted"}}
    assert what_ran({"method": "tv"}) == {}
