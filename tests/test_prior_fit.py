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
    assert fit["prior"] == "phantom" and fit["statistic"] == "denoising_residual_ratio"
    assert fit["ratio"] == pytest.approx(fit["residual_rms"] / fit["reference_rmse"])
    assert isinstance(fit["fits"], bool)
