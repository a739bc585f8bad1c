"""Sampler machinery: prior batches, seeded noise, state files, configs, intensity, conventions."""

from pathlib import Path

import pytest
import torch
import yaml

from matrix_operator import random_matrix_operator
import medrecon.tasks
from medrecon.errors import DataError, UserError
from medrecon.physics.ct import make_ct_operator, parallel_geometry, sparse_view_angles
from medrecon.physics.mri import SenseOperator, birdcage_maps
from medrecon.io.sampler_state import DirectoryStateStore
from medrecon.samplers.state import MemoryStateStore
from medrecon.samplers.noise import NoiseSource
from medrecon.samplers.prior_calls import from_prior_batch, prior_chunked, to_prior_batch
from medrecon.samplers.config import (TASK_DEFAULTS, TASKS, DdsConfig, MbirConfig,
                                      config_for_task, load_config)
from medrecon.samplers.conventions import (PUBLISHED_CT_NORM_SQ, absolute_weights,
                                           operator_norm_sq, published_to_relative)
from medrecon.samplers.intensity import IntensityMap, mri_intensity, window_map

from denoisers import GaussianMixtureDenoiser, template_set

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_prior_batch_round_trip_and_layout() -> None:
    x = torch.randn(3, 4, 5, dtype=torch.complex64)
    b = to_prior_batch(x)
    assert b.shape == (6, 4, 5) and b.dtype == torch.float32
    assert torch.equal(b[2], x[1].real) and torch.equal(b[3], x[1].imag)
    assert torch.equal(from_prior_batch(b, torch.complex64), x)
    r = torch.randn(3, 4, 5)
    assert to_prior_batch(r) is r and from_prior_batch(r, None) is r


def test_prior_chunked_independent_of_chunk() -> None:
    den = GaussianMixtureDenoiser(template_set(8), tau=0.05)
    x = torch.randn(7, 8, 8)
    full = prior_chunked(den, x, 0.3, 7)
    assert torch.allclose(prior_chunked(den, x, 0.3, 2), full, atol=1e-6)
    score = prior_chunked(den, x, 0.3, 3, kind="score")
    assert torch.allclose(score, (full - x) / 0.09, atol=1e-4)
    with pytest.raises(UserError):
        prior_chunked(den, x, 0.3, 0)


def test_noise_source_seeded_and_resumable() -> None:
    a, b = NoiseSource(5), NoiseSource(5)
    first = a.normal((2, 3), torch.float64, torch.device("cpu"))
    assert torch.equal(first, b.normal((2, 3), torch.float64, torch.device("cpu")))
    state = a.get_state()
    nxt = a.normal((4,), torch.float32, torch.device("cpu"))
    c = NoiseSource(0)
    c.set_state(state)
    assert torch.equal(c.normal((4,), torch.float32, torch.device("cpu")), nxt)
    assert not torch.equal(NoiseSource(6).normal((2, 3), torch.float64, torch.device("cpu")), first)
    with pytest.raises(UserError):
        NoiseSource(-1)


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_state_store_round_trip_and_children(kind: str, tmp_path: Path) -> None:
    store = DirectoryStateStore(tmp_path / "st") if kind == "directory" else MemoryStateStore()
    assert not store.exists() and store.children() == []
    t = {"x": torch.randn(2, 3), "z": torch.randn(2, 1, 3, dtype=torch.complex64)}
    store.child("rank-001-of-002").save(2, t, {"identity": {"b": 2}})
    assert store.children() == ["rank-001-of-002"] and not store.exists()
    step, loaded, doc = store.child("rank-001-of-002").load()
    assert step == 2 and doc["identity"] == {"b": 2} and torch.equal(loaded["z"], t["z"])
    loaded["x"].add_(1.0)                                  # the store keeps its own copy
    assert torch.equal(store.child("rank-001-of-002").load()[1]["x"], t["x"])


def test_directory_state_store_round_trip(tmp_path: Path) -> None:
    store = DirectoryStateStore(tmp_path / "st")
    assert not store.exists()
    t = {"x": torch.randn(2, 3), "z": torch.randn(2, 1, 3, dtype=torch.complex64),
         "rng": NoiseSource(1).get_state()}
    store.save(3, t, {"method": "dds", "identity": {"a": 1}})
    store.save(5, t, {"method": "dds", "identity": {"a": 1}})
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == ["state-000005.pt", "state.json"]
    step, loaded, doc = store.load()
    assert step == 5 and doc["identity"] == {"a": 1}
    assert all(torch.equal(loaded[k], t[k]) for k in t)
    (tmp_path / "st" / "state.json").write_text("{not json")
    with pytest.raises(DataError):
        store.load()


def test_configs_on_disk_match_task_defaults() -> None:
    files = sorted(CONFIGS.glob("dds_*.yaml")) + sorted(CONFIGS.glob("mbir_*.yaml"))
    assert len(files) >= 5
    seen = set()
    for path in files:
        method, cfg = load_config(path)
        assert isinstance(cfg, DdsConfig if method == "dds" else MbirConfig)
        task = yaml.safe_load(path.read_text())["task"]
        if "published" in path.name:
            continue
        if "adapt" in path.name:     # the task defaults plus the measured adaptation recipe
            assert cfg.adapt and cfg == config_for_task(method, task, **{k: getattr(cfg, k) for k in
                                                                        vars(cfg) if k.startswith("adapt")})
            continue
        assert cfg == config_for_task(method, task), path.name
        seen.add((method, task))
    assert seen == {(m, t) for m in ("dds", "mbir") for t in TASKS}
    _, pub = load_config(CONFIGS / "mbir_published_ct.yaml")
    assert (pub.steps, pub.snr, pub.cg_iterations, pub.boundary, pub.corrector_norm, pub.chunk) == \
        (2000, 0.16, 1, "circular", "chunk", 12)


def test_bad_configs_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: dds\nsettings:\n  steps: 10\n  lamda_rel: 0.1\n")
    with pytest.raises(DataError, match="bad.yaml.*lamda_rel"):
        load_config(bad)
    bad.write_text("method: dds\nsettings:\n  eta: 1.5\n")
    with pytest.raises(DataError, match="eta"):
        load_config(bad)
    bad.write_text("method: dds\nsteps: 10\n")
    with pytest.raises(DataError, match="top-level"):
        load_config(bad)
    with pytest.raises(UserError, match="task"):
        config_for_task("dds", "pet")
    assert set(TASK_DEFAULTS["dds"]) == set(TASKS) == set(medrecon.tasks.TASKS)


def test_published_conversion_and_absolute_weights() -> None:
    lam, rho = published_to_relative(0.04, 10.0, 8)
    assert lam == pytest.approx(0.04 * 16 / (torch.pi * PUBLISHED_CT_NORM_SQ[8]))
    assert rho == pytest.approx(0.02564, rel=1e-3)
    op = make_ct_operator(parallel_geometry((32, 32), sparse_view_angles(8)), backend="astra")
    w = absolute_weights(op, 1e-4, 0.02, 3.0)
    assert w.op_norm_sq == pytest.approx(operator_norm_sq(op))
    assert 0.9 * 8 * 32 < w.op_norm_sq < 1.1 * 8 * 32          # ||A||^2 ~ views x width
    assert (w.lam, w.rho, w.gamma) == pytest.approx((1e-4 * w.op_norm_sq, 0.02 * w.op_norm_sq,
                                                      3.0 / w.op_norm_sq))
    # the relative convention is invariant to the operator's scale (e.g. the pixel size)
    op2 = make_ct_operator(parallel_geometry((32, 32), sparse_view_angles(8), pixel_size=2.0),
                           backend="astra")
    assert operator_norm_sq(op2) == pytest.approx(4 * w.op_norm_sq, rel=1e-3)


def test_window_map_is_exact_on_measurements() -> None:
    op = random_matrix_operator(12, (4, 4), torch.float64)
    card = {"name": "t", "intensity": {"convention": "window01", "window": [-1000.0, 1000.0]}}
    m = window_map(card)
    x_p = torch.rand(3, 4, 4, dtype=torch.float64)
    x = m.image_from_prior(x_p)
    assert torch.allclose(m.data_to_prior(op, op(x)), op(x_p), atol=1e-10)
    assert torch.allclose(m.data_from_prior(op, op(x_p)), op(x), atol=1e-8)
    assert torch.allclose(m.image_to_prior(x), x_p, atol=1e-12)
    hu_to_mu = m.then(0.02, 0.02 / 1000)  # mu = mu_w (1 + HU / 1000), mu_w = 0.02 / mm
    assert hu_to_mu.window == pytest.approx((0.0, 0.04))
    with pytest.raises(DataError):
        window_map([1.0, 1.0])


def test_mri_intensity_normalises_the_99th_percentile() -> None:
    n = 16
    op = SenseOperator(birdcage_maps(4, (n, n)), None)
    x = torch.complex(torch.rand(2, n, n), torch.zeros(2, n, n)) * 37.0
    m = mri_intensity(op, op(x))
    x_p = m.image_to_prior(x)
    assert float(torch.quantile(x_p.abs().flatten(), 0.99)) == pytest.approx(1.0, rel=1e-3)
    assert m.lo == 0.0
    with pytest.raises(UserError):
        IntensityMap(1.0, 2.0).data_to_prior(op, op(x))


def test_prior_map_for_ct_measurement_in_hu() -> None:
    """A prior on [-1000, 1000] HU equals the working units; one on [-1200, 800] is shifted."""
    import numpy as np

    from medrecon.samplers.intensity import prior_map_for_measurement
    from medrecon.tasks import CTOptions, build_operator, data_in_working_units, simulate
    from medrecon.volume import Volume

    hu = np.linspace(-1000, 500, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    m = simulate(Volume.from_array(hu, modality="CT", units="HU"), "sparse-view-ct",
                 ct=CTOptions(views=8))
    op = build_operator(m, backend="astra")
    y_w = data_in_working_units(m, op)
    same = prior_map_for_measurement(m, {"intensity": {"window": [-1000, 1000], "units": "HU"}})
    assert (same.lo, same.scale) == pytest.approx((0.0, 1.0))
    imap = prior_map_for_measurement(m, {"intensity": {"window": [-1200, 800], "units": "HU"}})
    p = torch.from_numpy((hu + 1200) / 2000)
    assert torch.allclose(imap.data_to_prior(op, y_w), op(p), atol=1e-3 * float(y_w.abs().max()))
    w = torch.from_numpy((hu + 1000) / 2000)
    assert torch.allclose(imap.image_from_prior(p), w, atol=1e-6)
    assert prior_map_for_measurement(m, None) == IntensityMap(0.0, 1.0)
