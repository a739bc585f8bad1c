"""The golden file (tests/data/goldens.json): one entry per case with its provenance, a check
that fails on a loss, on a gain and on stale prior weights, and a regeneration script that
touches only the cases it is asked for. The goldens of the data priors (sample data) are slow."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from golden_cases import CASES, GOLDEN_FILE, REGENERATE, check, load

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "regenerate_goldens.py"


def test_every_case_has_a_golden_with_its_provenance() -> None:
    cases = load()["cases"]
    assert set(cases) == set(CASES)
    for name, g in cases.items():
        case = CASES[name]
        assert g["command"] == f"{REGENERATE} --only {name}" and g["unit"] == "dB PSNR"
        assert {"medrecon", "python", "torch", "numpy", "scipy", "astra"} <= set(g["versions"])
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", g["versions"]["medrecon"]), g["versions"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", g["date"])
        assert g["tolerance"] == case.tolerance <= 0.2
        if case.prior is None:
            assert g["prior"] is None
        else:
            assert g["prior"]["name"] == case.prior and re.fullmatch(r"[0-9a-f]{64}",
                                                                     g["prior"]["sha256"])


def test_check_fails_on_a_loss_a_gain_and_stale_weights(tmp_path: Path) -> None:
    doc = load()
    path = tmp_path / "goldens.json"
    path.write_text(json.dumps(doc))
    name = "dds-phantom-sv8-20nfe"
    g = doc["cases"][name]
    check(name, g["value"] + 0.9 * g["tolerance"], path)
    check(name, g["value"] - 0.9 * g["tolerance"], path)
    with pytest.raises(AssertionError, match="a gain is a change too"):
        check(name, g["value"] + 1.5 * g["tolerance"], path)
    with pytest.raises(AssertionError):
        check(name, g["value"] - 1.5 * g["tolerance"], path)
    doc["cases"][name]["prior"]["sha256"] = "0" * 64
    path.write_text(json.dumps(doc))
    with pytest.raises(pytest.fail.Exception, match="--prior phantom"):
        check(name, g["value"], path)


def _script():
    spec = importlib.util.spec_from_file_location("regenerate_goldens", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regeneration_chooses_cases_by_name_prior_or_speed() -> None:
    choose = _script().choose
    ns = lambda **kw: argparse.Namespace(**{"only": None, "prior": None, "all": False, **kw})  # noqa: E731
    assert choose(ns(prior=["chest-ct", "brain-mri"])) == ["dds-chest-ct-sv8", "dds-brain-mri-x4"]
    assert set(choose(ns(prior=["phantom"]))) == {n for n, c in CASES.items() if c.prior == "phantom"}
    assert choose(ns(only=["sv8-tv", "sv8-fbp"])) == ["sv8-fbp", "sv8-tv"]
    fast = choose(ns())
    assert "dds-chest-ct-sv8" not in fast and "sv8-fbp" in fast
    assert set(choose(ns(all=True))) == set(CASES)
    with pytest.raises(SystemExit, match="pet-ct"):
        choose(ns(prior=["pet-ct"]))


def test_regeneration_rewrites_only_the_chosen_case(tmp_path: Path) -> None:
    path = tmp_path / "goldens.json"
    path.write_text(GOLDEN_FILE.read_text())
    before = load(path)["cases"]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--only", "sv8-fbp", "--file", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    after = load(path)["cases"]
    assert {n: g for n, g in after.items() if n != "sv8-fbp"} == \
        {n: g for n, g in before.items() if n != "sv8-fbp"}
    assert after["sv8-fbp"]["value"] == pytest.approx(before["sv8-fbp"]["value"], abs=1e-3)
    assert "sv8-fbp" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.slow))
def test_data_prior_golden(name: str) -> None:
    """DDS with the shipped chest-ct / brain-mri priors on their held-out slabs (sample data).
    After retraining a prior: python scripts/regenerate_goldens.py --prior NAME."""
    check(name, CASES[name].measure())
