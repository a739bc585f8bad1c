"""The prior-fit statistic and its warning (medrecon.samplers.prior_fit, issue 24)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from medrecon.prior.denoiser import Denoiser
from medrecon.samplers import prior_fit as pf


class Shrink(Denoiser):
    """``D(x) = c + a (x - c)``: a = 1 returns its input, a = 0 the constant c."""

    fixed_size = False

    def __init__(self, a: float, c: float = 0.5) -> None:
        super().__init__()
        self.a, self.c = a, c

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.c + self.a * (x - self.c)


def _image() -> torch.Tensor:
    return torch.rand(10, 16, 16, generator=torch.Generator().manual_seed(0))


def test_reference_is_the_recorded_denoising_psnr_of_the_prior(tmp_path) -> None:
    (tmp_path / pf.EVAL_FILE).write_text(json.dumps(
        {"denoising": [{"sigma": 0.05, "prior_psnr": 40.0}, {"sigma": 0.1, "prior_psnr": 30.0}]}))
    assert pf.reference_rmse({"name": "x", "directory": str(tmp_path)}) == pytest.approx(10 ** -1.5)
    assert pf.reference_rmse({"name": "no-such-prior"}) is None
    shipped = pf.reference_rmse({"name": "phantom"})
    assert shipped is not None and 0.005 < shipped < 0.05


def test_residual_of_an_identity_denoiser_is_the_noise_and_of_a_constant_one_the_image() -> None:
    x = _image()
    assert pf.denoising_residual(Shrink(1.0), x, sigma=0.1) == pytest.approx(0.1, rel=0.05)
    rms = float(((x[[round(k * 9 / 7) for k in range(8)]] - 0.5) ** 2).mean().sqrt())
    assert pf.denoising_residual(Shrink(0.0), x, sigma=0.1) == pytest.approx(rms, rel=1e-5)


def test_warning_names_prior_statistic_threshold_and_ends_with_the_remedy(tmp_path, caplog) -> None:
    (tmp_path / pf.EVAL_FILE).write_text(json.dumps({"denoising": [{"sigma": 0.1, "prior_psnr": 30.0}]}))
    card = {"name": "my-prior", "directory": str(tmp_path)}
    with caplog.at_level(logging.WARNING, logger=pf.__name__):
        bad = pf.prior_fit(Shrink(0.0), _image(), card)          # residual ~0.29 vs 0.032
    assert not bad["fits"] and bad["ratio"] > pf.RATIO_THRESHOLD
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    msg = record.getMessage()
    assert "'my-prior'" in msg and "denoising residual" in msg and f"{pf.RATIO_THRESHOLD:.1f} x" in msg
    assert msg.endswith("--set adapt=true") and "\n" not in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=pf.__name__):
        good = pf.prior_fit(Shrink(0.1), 0.5 + 0.01 * (_image() - 0.5), card)
    assert good["fits"] and not caplog.records
    assert set(good) >= {"prior", "statistic", "ratio", "threshold", "residual_rms", "reference_rmse"}


def test_reconstruct_records_the_statistic_in_the_run_info() -> None:
    import distributed_cases as cases
    from medrecon.prior.checkpoint import load_prior
    from medrecon.samplers.run import reconstruct

    m = cases.ct_measurement()
    part, op, y = cases._local(m, None)
    result = reconstruct("dds", op, y, load_prior("phantom"), part, steps=1)
    fit = result.info["prior_fit"]
    assert fit["prior"] == "phantom" and fit["statistic"] == "heldout_prediction_ratio"
    assert fit["heldout_ratio"] == fit["heldout"][f"q{pf.CV_SIGMA:g}"] and fit["threshold"] == pf.CV_THRESHOLD
    assert fit["ratio"] == pytest.approx(fit["residual_rms"] / fit["reference_rmse"])   # also recorded
    assert isinstance(fit["fits"], bool) and fit["path"] in ("defaults", "as set")


# --- the held-out prediction statistic and the default run's safe start -----------------------
class Oracle(Denoiser):
    """Returns, for every image, the true slice nearest to it (a prior that fits perfectly)."""

    fixed_size = False

    def __init__(self, truth: torch.Tensor) -> None:
        super().__init__()
        self.truth = truth

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        d = ((x[:, 0, None] - self.truth[None]) ** 2).flatten(2).sum(-1)     # [B, Z]
        return self.truth[d.argmin(dim=1)][:, None]


def _ct_case():
    import distributed_cases as cases
    from medrecon.samplers.run import tv_warm_start
    from medrecon.tasks import ct_working_units
    from medrecon.volume import Volume

    m = cases.ct_measurement()
    part, op, y = cases._local(m, None)
    truth = torch.from_numpy(ct_working_units(Volume.from_array(m.arrays["reference"], modality="CT",
                                                                units="a.u."))[0])
    return part, op, y, truth, tv_warm_start(part.task)


def test_heldout_prediction_separates_a_fitting_from_a_misfit_denoiser() -> None:
    _, op, y, truth, solver = _ct_case()
    good = pf.heldout_prediction(Oracle(truth), op, y, solver)
    bad = pf.heldout_prediction(Shrink(0.0), op, y, solver)
    assert good["held_lines"] == 2 and good["lines"] == 8      # views 0 and 4 of 8
    assert good["cg_iterations"] == pf.CV_CG_ITERATIONS > 0
    q = f"q{pf.CV_SIGMA:g}"
    assert good[q] < 0.5 < pf.CV_THRESHOLD < 1.2 < bad[q]
    # without the CG steps on the kept views, the zero image predicts nothing at all
    raw = pf.heldout_prediction(Shrink(0.0), op, y, solver, cg_iterations=0)
    assert raw[q] > 2.0 and raw[q] > bad[q]


def test_fit_warning_fires_for_a_misfit_and_not_for_a_fitting_denoiser(caplog) -> None:
    _, op, y, truth, solver = _ct_case()
    x_w = solver(op, y)
    card = {"name": "my-prior"}
    with caplog.at_level(logging.WARNING, logger=pf.__name__):
        good = pf.prior_fit(Oracle(truth), x_w, card, op=op, y=y, solver=solver, fallback=pf.SAFE_PATH)
    assert good["fits"] and good["path"] == "defaults" and not caplog.records
    assert good["statistic"] == "heldout_prediction_ratio" and good["heldout_ratio"] < 1
    with caplog.at_level(logging.WARNING, logger=pf.__name__):
        bad = pf.prior_fit(Shrink(0.0), x_w, card, op=op, y=y, solver=solver, fallback=pf.SAFE_PATH)
    assert not bad["fits"] and bad["path"] == "safe start" and bad["path_settings"] == pf.SAFE_PATH
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    msg = record.getMessage()
    assert "'my-prior'" in msg and "held-out prediction ratio" in msg and "threshold 1.00" in msg
    assert "start_sigma=0.05 steps=10" in msg and msg.endswith("--set adapt=true") and "\n" not in msg


def test_safe_path_only_without_path_settings_given() -> None:
    assert pf.safe_path(()) == pf.SAFE_PATH and pf.safe_path({"seed", "prior", "lam_rel"}) == pf.SAFE_PATH
    for given in ({"steps"}, {"start_sigma"}, {"adapt"}, {"adapt_lr"}):
        assert pf.safe_path(given) is None
    assert pf.safe_path(None) is None                    # the caller did not say: nothing replaced


def test_settings_remember_what_the_user_gave() -> None:
    from medrecon import methods  # noqa: F401 - registers dds
    from medrecon.config import make_settings, user_settings

    s = make_settings("dds", {"steps": "4", "seed": 2}, task="sparse-view-ct")
    assert user_settings(s) == {"steps", "seed"} and s.start_sigma == 0.3
    assert user_settings(make_settings("dds", None, task="sparse-view-ct")) == frozenset()


@pytest.mark.parametrize("given, path, steps", [((), "safe start", 10), ({"steps"}, "as set", 2),
                                               (None, "as set", 2)])
def test_default_run_takes_the_safe_start_unless_settings_were_given(monkeypatch, given, path,
                                                                     steps) -> None:
    from medrecon.prior.checkpoint import load_prior
    from medrecon.samplers.run import reconstruct

    part, op, y, _, _ = _ct_case()
    monkeypatch.setattr(pf, "CV_THRESHOLD", -1.0)        # the prior never fits
    settings = {"steps": 2} if given != () else {}     # the caller's keywords count as given
    result = reconstruct("dds", op, y, load_prior("phantom"), part, user_settings=given, **settings)
    fit = result.info["prior_fit"]
    assert fit["fits"] is False and fit["path"] == path
    assert result.info["nfe_per_slice"] == steps
    if path == "safe start":
        assert fit["path_settings"] == {"start_sigma": 0.05, "steps": 10}


def test_complex_images_keep_the_residual_ratio(tmp_path) -> None:
    """MR (complex) images: the held-out ratio did not separate MR cases, the residual ratio decides."""
    (tmp_path / pf.EVAL_FILE).write_text(json.dumps({"denoising": [{"sigma": 0.1, "prior_psnr": 30.0}]}))
    x = (_image() + 0j).to(torch.complex64)
    fit = pf.prior_fit(Shrink(0.0), x, {"name": "mr", "directory": str(tmp_path)},
                       op=object(), y=torch.zeros(1), solver=lambda o, d: None)
    assert fit["statistic"] == "denoising_residual_ratio" and "heldout" not in fit


def test_peripheral_lines_leave_out_the_fully_sampled_centre() -> None:
    """The MR variant of the held-out statistic holds out only lines outside the centre block."""
    sampled = torch.zeros(20, dtype=torch.bool)
    sampled[[1, 4, 5, 8, 9, 10, 11, 12, 15, 19]] = True      # centre block 8..12, a pair at 4-5
    assert pf.peripheral_lines(sampled).tolist() == [1, 4, 5, 15, 19]
    block = torch.zeros(8, dtype=torch.bool)
    block[2:6] = True                                       # nothing outside the block: all lines
    assert pf.peripheral_lines(block).tolist() == [2, 3, 4, 5]
    three = torch.zeros(12, dtype=torch.bool)
    three[[0, 4, 5, 6, 10, 11]] = True                      # a run of exactly 3 is a block, of 2 not
    assert pf.peripheral_lines(three).tolist() == [0, 10, 11]


def test_heldout_mr_lines_are_peripheral_when_asked() -> None:
    y = torch.zeros(2, 3, 20, 6, dtype=torch.complex64)
    y[:, :, [1, 4, 5, 8, 9, 10, 11, 12, 15, 19], :] = 1.0
    held = pf._HeldOut(y, period=2, peripheral=True)
    gone = (~held.keep.flatten()).nonzero().flatten().tolist()
    assert gone == [1, 5, 19] and held.lines == 10 and held.held == 3
    assert (~pf._HeldOut(y, period=2).keep.flatten()).nonzero().flatten().tolist() == [1, 5, 9, 11, 15]
