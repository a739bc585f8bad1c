"""Sparse-view CT: the default ADMM-TV weight scales with 8 / views above 8 views (medrecon.config.tv_view_scale),
in the TV method and in DDS's warm start, unless the user chose lam_rel."""

from __future__ import annotations

import pytest
import torch

from medrecon.config import TVSettings, apply_view_default, make_settings, tv_view_scale


@pytest.mark.parametrize("task, views, expected", [
    ("sparse-view-ct", 8, 1.0),
    ("sparse-view-ct", 16, 0.5),
    ("sparse-view-ct", 32, 0.25),
    ("sparse-view-ct", 4, 1.0),         # not measured below 8 views: unchanged
    ("sparse-view-ct", 12, 8 / 12),
    ("limited-angle-ct", 32, 1.0),      # measured for sparse views only
    ("cs-mri", 32, 1.0),
    (None, 32, 1.0),
])
def test_scale_by_task_and_views(task, views, expected) -> None:
    assert tv_view_scale(task, views) == expected


def test_the_users_weight_is_kept_and_settings_without_a_record_are_left_alone() -> None:
    default = make_settings("tv", task="sparse-view-ct").lam_rel
    assert apply_view_default(make_settings("tv", task="sparse-view-ct"), "sparse-view-ct", 32).lam_rel \
        == default / 4
    given = make_settings("tv", {"lam_rel": 3e-4}, task="sparse-view-ct")
    assert apply_view_default(given, "sparse-view-ct", 32).lam_rel == 3e-4
    assert apply_view_default(TVSettings(), "sparse-view-ct", 32).lam_rel == TVSettings().lam_rel
    again = make_settings("tv", task="sparse-view-ct")          # one settings object, two runs
    apply_view_default(again, "sparse-view-ct", 32)
    assert apply_view_default(again, "sparse-view-ct", 32).lam_rel == default / 4


def _ct(views: int):
    from medrecon.phantoms import shepp_logan_3d
    from medrecon.tasks import CTOptions, simulate
    from medrecon.volume import Volume

    vol = Volume.from_array(shepp_logan_3d((2, 32, 32)), modality="CT", units="a.u.")
    return simulate(vol, "sparse-view-ct", seed=0, ct=CTOptions(views=views))


def _tv(m, lam_rel: float) -> torch.Tensor:
    from medrecon.solvers.classical import tv_reconstruction
    from medrecon.tasks import build_operator, data_in_working_units

    op = build_operator(m)
    s = make_settings("tv", {"lam_rel": lam_rel, "iterations": 20}, task=m.task)
    return tv_reconstruction(op, data_in_working_units(m, op), s)


@pytest.mark.parametrize("views", [8, 32])
def test_the_tv_method_and_the_warm_start_use_the_scaled_default(views: int, monkeypatch) -> None:
    import medrecon.config as config
    from medrecon.methods import run_method
    from medrecon.samplers.run import tv_warm_start
    from medrecon.tasks import build_operator, data_in_working_units

    m = _ct(views)
    default = make_settings("tv", task=m.task).lam_rel
    expected = _tv(m, default * 8 / views)
    got = run_method(m, "tv", {"iterations": 20})
    assert torch.equal(got, expected)
    op = build_operator(m)
    real = config.make_settings   # the warm start's iterations shortened as above
    monkeypatch.setattr(config, "make_settings",
                        lambda method, values=None, **kw: real(method, {"iterations": 20}, **kw))
    warm = tv_warm_start(m.task)(op, data_in_working_units(m, op))
    assert torch.equal(warm, expected)
    if views != 8:   # the rule changed the result
        assert not torch.equal(got, _tv(m, default))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from test_cli_paths import tiny_prior

    return tiny_prior(tmp_path_factory.mktemp("views") / "tiny")


@pytest.mark.parametrize("through_cli", [False, True])
def test_dds_starts_from_the_scaled_weight_and_the_fit_check_keeps_the_unscaled_one(
        tiny, monkeypatch, through_cli: bool) -> None:
    """32 views: the warm start is ADMM-TV at lam_rel / 4; the prior-fit check's reference image
    stays at the task's lam_rel (its threshold was measured there)."""
    from types import SimpleNamespace

    import medrecon.config as config
    from medrecon.prior.checkpoint import load_prior
    from medrecon.samplers import run as sampler_run
    from medrecon.solvers.classical import tv_reconstruction
    from medrecon.tasks import build_operator, data_in_working_units

    real = config.make_settings
    monkeypatch.setattr(config, "make_settings", lambda method, values=None, **kw: real(
        method, {"iterations": 20} if method == "tv" and values is None else values, **kw))
    seen: dict = {}

    def fit(denoiser, x_warm, card, slab, *, op, y, solver, **kw):   # records, no statistic
        seen.update(start=x_warm, reference=solver(op, y), op=op, y=y)
        return None

    def sampler(op, y, denoiser, cfg, **kw):
        return SimpleNamespace(x=torch.zeros((y.shape[0], *op.in_shape[1:])), info={})

    monkeypatch.setattr(sampler_run, "prior_fit", fit)
    monkeypatch.setattr(sampler_run, "SAMPLERS", {"dds": sampler})
    m = _ct(32)
    if through_cli:
        from medrecon.methods import run_method

        run_method(m, "dds", real("dds", {"prior": str(tiny), "steps": 1}, task=m.task))
    else:
        op = build_operator(m)
        sampler_run.reconstruct("dds", op, data_in_working_units(m, op), load_prior(str(tiny)), m)
    default = real("tv", task=m.task).lam_rel

    def tv(lam_rel: float) -> torch.Tensor:
        s = real("tv", {"lam_rel": lam_rel, "iterations": 20}, task=m.task)
        return tv_reconstruction(seen["op"], seen["y"], s)

    assert torch.equal(seen["start"], tv(default / 4))
    assert torch.equal(seen["reference"], tv(default))
