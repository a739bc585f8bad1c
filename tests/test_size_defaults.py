"""Per-size sampler defaults (medrecon.samplers.config.SIZE_DEFAULTS, view_defaults): CT DDS on
slices of 256 pixels or more takes 3 CG iterations per step, and sparse-view CT DDS with more than
8 views a TV-z weight scaled by 8 / views, unless the user chose a value."""

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


@pytest.mark.parametrize("method, task, shape, views, expected", [
    ("dds", "sparse-view-ct", (128, 128), 32, {"lam_rel": 1e-4}),
    ("dds", "sparse-view-ct", (256, 256), 16, {"lam_rel": 2e-4, "cg_iterations": 3}),
    ("dds", "sparse-view-ct", (256, 256), 8, {"cg_iterations": 3}),
    ("dds", "sparse-view-ct", (128, 128), 4, {}),        # not measured below 8 views
    ("dds", "limited-angle-ct", (128, 128), 32, {}),
    ("mbir", "sparse-view-ct", (128, 128), 32, {}),
])
def test_view_defaults_by_method_task_and_views(method, task, shape, views, expected) -> None:
    got = size_defaults(method, task, shape, views)
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(v, rel=1e-12) for k, v in expected.items())


def test_config_for_task_takes_the_view_defaults_under_the_users_settings() -> None:
    from medrecon.samplers.config import config_for_task

    assert config_for_task("dds", "sparse-view-ct", (128, 128), 32).lam_rel == pytest.approx(1e-4)
    assert config_for_task("dds", "sparse-view-ct", (128, 128), 32, lam_rel=5e-4).lam_rel == 5e-4
    assert config_for_task("dds", "sparse-view-ct", (128, 128), 8).lam_rel == 4e-4


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


def _ct(size: int, views: int = 8):
    from medrecon.phantoms import shepp_logan_3d
    from medrecon.tasks import CTOptions, simulate
    from medrecon.volume import Volume

    vol = Volume.from_array(shepp_logan_3d((2, size, size)), modality="CT", units="a.u.")
    return simulate(vol, "sparse-view-ct", ct=CTOptions(views=views))


@pytest.mark.parametrize("size, views, given, field, expected", [
    (256, 8, {}, "cg_iterations", 3),                          # the per-size default
    (256, 8, {"cg_iterations": 5}, "cg_iterations", 5),        # the user's choice is kept
    (128, 8, {}, "cg_iterations", 5),                          # the task's default below 256 pixels
    (32, 32, {}, "lam_rel", 1e-4),                             # the view default: 4e-4 x 8 / 32
    (32, 32, {"lam_rel": 3e-4}, "lam_rel", 3e-4),              # the user's choice is kept
    (32, 8, {}, "lam_rel", 4e-4),                              # the task's default at 8 views
])
def test_dds_runs_with_the_per_size_defaults_and_records_them(tiny: Path, monkeypatch, size: int,
                                                              views: int, given: dict, field: str,
                                                              expected: float) -> None:
    import torch

    from medrecon.config import make_settings
    from medrecon.methods import run_method
    from medrecon.samplers import run as sampler_run

    ran = {}

    def sampler(method, op, y, denoiser, measurement=None, config=None, **kw):   # records, no work
        ran["config"] = config
        return sampler_run.Reconstruction(torch.zeros((y.shape[0], *op.in_shape[1:])), None, {})

    monkeypatch.setattr(sampler_run, "reconstruct", sampler)
    m = _ct(size, views)
    settings = make_settings("dds", {"prior": str(tiny), "steps": 1, **given}, task=m.task)
    run_method(m, "dds", settings)
    assert getattr(ran["config"], field) == pytest.approx(expected, rel=1e-12)   # the sampler's
    assert getattr(settings, field) == pytest.approx(expected, rel=1e-12)        # the config file's


def test_settings_without_a_record_of_the_users_choice_are_left_alone() -> None:
    from medrecon.config import make_settings
    from medrecon.methods import apply_size_defaults

    s = make_settings("dds", {}, task="sparse-view-ct")
    assert apply_size_defaults("dds", "sparse-view-ct", (256, 256), s) == {"cg_iterations": 3}
    assert s.cg_iterations == 3
    bare = type(s)()                                     # built directly: who chose what is unknown
    assert apply_size_defaults("dds", "sparse-view-ct", (256, 256), bare) == {}
    assert bare.cg_iterations == 5


def test_reconstruct_builds_its_default_config_with_the_view_default(tiny: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    import torch

    from medrecon.prior.checkpoint import load_prior
    from medrecon.samplers import run as sampler_run
    from medrecon.tasks import build_operator, data_in_working_units

    ran = {}

    def sampler(op, y, denoiser, cfg, **kw):
        ran["config"] = cfg
        return SimpleNamespace(x=torch.zeros((y.shape[0], *op.in_shape[1:])), info={})

    monkeypatch.setattr(sampler_run, "SAMPLERS", {"dds": sampler})
    monkeypatch.setattr(sampler_run, "prior_fit", lambda *a, **k: None)
    monkeypatch.setattr(sampler_run, "check_prior_fit", lambda *a, **k: None)
    m = _ct(32, 32)
    op = build_operator(m)
    sampler_run.reconstruct("dds", op, data_in_working_units(m, op), load_prior(str(tiny)), m,
                            x_init=torch.zeros((2, 32, 32)))
    assert ran["config"].lam_rel == pytest.approx(1e-4, rel=1e-12)
