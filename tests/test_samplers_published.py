"""The samplers on the published network adapters (tiny fixtures with random weights, so exact
properties rather than quality): DDS queries the published DDIM timesteps and uses the raw ADM
epsilon there; DiffusionMBIR runs the published VE noise range with the raw NCSN++ score."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medrecon.physics.ct import make_ct_operator, parallel_geometry, sparse_view_angles
from medrecon.published import ADMDenoiser, ADMUNet, NCSNpp, NCSNppDenoiser
from medrecon.samplers import dds, mbir

DATA = Path(__file__).parent / "data" / "published"


@pytest.fixture(scope="module")
def problem():
    op = make_ct_operator(parallel_geometry((32, 32), sparse_view_angles(8)), backend="astra")
    x = torch.zeros(2, 32, 32)
    x[:, 8:24, 10:22] = 0.5
    return op, op(x)


def test_dds_on_adm_hits_the_published_timesteps(problem) -> None:
    cfg = json.loads((DATA / "adm_tiny_config.json").read_text())["create_model_kwargs"]
    net = ADMUNet(cfg)
    net.load_state_dict(load_file(DATA / "adm_tiny.safetensors"), strict=True)
    den = ADMDenoiser(net.eval(), precision="fp32")
    seen: list[float] = []
    original = den.eps_at_timestep

    def spy(x_vp, t):
        seen.extend(float(v) for v in t.unique())
        return original(x_vp, t)

    den.eps_at_timestep = spy
    op, y = problem
    trace: list[dict] = []
    r = dds(op, y, den, steps=50, seed=0, chunk=2, trace=lambda i, q: trace.append(
        {k: q[k] for k in ("x", "sigma", "x0_hat", "eps", "x0_dc")}))
    assert seen == [float(t) for t in range(980, -1, -20)]
    assert r.info["timesteps"] == list(range(980, -1, -20))
    # the eps DDS uses is the raw ADM output at the published timestep, on x_vp = sqrt(abar) x
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    for step, t in zip(trace, range(980, -1, -20)):
        assert step["sigma"] == pytest.approx(float(((1 - abar[t]) / abar[t]).sqrt()), rel=1e-12)
        x_vp = (step["x"] * float(abar[t].sqrt()))[:, None]
        with torch.no_grad():
            raw = net(x_vp, torch.full((x_vp.shape[0],), float(t)))[:, :1, :, :][:, 0]
        x0 = step["x"] - step["sigma"] * raw                  # D = x - sigma eps (VE Tweedie)
        assert float((step["x0_hat"] - x0).norm() / x0.norm()) < 1e-5, t
        # eps = (x - D) / sigma loses digits as 1 / sigma (measured 1.1e-5 / sigma)
        bar = max(1e-5, 5e-5 / step["sigma"])
        assert float((step["eps"] - raw).norm() / raw.norm()) < bar, t
    assert torch.equal(r.x, trace[-1]["x0_dc"])  # the last step returns its data-consistent image


def test_mbir_on_ncsnpp_uses_the_published_sigma_range(problem) -> None:
    cfg = json.loads((DATA / "ncsnpp_tiny_config.json").read_text())["architecture"]
    net = NCSNpp(cfg)
    net.load_state_dict(load_file(DATA / "ncsnpp_tiny.safetensors"), strict=True)
    den = NCSNppDenoiser(net.eval(), precision="fp32")
    sigmas: list[float] = []
    original = den.score

    def spy(x, sigma):
        sigmas.append(float(sigma[0]))
        return original(x, sigma)

    den.score = spy
    op, y = problem
    trace: list[dict] = []
    r = mbir(op, y, den, steps=3, seed=0, trace=lambda i, q: trace.append(dict(q)))
    assert sigmas[0] == pytest.approx(378.0) and sigmas[-1] == pytest.approx(0.01)
    assert len(sigmas) == 6 and r.info["nfe_per_slice"] == 6
    # the score is the raw NCSN++ output at sigma (the published network predicts the score), and
    # the predictor is the reverse-diffusion step with it
    for step in trace:
        s, s_next = step["sigma"], step["sigma_next"]
        with torch.no_grad():
            raw = net(step["x"][:, None], torch.full((step["x"].shape[0],), s))[:, 0]
        assert torch.allclose(step["score"], raw, rtol=1e-5, atol=1e-6 * float(raw.abs().max()))
        g2 = s * s - s_next * s_next
        want = step["x"] + g2 * raw + (g2 ** 0.5 if s_next > 0 else 0.0) * step["noise"]
        assert float((step["x_predictor"] - want).norm() / want.norm()) < 1e-5
