"""The samplers on the published network adapters (tiny fixtures): DDS queries the published
DDIM timesteps exactly; DiffusionMBIR runs the published VE noise range."""

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
    r = dds(op, y, den, steps=50, seed=0, chunk=2)
    assert seen == [float(t) for t in range(980, -1, -20)]
    assert r.info["timesteps"] == list(range(980, -1, -20))
    assert torch.isfinite(r.x).all()


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
    r = mbir(op, y, den, steps=3, seed=0)
    assert sigmas[0] == pytest.approx(378.0) and sigmas[-1] == pytest.approx(0.01)
    assert len(sigmas) == 6 and r.info["nfe_per_slice"] == 6 and torch.isfinite(r.x).all()
