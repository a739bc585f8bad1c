"""configs/: one YAML per task and method with medrecon's defaults, each valid against the typed
settings; a wrong key or value is refused with the file and the key named."""

from pathlib import Path

import pytest

import medrecon.methods  # noqa: F401 - registers the diffusion methods' settings
from medrecon.config import load_config, make_settings
from medrecon.errors import UserError
from medrecon.methods import methods_for
from medrecon.tasks import TASKS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _method_configs() -> list[Path]:
    return [p for p in sorted(CONFIGS.glob("*.yaml")) if not p.name.startswith("train_")]


def test_every_task_and_method_has_a_default_config() -> None:
    seen = set()
    for path in _method_configs():
        doc = load_config(path)
        if "published" in path.name or "adapt" in path.name:   # not defaults, by design
            continue
        method, task = doc["method"], doc["task"]
        defaults = make_settings(method, task=task)
        for key, value in doc["settings"].items():
            assert getattr(defaults, key) == value, (path.name, key, value)
        seen.add((method, task))
    wanted = {(m, t) for t in TASKS for m in (*methods_for(t), "dds", "mbir")}
    assert wanted <= seen, sorted(wanted - seen)


def test_bad_config_names_file_and_key(tmp_path) -> None:
    bad = tmp_path / "tv.yaml"
    bad.write_text("method: tv\ntask: cs-mri\nsettings:\n  lamda_rel: 0.1\n")
    with pytest.raises(UserError, match=r"tv.yaml.*lamda_rel"):
        load_config(bad)
    bad.write_text("method: tv\nsettings:\n  iterations: many\n")
    with pytest.raises(UserError, match=r"tv.yaml.*iterations"):
        load_config(bad)
