"""Per-size sampler defaults (medrecon.samplers.config.SIZE_DEFAULTS): CT DDS on slices of 256
pixels or more takes 3 CG iterations per step, unless the user chose a number."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrecon.samplers.config import size_defaults


@pytest.mark.parametrize("method, task, shape, expected", [
    ("dds", "sparse-view-ct", (256, 256), {"cg_iterations": 3}),
    ("dds", "sparse-view-ct", (512, 384), {"cg_iterations": 3}),
    ("dds", "sparse-view-ct", (128, 128), {}),
    ("dds", "sparse-view-ct", (255, 512), {}),          # both axes must reach 256
    ("dds", "limited-angle-ct", (256, 256), {}),        # measured for sparse views only
    ("dds", "cs-mri", (256, 256), {}),
    ("mbir", "sparse-view-ct", (256, 256), {}),
    ("dds", None, (256, 256), {}),
])
def test_size_defaults_by_method_task_and_slice_size(method, task, shape, expected) -> None:
    assert size_defaults(method, task, shape) == expected


def test_config_for_task_takes_the_size_defaults_under_the_users_settings() -> None:
    from medrecon.samplers.config import config_for_task

    assert config_for_task("dds", "sparse-view-ct", (256, 256)).cg_iterations == 3
    assert config_for_task("dds", "sparse-view-ct", (256, 256), cg_iterations=5).cg_iterations == 5
    assert config_for_task("dds", "sparse-view-ct").cg_iterations == 5
    assert config_for_task("dds", "sparse-view-ct", (128, 128)).cg_iterations == 5


def test_a_copy_is_returned() -> None:
    size_defaults("dds", "sparse-view-ct", (256, 256))["cg_iterations"] = 99
    assert size_defaults("dds", "sparse-view-ct", (256, 256)) == {"cg_iterations": 3}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from test_cli_paths import tiny_prior

    return tiny_prior(tmp_path_factory.mktemp("size") / "tiny")


def _ct(size: int):
    from medrecon.phantoms import shepp_logan_3d
    from medrecon.tasks import CTOptions, simulate
    from medrecon.volume import Volume

    vol = Volume.from_array(shepp_logan_3d((2, size, size)), modality="CT", units="a.u.")
    return simulate(vol, "sparse-view-ct", ct=CTOptions(views=8))


@pytest.mark.parametrize("size, given, expected", [
    (256, {}, 3),                          # the per-size default
    (256, {"cg_iterations": 5}, 5),        # the user's choice is kept
    (128, {}, 5),                          # the task's default below 256 pixels
])
def test_dds_runs_with_the_size_default_and_records_it(tiny: Path, monkeypatch, size: int,
                                                       given: dict, expected: int) -> None:
    import torch

    from medrecon.config import make_settings
    from medrecon.methods import run_method
    from medrecon.samplers import run as sampler_run

    ran = {}

    def sampler(method, op, y, denoiser, measurement=None, config=None, **kw):   # records, no work
        ran["config"] = config
        return sampler_run.Reconstruction(torch.zeros((y.shape[0], *op.in_shape[1:])), None, {})

    monkeypatch.setattr(sampler_run, "reconstruct", sampler)
    m = _ct(size)
    settings = make_settings("dds", {"prior": str(tiny), "steps": 1, **given}, task=m.task)
    run_method(m, "dds", settings)
    assert ran["config"].cg_iterations == expected      # what the sampler was given
    assert settings.cg_iterations == expected           # what the run's config file records


def test_settings_without_a_record_of_the_users_choice_are_left_alone() -> None:
    from medrecon.config import make_settings
    from medrecon.methods import apply_size_defaults

    s = make_settings("dds", {}, task="sparse-view-ct")
    assert apply_size_defaults("dds", "sparse-view-ct", (256, 256), s) == {"cg_iterations": 3}
    assert s.cg_iterations == 3
    bare = type(s)()                                     # built directly: who chose what is unknown
    assert apply_size_defaults("dds", "sparse-view-ct", (256, 256), bare) == {}
    assert bare.cg_iterations == 5
