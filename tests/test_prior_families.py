"""Architecture families register with the prior loader (medrecon.prior.families); the loader
names none of them, and a family nobody registered is refused naming the card."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medrecon.errors import DataError
from medrecon.prior import families
from medrecon.prior.checkpoint import load_prior, save_prior
from medrecon.prior.network import EDMUNetDenoiser, UNetConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = UNetConfig(image_size=32, channels=(8, 16), attention_levels=(False, False), num_res_blocks=1,
                  num_head_channels=16, norm_num_groups=4)


def _prior(directory: Path, family: str) -> Path:
    card = {"name": "t", "architecture": {"family": family, "config": TINY.to_dict()},
            "parameterisation": "edm", "noise": {"sigma_min": 0.002, "sigma_max": 80.0},
            "image_size": 32, "intensity": {"convention": "window01", "window": [0.0, 1.0], "units": "a.u."},
            "training": {"command": "test"}}
    return save_prior(directory, card, EDMUNetDenoiser(TINY).state_dict())


def test_a_registered_family_is_built_by_its_builder(tmp_path, monkeypatch) -> None:
    calls = []

    def build(card, state, *, directory, weights, device):
        calls.append((card["name"], directory, weights.name, str(device)))
        model = EDMUNetDenoiser(UNetConfig.from_dict(card["architecture"]["config"]))
        model.load_state_dict(state)
        return model

    monkeypatch.setitem(families.FAMILIES, "test-family", build)
    out = _prior(tmp_path / "p", "test-family")
    den = load_prior(out)
    assert calls == [("t", out, "ema.safetensors", "cpu")]
    assert den.card["architecture"]["family"] == "test-family" and not den.training
    assert not any(p.requires_grad for p in den.parameters())


def test_an_unregistered_family_is_refused_naming_the_card(tmp_path) -> None:
    out = _prior(tmp_path / "p", "nobody-registered-this")
    with pytest.raises(DataError, match=r"model_card.json: unknown architecture family "
                                        r"'nobody-registered-this' \(known: .*edm-unet"):
        load_prior(out)


def test_a_family_error_names_the_card(tmp_path, monkeypatch) -> None:
    def build(card, state, *, directory, weights, device):
        raise DataError("model card: this family wants something else")

    monkeypatch.setitem(families.FAMILIES, "picky", build)
    out = _prior(tmp_path / "p", "picky")
    with pytest.raises(DataError, match=r"p/model_card.json: this family wants something else"):
        load_prior(out)


def test_register_family_needs_a_name() -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        families.register_family("", lambda *a, **k: None)


def _fresh_interpreter(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a new Python process on this checkout (it must succeed)."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out


def test_the_published_families_register_when_their_package_is_imported() -> None:
    """In a fresh interpreter: the loader alone knows edm-unet only; importing medrecon.published
    adds ncsnpp and adm (the loader never imports it)."""
    code = ("import sys\n"
            "from medrecon.prior import checkpoint, families\n"
            "assert 'medrecon.published' not in sys.modules, 'the loader imported the published package'\n"
            "print(sorted(families.FAMILIES))\n"
            "import medrecon.published\n"
            "print(sorted(families.FAMILIES))\n")
    out = _fresh_interpreter(code)
    assert out.stdout.split("\n")[:2] == ["['edm-unet']", "['adm', 'edm-unet', 'ncsnpp']"]


def test_a_card_of_an_unregistered_family_loads_its_installed_plugin() -> None:
    """In a fresh interpreter, without importing medrecon.published: asking for ``adm`` imports
    the packages of the ``medrecon.prior_families`` entry points (medrecon's own pyproject lists
    medrecon.published), so load_prior works on an imported published prior from any caller;
    a family no package provides is still refused."""
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from medrecon.errors import DataError\n"
            "from medrecon.prior import families\n"
            "families.family_builder('adm', Path('card.json'))\n"
            "print('medrecon.published' in sys.modules, sorted(families.FAMILIES))\n"
            "try:\n"
            "    families.family_builder('nope', Path('card.json'))\n"
            "except DataError as e:\n"
            "    print(e)\n")
    out = _fresh_interpreter(code)
    lines = out.stdout.split("\n")
    assert lines[0] == "True ['adm', 'edm-unet', 'ncsnpp']"
    assert lines[1].startswith("card.json: unknown architecture family 'nope'")
