"""Posterior mean and per-voxel spread from K seeded reconstructions."""

import pytest
import torch

from denoisers import ct_problem, mri_problem
from medrecon.io.sampler_state import DirectoryStateStore
from medrecon.errors import UserError
from medrecon.metrics import psnr
from medrecon.samplers.dds import dds
from medrecon.samplers.posterior import sample_posterior


def test_posterior_spread_zero_iff_deterministic() -> None:
    op, y, truth, den = ct_problem(views=4, n_slices=3)
    det = sample_posterior("dds", op, y, den, samples=3, steps=5, eta=0.0, init_noise=False)
    assert torch.count_nonzero(det.std) == 0
    assert torch.equal(det.mean, dds(op, y, den, steps=5, eta=0.0, init_noise=False, seed=9).x)
    start_only = sample_posterior("dds", op, y, den, samples=3, steps=5, eta=0.0)
    assert float(start_only.std.mean()) > 0
    post = sample_posterior("dds", op, y, den, samples=4, seed=10, steps=5)
    assert post.seeds == [10, 11, 12, 13] and float(post.std.mean()) > 0
    xs = torch.stack([dds(op, y, den, steps=5, seed=s).x for s in post.seeds])
    assert torch.allclose(post.mean, xs.mean(0), atol=1e-5)
    assert torch.allclose(post.std, xs.std(0), atol=1e-5)
    # the mean of samples is at least as good as a single sample (measured +1 dB here)
    assert psnr(post.mean, truth, 1.0) >= psnr(xs[0], truth, 1.0)


def test_posterior_complex_and_resumable(tmp_path) -> None:
    op, y, truth, den = mri_problem(acceleration=4, n=16, n_slices=2)
    kw = dict(samples=2, steps=4, lam_rel=0.005, rho_rel=0.01)
    ref = sample_posterior("dds", op, y, den, **kw)
    assert ref.mean.dtype == torch.complex64 and ref.std.dtype == torch.float32
    xs = torch.stack([dds(op, y, den, steps=4, lam_rel=0.005, rho_rel=0.01, seed=s).x for s in (0, 1)])
    var = ((xs - xs.mean(0)).abs() ** 2).sum(0)             # K - 1 = 1
    assert torch.allclose(ref.std, var.sqrt(), atol=1e-5)
    sample_posterior("dds", op, y, den, store=DirectoryStateStore(tmp_path), **kw)
    again = sample_posterior("dds", op, y, den, store=DirectoryStateStore(tmp_path), resume=True, **kw)
    assert [i["resumed_from"] for i in again.infos] == [4, 4]
    assert torch.equal(again.mean, ref.mean) and torch.equal(again.std, ref.std)
    with pytest.raises(UserError):
        sample_posterior("dds", op, y, den, samples=1, steps=2)
    with pytest.raises(UserError):
        sample_posterior("fbp", op, y, den, samples=2)


def test_reconstruct_maps_working_units_through_the_prior_window() -> None:
    """A prior on [-1200, 800] HU (window shifted against the working [-1000, 1000] HU): the
    result equals dds on the prior-unit data, mapped back; K = 2 gives a scaled std."""
    from medrecon.phantoms import random_ellipsoids
    from medrecon.samplers.intensity import prior_map_for_measurement
    from medrecon.samplers.run import reconstruct
    from medrecon.tasks import CTOptions, build_operator, data_in_working_units, simulate
    from medrecon.volume import Volume

    from denoisers import GaussianMixtureDenoiser, template_set

    vol = Volume.from_array(random_ellipsoids((2, 32, 32), seed=1_000_001), modality="CT",
                            units="a.u.")
    m = simulate(vol, "sparse-view-ct", ct=CTOptions(views=8))
    op = build_operator(m, backend="astra")
    y = data_in_working_units(m, op)
    den = GaussianMixtureDenoiser(template_set(32))
    den.card = {"name": "t", "intensity": {"convention": "window01", "window": [-1200.0, 800.0],
                                           "units": "HU"}}
    from medrecon.samplers.run import warm_start_image

    out = reconstruct("dds", op, y, den, m, steps=3, seed=2)     # task default: warm start
    imap = prior_map_for_measurement(m, den.card)
    assert imap.lo == pytest.approx(-0.1) and imap.scale == pytest.approx(1.0)
    start = warm_start_image(op, imap.data_to_prior(op, y), m.task)   # in prior units
    direct = dds(op, imap.data_to_prior(op, y), den, steps=3, seed=2, start_sigma=0.3,
                 x_init=start, lam_rel=out.info["config"]["lam_rel"]).x
    assert out.std is None and torch.allclose(out.x, imap.image_from_prior(direct), atol=1e-6)
    cold = reconstruct("dds", op, y, den, m, steps=3, seed=2, start_sigma=0.0)
    direct = dds(op, imap.data_to_prior(op, y), den, steps=3, seed=2,
                 lam_rel=out.info["config"]["lam_rel"]).x
    assert torch.allclose(cold.x, imap.image_from_prior(direct), atol=1e-6)
    post = reconstruct("dds", op, y, den, m, samples=2, steps=3)          # seeds 0 and 1
    a, b = (dds(op, imap.data_to_prior(op, y), den, steps=3, seed=k, start_sigma=0.3,
                x_init=start, lam_rel=out.info["config"]["lam_rel"]).x for k in (0, 1))
    assert torch.allclose(post.x, imap.image_from_prior((a + b) / 2), atol=1e-6)
    # the spread in working units: the prior-unit std times the map's scale
    assert torch.allclose(post.std, (a - b).abs() / 2 ** 0.5 * imap.scale, atol=1e-6)
    assert float(post.std.mean()) > 1e-3
