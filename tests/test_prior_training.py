"""The 2D prior: preconditioning identities, VE/VP conversions, training, resume, checkpoints."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medrecon.errors import DataError, UserError
from medrecon.prior.card import training_lineage
from medrecon.prior.checkpoint import load_prior, read_card, save_prior
from medrecon.prior.data import SliceSet, draw_batch, from_phantoms
from medrecon.prior.network import EDMUNetDenoiser, UNetConfig
from medrecon.prior.train import Trainer, TrainConfig, edm_loss

TINY = dict(image_size=32, channels=(8, 16), attention_levels=(False, False), num_res_blocks=1,
            num_head_channels=16, norm_num_groups=4)


def tiny_config(**kw) -> TrainConfig:
    return TrainConfig(network=UNetConfig(**TINY), steps=6, batch_size=4, lr=1e-3, ema_decay=0.9,
                       checkpoint_every=3, val_every=3, **kw)


@pytest.fixture(scope="module")
def slices() -> SliceSet:
    return from_phantoms(2, 32, slices=4, n_val=1)


def test_edm_denoiser_limits() -> None:
    """D(x, sigma) -> x as sigma -> 0 (c_skip -> 1, c_out -> 0); the output has the input's shape."""
    model = EDMUNetDenoiser(UNetConfig(**TINY)).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        tiny = model.denoise(x, torch.full((3,), 1e-4))
        assert tiny.shape == x.shape
        assert float((tiny - x).abs().max()) < 1e-3


def test_ve_vp_conversions_agree() -> None:
    """eps_vp(x_vp, abar) = -sigma * score(x_ve, sigma) with x_ve = x_vp / sqrt(abar)."""
    torch.manual_seed(0)
    model = EDMUNetDenoiser(UNetConfig(**TINY)).eval()
    x0 = torch.rand(2, 1, 32, 32)
    abar = torch.tensor([0.3, 0.9])
    noise = torch.randn_like(x0)
    x_vp = abar.sqrt().reshape(-1, 1, 1, 1) * x0 + (1 - abar).sqrt().reshape(-1, 1, 1, 1) * noise
    sigma = ((1 - abar) / abar).sqrt()
    with torch.no_grad():
        eps = model.eps_vp(x_vp, abar)
        score = model.score(x_vp / abar.sqrt().reshape(-1, 1, 1, 1), sigma)
        x0_vp = (x_vp - (1 - abar).sqrt().reshape(-1, 1, 1, 1) * eps) / abar.sqrt().reshape(-1, 1, 1, 1)
        x0_ve = model.denoise(x_vp / abar.sqrt().reshape(-1, 1, 1, 1), sigma)
    torch.testing.assert_close(eps, -sigma.reshape(-1, 1, 1, 1) * score, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x0_vp, x0_ve, rtol=1e-4, atol=1e-4)  # the same Tweedie estimate


def _denoising_mse(model, batch: torch.Tensor) -> float:
    """Mean denoising MSE at fixed noise levels with fixed noise (a deterministic training probe)."""
    gen = torch.Generator().manual_seed(1)
    total = 0.0
    with torch.no_grad():
        for s in (0.05, 0.2, 0.5):
            noise = torch.randn(batch.shape, generator=gen)
            sigma = torch.full((batch.shape[0],), s)
            total += float(((model.denoise(batch + s * noise, sigma) - batch) ** 2).mean())
    return total / 3


def test_training_reduces_loss(slices, tmp_path) -> None:
    cfg = tiny_config(seed=3)
    cfg.steps = 30
    trainer = Trainer(cfg, slices, tmp_path / "run")
    batch = draw_batch(slices.val, 16, torch.Generator().manual_seed(0), 0.0)
    before = _denoising_mse(trainer.model, batch)
    trainer.fit(progress=False)
    trainer.model.eval()
    after = _denoising_mse(trainer.model, batch)
    assert after < 0.7 * before, (before, after)


def test_resume_equals_uninterrupted(slices, tmp_path) -> None:
    straight = Trainer(tiny_config(), slices, tmp_path / "a")
    straight.fit(progress=False)
    first = Trainer(tiny_config(), slices, tmp_path / "b")
    first.fit(steps=3, progress=False)  # checkpoint at step 3
    resumed = Trainer(tiny_config(), slices, tmp_path / "b")
    assert resumed.load_checkpoint() and resumed.step == 3
    resumed.fit(progress=False)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_learning_rate_schedule_and_its_resume(slices, tmp_path) -> None:
    """Constant ``lr``, then a cosine decay to ``lr_final`` over the last ``lr_decay_steps`` of the
    recipe; a function of the step, so an interrupted run resumes on the same schedule."""
    cfg = tiny_config(lr_final=1e-4, lr_decay_steps=4)
    t = Trainer(cfg, slices, tmp_path / "s")
    rates = []
    for step in range(7):
        t.step = step
        rates.append(t.learning_rate())
    assert rates[:3] == [1e-3] * 3
    assert rates[4] == pytest.approx(1e-4 + 0.5 * 9e-4)          # half-way down the cosine
    assert rates[5] == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 0.75)))
    assert rates[6] == pytest.approx(1e-4)                       # the end of the recipe
    assert all(a > b for a, b in zip(rates[2:], rates[3:]))
    straight = Trainer(cfg, slices, tmp_path / "a")
    straight.fit(progress=False)
    assert straight.opt.param_groups[0]["lr"] == pytest.approx(rates[5])
    first = Trainer(cfg, slices, tmp_path / "b")
    first.fit(steps=3, progress=False)
    resumed = Trainer(cfg, slices, tmp_path / "b")
    assert resumed.load_checkpoint()
    resumed.fit(progress=False)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for bad in ({"lr_decay_steps": 4}, {"lr_decay_steps": 4, "lr_final": 1.0},
                {"lr_decay_steps": -1, "lr_final": 0.0}):
        with pytest.raises(ValueError, match="lr_"):
            TrainConfig.from_dict({"lr": 1e-3, **bad})


def _card(name="t", window=(0.0, 1.0)) -> dict:
    return {"name": name, "architecture": {"family": "edm-unet", "config": UNetConfig(**TINY).to_dict()},
            "parameterisation": "edm", "noise": {"sigma_min": 0.002, "sigma_max": 80.0}, "image_size": 32,
            "intensity": {"convention": "window01", "window": list(window), "units": "a.u."},
            "training": {"command": "test"}}


def test_checkpoint_round_trip_and_refusals(tmp_path) -> None:
    model = EDMUNetDenoiser(UNetConfig(**TINY))
    out = save_prior(tmp_path / "p", _card(), model.state_dict())
    loaded = load_prior(out)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.card["name"] == "t" and read_card(out)["weights"]["raw"] is None
    with pytest.raises(UserError, match="already exists"):
        save_prior(tmp_path / "p", _card(), model.state_dict())
    with pytest.raises(DataError, match="window"):
        load_prior(out, expect_window=(-1000, 1000))
    with pytest.raises(DataError, match="32x32"):
        load_prior(out, expect_image_size=128)
    # an architecture that does not match the weights
    card = json.loads((out / "model_card.json").read_text())
    card["architecture"]["config"]["channels"] = [8, 32]
    (out / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(DataError, match="do not match the architecture"):
        load_prior(out)
    (out / "model_card.json").write_text("{}")
    with pytest.raises(DataError, match="lacks"):
        load_prior(out)
    with pytest.raises(UserError, match="unknown prior"):
        load_prior(tmp_path / "nothing-here")


def test_safetensors_never_unpickle(tmp_path) -> None:
    model = EDMUNetDenoiser(UNetConfig(**TINY))
    out = save_prior(tmp_path / "p", _card(), model.state_dict())
    (out / "ema.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(DataError, match="cannot read safetensors"):
        load_prior(out)


def test_train_command_writes_a_loadable_prior(tmp_path) -> None:
    from medrecon.cli import main
    cfg = Path(__file__).parents[1] / "configs" / "train_tiny.yaml"
    out = tmp_path / "prior"
    assert main(["--quiet", "train", "--config", str(cfg), "--data", "phantoms", "--volumes", "2",
                 "--steps", "4", "--output", str(out)]) == 0
    card = read_card(out)
    command = "medrecon --quiet train --config " + str(cfg)
    assert card["training"]["steps"] == 4 and card["training"]["command"].startswith(command)
    assert card["provenance"]["command"] == card["training"]["command"]
    assert card["intensity"]["window"] == [0.0, 1.0]
    assert (out / "loss_curve.png").stat().st_size > 0
    assert load_prior(out).image_size == 32


def test_init_from_continues_the_weights_and_the_lineage(tmp_path) -> None:
    """``--init-from``: a fresh run starts from a prior's raw (training) weights for the model and
    its EMA weights for the EMA, and its card counts all the training behind the weights."""
    from safetensors.torch import load_file

    from medrecon.cli import main
    cfg = Path(__file__).parents[1] / "configs" / "train_tiny.yaml"
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--quiet", "train", "--config", str(cfg), "--data", "phantoms", "--volumes", "2"]
    assert main([*common, "--steps", "3", "--output", str(first)]) == 0
    t = Trainer(tiny_config(), from_phantoms(2, 32, slices=4, n_val=1), tmp_path / "run")
    init = t.init_from_prior(str(first))
    raw, ema = load_file(str(first / "raw.safetensors")), load_file(str(first / "ema.safetensors"))
    assert init["copied"] == len(raw) and not init["fresh"]
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, raw[k]), k
    for k, v in t.ema.state_dict().items():
        assert torch.equal(v, ema[k]), k
    assert (init["total_steps_before"], init["total_samples_before"]) == (3, 3 * 4)
    assert main([*common, "--steps", "2", "--init-from", str(first), "--output", str(second)]) == 0
    training = read_card(second)["training"]
    assert training["steps"] == 2 and training["initialised_from"]["steps_before"] == 3
    assert (training["total_steps"], training["total_samples"]) == (5, 5 * 4)
    assert training_lineage(read_card(second)) == (5, 20)


_DDP_SCRIPT = r"""
import os, sys, json, torch, torch.distributed as dist
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from test_prior_training import tiny_config
from medrecon.prior.data import from_phantoms
from medrecon.prior.train import Trainer
dist.init_process_group("gloo")
cfg = tiny_config(); cfg.steps = 1; cfg.checkpoint_every = 100; cfg.val_every = 100
t = Trainer(cfg, from_phantoms(2, 32, slices=4, n_val=1), sys.argv[2])
loss = t.train_step()
flat = torch.cat([p.detach().flatten() for p in t.model.parameters()])
json.dump({"loss": loss, "weights": flat.tolist()}, open(os.path.join(sys.argv[2], f"rank{dist.get_rank()}.json"), "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_two_ranks_match_single_process(slices, tmp_path) -> None:
    """gloo, 2 processes: identical weights after a step; loss equals one process on the same global batch."""
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)]))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                    str(script), str(Path(__file__).parent), str(tmp_path)], check=True, env=env, timeout=300)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["weights"] == r1["weights"]
    # single process on the same global batch: the two ranks' half-batches, concatenated
    cfg = tiny_config(); cfg.steps = 1
    single = Trainer(cfg, from_phantoms(2, 32, slices=4, n_val=1), tmp_path / "single")
    halves = []
    for rank in (0, 1):
        single.rank = rank
        gen = single._generator(0)
        x0 = draw_batch(single.data.train, 2, gen, cfg.max_rotation_deg, cfg.crop)
        halves.append((x0, gen))
    single.rank = 0
    losses = [float(edm_loss(single.model, x0, gen, cfg.p_mean, cfg.p_std)) for x0, gen in halves]
    assert sum(losses) / 2 == pytest.approx(r0["loss"], rel=1e-5)
    assert r0["loss"] == pytest.approx(r1["loss"], rel=1e-6)


def test_train_from_a_data_manifest(tmp_path) -> None:
    """--data MANIFEST.yaml --data-root DIR: files verified, volumes loaded, licence recorded."""
    import yaml

    from medrecon.cli import main
    from medrecon.io import save_volume
    from medrecon.phantoms import random_ellipsoids
    from medrecon.volume import Volume

    root = tmp_path / "data"
    for k in range(2):
        save_volume(Volume.from_array(random_ellipsoids((4, 32, 32), seed=k)), root / f"v{k}.nii.gz")
    manifest = {"schema": "medrecon-manifest/1", "name": "toy", "title": "Toy volumes", "description": "two phantoms",
                "modality": "OT", "licence": {"name": "CC0", "terms": "none"}, "obtain": {"instructions": "generated"},
                "checksums": "user-supplied", "groups": [{"pattern": "*.nii.gz", "min_count": 2}],
                "preprocessing": []}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(manifest))
    cfg = Path(__file__).parents[1] / "configs" / "train_tiny.yaml"
    out = tmp_path / "prior"
    assert main(["--quiet", "train", "--config", str(cfg), "--data", str(path), "--data-root", str(root),
                 "--steps", "2", "--output", str(out)]) == 0
    card = read_card(out)
    assert card["training"]["licence"] == "CC0" and "toy" in card["training"]["provenance"]
    assert card["training"]["split"].startswith("by volume")
    assert main(["train", "--config", str(cfg), "--data", str(path), "--output", str(tmp_path / "p2")]) == 2


# -- the EMA update and the loss, against hand computations ---------------------------------------
def _params(module) -> list:
    return [p.detach().clone().to(torch.float64) for p in module.parameters()]


def test_ema_is_the_lerp_of_the_trained_weights(slices, tmp_path) -> None:
    """ema_t = d ema_{t-1} + (1 - d) w_t after every optimiser step (w_t: the weights after step
    t), starting from the initial weights; the EMA never feeds back into the weights."""
    d = 0.75
    cfg = tiny_config()
    cfg.ema_decay = d
    trainer = Trainer(cfg, slices, tmp_path / "a")
    ema = _params(trainer.model)                                          # ema_0 = w_0
    assert all(torch.equal(e, p) for e, p in zip(ema, _params(trainer.ema)))
    weights = []
    for _ in range(2):
        trainer.train_step()
        w = _params(trainer.model)
        weights.append(w)
        ema = [d * e + (1 - d) * p for e, p in zip(ema, w)]
        for want, got in zip(ema, _params(trainer.ema)):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # the step moved the weights, so the check above is not of a constant
    assert max(float((a - b).abs().max()) for a, b in zip(weights[0], weights[1])) > 1e-5
    # a run with another decay trains the same weights (the EMA is a read-only average)
    other_cfg = tiny_config()
    other_cfg.ema_decay = 0.0
    other = Trainer(other_cfg, slices, tmp_path / "b")
    other.train_step()
    other.train_step()
    for a, b in zip(weights[-1], _params(other.model)):
        assert torch.equal(a, b)
    for a, b in zip(_params(other.ema), weights[-1]):                      # decay 0: the weights
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_validation_loss_scores_the_ema_weights(slices, tmp_path) -> None:
    trainer = Trainer(tiny_config(), slices, tmp_path / "a")
    trainer.train_step()
    with torch.no_grad():                 # make the EMA far from the weights
        for e in trainer.ema.parameters():
            e.mul_(0.5)
    gen = torch.Generator().manual_seed(12345)
    idx = torch.randint(0, slices.val.shape[0], (32,), generator=gen)
    x0 = slices.val[idx][:, None]
    cfg = trainer.config
    with torch.no_grad():
        ema_loss = float(edm_loss(trainer.ema, x0, gen, cfg.p_mean, cfg.p_std))
    assert trainer.validation_loss() == pytest.approx(ema_loss, rel=1e-6)
    gen = torch.Generator().manual_seed(12345)
    torch.randint(0, slices.val.shape[0], (32,), generator=gen)
    with torch.no_grad():
        model_loss = float(edm_loss(trainer.model, x0, gen, cfg.p_mean, cfg.p_std))
    assert abs(model_loss - ema_loss) > 1e-3 * ema_loss


def test_edm_loss_is_the_weighted_denoising_error() -> None:
    """loss = mean over the batch of (sigma^2 + sd^2) / (sigma sd)^2 * mean (D(x0 + sigma n) - x0)^2
    with log sigma ~ N(p_mean, p_std^2), n ~ N(0, I) drawn in that order from the generator."""
    torch.manual_seed(0)
    model = EDMUNetDenoiser(UNetConfig(**TINY, sigma_data=0.3)).eval()
    x0 = torch.rand(3, 1, 32, 32, dtype=torch.float32)
    p_mean, p_std = -0.4, 0.7
    with torch.no_grad():
        got = float(edm_loss(model, x0, torch.Generator().manual_seed(9), p_mean, p_std))
        gen = torch.Generator().manual_seed(9)
        sigma = torch.exp(p_mean + p_std * torch.randn(3, generator=gen))
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.reshape(-1, 1, 1, 1)
        err = ((model.denoise(x0 + s * noise, sigma) - x0) ** 2).mean(dim=(1, 2, 3))
        weight = (sigma**2 + 0.3**2) / (sigma * 0.3) ** 2
    assert got == pytest.approx(float((weight * err).mean()), rel=1e-4)


def test_two_steps_are_clipped_adamw_on_the_edm_loss(slices, tmp_path) -> None:
    """Each step: the EDM loss of the step's batch, gradients scaled to norm <= grad_clip, one
    AdamW step at the step's learning rate (computed here with torch.optim.AdamW directly)."""
    import copy

    cfg = tiny_config(lr_final=2e-4, lr_decay_steps=2)
    cfg.steps, cfg.grad_clip, cfg.weight_decay = 3, 0.05, 0.01
    trainer = Trainer(cfg, slices, tmp_path / "a")
    model = copy.deepcopy(trainer.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # steps 0 and 1 at lr; step 2 half-way down the cosine from lr to lr_final
    lrs = [1e-3, 1e-3, 2e-4 + 0.5 * (1e-3 - 2e-4)]
    for step, lr in enumerate(lrs):
        gen = trainer._generator(0)            # the step's seeded draw (same numbers here)
        x0 = draw_batch(slices.train, cfg.batch_size, gen, cfg.max_rotation_deg, cfg.crop, cfg.max_zoom)
        loss = edm_loss(model, x0, gen, cfg.p_mean, cfg.p_std)
        opt.zero_grad()
        loss.backward()
        norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in model.parameters()))
        assert norm > 2 * cfg.grad_clip                           # clipping is active
        for p in model.parameters():
            p.grad.mul_(cfg.grad_clip / (norm + 1e-6))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        assert trainer.train_step() == pytest.approx(float(loss.detach()), rel=1e-5)
        assert trainer.step == step + 1
        for a, b in zip(model.parameters(), trainer.model.parameters()):
            torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-4, atol=1e-6, msg=f"step {step}")


def test_every_step_rank_and_purpose_draws_its_own_numbers(slices, tmp_path) -> None:
    """The seeded generators: a function of (seed, step, rank, purpose), each of which changes
    the numbers (a resumed run at step s draws what the uninterrupted one drew at s)."""
    t = Trainer(tiny_config(), slices, tmp_path / "g")

    def draw(seed=0, step=0, rank=0, purpose=0) -> torch.Tensor:
        t.config.seed, t.step, t.rank = seed, step, rank
        return torch.randn(8, generator=t._generator(purpose))

    base = draw()
    assert torch.equal(base, draw())
    for other in (draw(seed=1), draw(step=1), draw(rank=1), draw(purpose=1)):
        assert not torch.equal(base, other)
    assert not torch.equal(draw(step=1), draw(rank=1)) and not torch.equal(draw(step=2), draw(step=1))
