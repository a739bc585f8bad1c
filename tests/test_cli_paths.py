"""The command line's own paths: every error exit of phantom, evaluate, reconstruct and train
(exit 2, one line, nothing written), interrupts (exit 130) and resume through the CLI, the
command list, and demo.

The interrupt tests run the real CLI in a subprocess and send it SIGINT while DDS samples (with a
tiny random-weight 32x32 prior, so a step takes milliseconds); the resumed run must equal an
uninterrupted one bit for bit, for one sample and for ``--samples 3`` interrupted in the second
sample. Each DDS run here uses the task's default warm start (ADMM-TV, ``start_sigma`` 0.3).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medrecon import cli
from medrecon.cli import main

TINY = dict(image_size=32, channels=(8, 16), attention_levels=(False, False), num_res_blocks=1,
            num_head_channels=16, norm_num_groups=4)


def tiny_prior(directory: Path, seed: int = 1) -> Path:
    """A random-weight (seeded) EDM U-Net prior directory for 32x32 slices in [0, 1] a.u."""
    from medrecon.prior.checkpoint import save_prior
    from medrecon.prior.network import EDMUNetDenoiser, UNetConfig

    torch.manual_seed(seed)
    model = EDMUNetDenoiser(UNetConfig(**TINY))
    card = {"name": "tiny-test", "architecture": {"family": "edm-unet",
                                                   "config": UNetConfig(**TINY).to_dict()},
            "parameterisation": "edm", "noise": {"sigma_min": 0.002, "sigma_max": 80.0},
            "image_size": 32,
            "intensity": {"convention": "window01", "window": [0.0, 1.0], "units": "a.u."},
            "training": {"command": "tests/test_cli_paths.py (random weights)"}}
    return save_prior(directory, card, model.state_dict())


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and the SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("paths")
    run = lambda *a: main(["--quiet", *a])   # noqa: E731
    assert run("phantom", "--shape", "4", "32", "32", "--output", str(d / "ph.nii.gz")) == 0
    assert run("phantom", "--shape", "4", "16", "16", "--output", str(d / "small.nii.gz")) == 0
    assert run("phantom", "--shape", "4", "32", "32", "--contrast", "mr",
               "--output", str(d / "mr.nii.gz")) == 0
    assert run("simulate", "--task", "sparse-view-ct", "--views", "8", "--input",
               str(d / "ph.nii.gz"), "--output", str(d / "ct.h5")) == 0
    tiny_prior(d / "tiny")
    (d / "dds_mri.yaml").write_text("method: dds\ntask: cs-mri\nsettings:\n  steps: 3\n")
    (d / "broken.yaml").write_text("method: tv\nsettings: [1, 2\n")
    (d / "train_typo.yaml").write_text("network: {image_size: 32}\nstepz: 3\n")
    (d / "manifest.yaml").write_text("name: x\n")
    return d


TRAIN = str(Path(__file__).resolve().parents[1] / "configs" / "train_tiny.yaml")

# (argv, text the one-line message must contain); paths are relative to the workspace
ERRORS = {
    # phantom
    "phantom-output-suffix": (["phantom", "--output", "p.txt"], "expected a .nii or .nii.gz"),
    "phantom-empty-shape": (["phantom", "--shape", "0", "8", "8", "--output", "p.nii.gz"],
                            "three positive sizes"),
    "phantom-zero-spacing": (["phantom", "--spacing", "0", "1", "1", "--output", "p.nii.gz"],
                             "--spacing 0.0 1.0 1.0"),
    "phantom-nan-spacing": (["phantom", "--spacing", "nan", "1", "1", "--output", "p.nii.gz"],
                            "--spacing nan"),
    "phantom-negative-seed": (["phantom", "--kind", "ellipsoids", "--seed", "-1", "--output",
                               "p.nii.gz"], "seed must be >= 0"),
    "phantom-exists": (["phantom", "--output", "ph.nii.gz"], "ph.nii.gz already exists"),
    # evaluate
    "evaluate-missing": (["evaluate", "--reference", "nope.nii.gz", "--recon", "ph.nii.gz"],
                         "nope.nii.gz does not exist"),
    "evaluate-shapes": (["evaluate", "--grid", "strict", "--reference", "ph.nii.gz", "--recon", "small.nii.gz",
                         "--json", "e.json"], "different voxel grids (shapes [4, 32, 32] vs [4, 16, 16])"),
    "evaluate-shapes-ignoring-geometry": (["evaluate", "--ignore-geometry", "--reference", "ph.nii.gz", "--recon",
                                           "small.nii.gz", "--json", "e.json"], "has shape (4, 16, 16)"),
    "evaluate-range": (["evaluate", "--reference", "ph.nii.gz", "--recon", "ph.nii.gz",
                        "--data-range", "-1", "--json", "e.json"], "data range must be positive"),
    "evaluate-json-exists": (["evaluate", "--reference", "ph.nii.gz", "--recon", "ph.nii.gz",
                              "--json", "ph.nii.gz"], "--json ph.nii.gz is the input"),
    # reconstruct
    "reconstruct-output-suffix": (["reconstruct", "--input", "ct.h5", "--method", "fbp",
                                   "--output", "r.txt"], "expected a .nii or .nii.gz"),
    "reconstruct-not-hdf5": (["reconstruct", "--input", "ph.nii.gz", "--method", "fbp",
                              "--output", "r.nii.gz"], "ph.nii.gz is not an HDF5 file"),
    "reconstruct-config-method": (["reconstruct", "--input", "ct.h5", "--method", "tv", "--config",
                                   "dds_mri.yaml", "--output", "r.nii.gz"], "is for method 'dds'"),
    "reconstruct-config-task": (["reconstruct", "--input", "ct.h5", "--method", "dds", "--config",
                                 "dds_mri.yaml", "--output", "r.nii.gz"], "is for task 'cs-mri'"),
    "reconstruct-config-yaml": (["reconstruct", "--input", "ct.h5", "--method", "tv", "--config",
                                 "broken.yaml", "--output", "r.nii.gz"], "broken.yaml is not valid YAML"),
    "reconstruct-config-missing": (["reconstruct", "--input", "ct.h5", "--method", "tv",
                                    "--config", "nope.yaml", "--output", "r.nii.gz"],
                                   "nope.yaml does not exist"),
    "reconstruct-set-syntax": (["reconstruct", "--input", "ct.h5", "--method", "sirt", "--set",
                                "iterations", "--output", "r.nii.gz"], "expected KEY=VALUE"),
    "reconstruct-set-type": (["reconstruct", "--input", "ct.h5", "--method", "sirt", "--set",
                              "iterations=many", "--output", "r.nii.gz"], "iterations must be"),
    "reconstruct-unknown-method": (["reconstruct", "--input", "ct.h5", "--method", "nosuch",
                                    "--output", "r.nii.gz"], "unknown method 'nosuch'"),
    "reconstruct-output-exists": (["reconstruct", "--input", "ct.h5", "--method", "fbp",
                                   "--output", "ph.nii.gz"], "ph.nii.gz already exists"),
    "reconstruct-unknown-prior": (["reconstruct", "--input", "ct.h5", "--method", "dds", "--prior",
                                   "nosuch", "--output", "r.nii.gz"], "unknown prior 'nosuch'"),
    "reconstruct-samples": (["reconstruct", "--input", "ct.h5", "--method", "dds", "--prior", "tiny",
                             "--samples", "0", "--output", "r.nii.gz"], "samples must be"),
    "reconstruct-steps": (["reconstruct", "--input", "ct.h5", "--method", "mbir", "--prior", "tiny",
                           "--set", "steps=0", "--output", "r.nii.gz"], "steps must be a positive"),
    "reconstruct-seed": (["reconstruct", "--input", "ct.h5", "--method", "dds", "--prior", "tiny",
                          "--seed", "-2", "--output", "r.nii.gz"], "seed must be an integer >= 0"),
    "reconstruct-resume-no-state": (["reconstruct", "--input", "ct.h5", "--method", "dds", "--prior",
                                     "tiny", "--resume", "--output", "r.nii.gz"],
                                    "resume needs a state store"),
    # train
    "train-config-missing": (["train", "--config", "nope.yaml", "--data", "phantoms", "--output",
                              "p1"], "nope.yaml does not exist"),
    "train-config-key": (["train", "--config", "train_typo.yaml", "--data", "phantoms", "--output",
                          "p1"], "unknown training config keys ['stepz']"),
    "train-config-yaml": (["train", "--config", "broken.yaml", "--data", "phantoms", "--output",
                           "p1"], "--config broken.yaml"),
    "train-output-exists": (["train", "--config", TRAIN, "--data", "phantoms", "--output", "tiny"],
                            "tiny already exists"),
    "train-data-missing": (["train", "--config", TRAIN, "--data", "nope.nii.gz", "--output", "p2"],
                           "nope.nii.gz does not exist"),
    "train-manifest-root": (["train", "--config", TRAIN, "--data", "manifest.yaml", "--output",
                             "p3"], "pass --data-root"),
    "train-resume-nothing": (["train", "--config", TRAIN, "--data", "phantoms", "--resume",
                              "--output", "p4"], "no checkpoint in p4.run"),
    "train-init-from": (["train", "--config", TRAIN, "--data", "phantoms", "--init-from", "nosuch",
                         "--output", "p5"], "unknown prior 'nosuch'"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error_exit_is_one_line_and_writes_nothing(case, ws, capsys, monkeypatch) -> None:
    argv, text = ERRORS[case]
    monkeypatch.chdir(ws)
    before = snapshot(ws)
    assert main(["--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"medrecon {argv[0]}: error: ") and "\n" not in err, err
    assert text in err, err
    assert snapshot(ws) == before, "the failed command changed or wrote files"


def test_keyboard_interrupt_exits_130_and_writes_nothing(ws, capsys, monkeypatch) -> None:
    import medrecon.methods

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(ws)
    monkeypatch.setattr(medrecon.methods, "run_method", interrupted)
    before = snapshot(ws)
    assert main(["--quiet", "reconstruct", "--input", "ct.h5", "--method", "fbp",
                 "--output", "r.nii.gz"]) == 130
    assert capsys.readouterr().err.strip() == "medrecon reconstruct: interrupted"
    assert snapshot(ws) == before


def test_a_missing_command_module_fails_loudly(monkeypatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + ("reconstruct_batch_missing",))
    with pytest.raises(ImportError, match="medrecon.commands.reconstruct_batch_missing is missing"):
        cli.build_parser()


def test_command_list_is_the_command_modules() -> None:
    """Every module of medrecon/commands is a listed command and every listed one loads."""
    folder = Path(cli.__file__).parent / "commands"
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    assert modules == set(cli.COMMANDS)
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert len(sub.choices) == len(cli.COMMANDS)


def test_multi_line_library_messages_become_one_line() -> None:
    import yaml

    try:
        yaml.safe_load("settings: [1, 2\n")
    except yaml.YAMLError as exc:
        msg = cli.one_line(exc)
    assert "\n" not in msg and "expected ',' or ']'" in msg and "line 2" in msg


# --------------------------------------------------------------------------------------------
# Interrupt and resume through the CLI (subprocess, real SIGINT)
# --------------------------------------------------------------------------------------------
def _reconstruct_argv(out: str, *extra: str) -> list[str]:
    return ["--quiet", "reconstruct", "--input", "ct.h5", "--method", "dds", "--prior", "tiny",
            "--seed", "3", "--output", out, *extra]


def _interrupt_when(argv: list[str], cwd: Path, ready) -> subprocess.CompletedProcess:
    """Run ``medrecon argv`` in ``cwd``; send SIGINT once ``ready()`` is true; wait for the end."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "medrecon.cli", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"the run ended (or hung) before it could be interrupted: {proc.returncode} {err}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _saved_step(state: Path) -> int:
    try:
        return int(json.loads(state.read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _load(path: Path) -> np.ndarray:
    from medrecon.io import load_volume

    return load_volume(path).array


def test_interrupted_dds_exits_130_and_resumes_through_the_cli(ws, monkeypatch) -> None:
    steps = ["--set", "steps=30"]
    monkeypatch.chdir(ws)
    assert main(_reconstruct_argv("full.nii.gz", *steps)) == 0
    state = ws / "st1"
    done = _interrupt_when(_reconstruct_argv("r1.nii.gz", *steps, "--state-dir", "st1",
                                             "--save-every", "1"),
                           ws, lambda: _saved_step(state / "state.json") >= 3)
    assert done.returncode == 130, done.stderr
    # the tiny test prior does not fit the phantom: the prior-fit warning may come first
    lines = [line for line in done.stderr.strip().splitlines()
             if not line.startswith("WARNING medrecon.samplers.prior_fit: ")]
    assert len(lines) == 1 and lines[0].startswith("medrecon reconstruct: interrupted: dds "
                                                   "interrupted by SIGINT after step"), lines
    stopped = _saved_step(state / "state.json")
    assert 3 <= stopped < 30 and not (ws / "r1.nii.gz").exists()
    assert not (ws / "r1.config.json").exists()
    assert main(_reconstruct_argv("r1.nii.gz", *steps, "--state-dir", "st1", "--resume")) == 0
    info = json.loads((ws / "r1.config.json").read_text())["sampler"]
    assert info["resumed_from"] == stopped and info["time_warm_start"] > 0
    np.testing.assert_array_equal(_load(ws / "r1.nii.gz"), _load(ws / "full.nii.gz"))


def test_interrupted_samples_run_resumes_through_the_cli(ws, monkeypatch) -> None:
    """--samples 3 interrupted in the second sample: the resumed mean and standard deviation
    equal the uninterrupted ones bit for bit (finished samples are reloaded, not re-run)."""
    steps = ["--set", "steps=12", "--samples", "3"]
    monkeypatch.chdir(ws)
    assert main(_reconstruct_argv("fullk.nii.gz", *steps)) == 0
    second = ws / "st3" / "sample-001" / "state.json"
    done = _interrupt_when(_reconstruct_argv("k.nii.gz", *steps, "--state-dir", "st3",
                                             "--save-every", "1"),
                           ws, lambda: _saved_step(second) >= 2)
    assert done.returncode == 130, done.stderr
    assert _saved_step(ws / "st3" / "sample-000" / "state.json") == 12
    assert 2 <= _saved_step(second) < 12 and not (ws / "st3" / "sample-002").exists()
    assert not (ws / "k.nii.gz").exists() and not (ws / "k_std.nii.gz").exists()
    assert main(_reconstruct_argv("k.nii.gz", *steps, "--state-dir", "st3", "--resume")) == 0
    np.testing.assert_array_equal(_load(ws / "k.nii.gz"), _load(ws / "fullk.nii.gz"))
    np.testing.assert_array_equal(_load(ws / "k_std.nii.gz"), _load(ws / "fullk_std.nii.gz"))
    assert float(_load(ws / "k_std.nii.gz").max()) > 0


def test_resume_of_another_run_is_refused_before_the_warm_start(ws, capsys, monkeypatch) -> None:
    """``--resume`` on a state saved with another seed, prior, step count or measurement exits 2
    with one line, before the ADMM-TV warm start runs (and writes nothing)."""
    import medrecon.samplers.run as sampler_run

    monkeypatch.chdir(ws)
    assert main(_reconstruct_argv("saved.nii.gz", "--set", "steps=3", "--state-dir", "st-other")) == 0
    if not (ws / "tiny2").exists():
        tiny_prior(ws / "tiny2", seed=2)
    assert main(["--quiet", "simulate", "--task", "sparse-view-ct", "--views", "9", "--input",
                 "ph.nii.gz", "--output", "ct9.h5"]) == 0
    capsys.readouterr()
    warm_starts = []
    real_warm_start = sampler_run.tv_warm_start

    def counted(*args, **kwargs):          # the solver it makes records every solve it runs
        solve = real_warm_start(*args, **kwargs)

        def run(*a, **k):
            warm_starts.append(a)
            return solve(*a, **k)
        return run

    monkeypatch.setattr(sampler_run, "tv_warm_start", counted)
    base = _reconstruct_argv("again.nii.gz", "--set", "steps=3", "--state-dir", "st-other", "--resume")
    cases = {"seed": (["--seed", "4"], "differs in: seed"),
             "prior": (["--prior", "tiny2"], "computed with a prior of other weights"),
             "steps": (["--set", "steps=4"], "steps);"),            # "differs in: config, steps"
             # 9 views: other data, and another default TV-z weight (lam_rel x 8 / views)
             "measurement": (["--input", "ct9.h5"], "differs in: config, op_norm_sq, shape")}
    before = snapshot(ws)
    for what, (extra, text) in cases.items():
        assert main([*base, *extra]) == 2, what
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0], (what, err)
        assert warm_starts == [], what
        assert snapshot(ws) == before, what
    # the same run resumes: the warm start, and the prior-fit check's ADMM-TV on the views it
    # keeps (it holds out every 4th view; samplers/prior_fit.py)
    assert main(base) == 0 and len(warm_starts) == 2
    info = json.loads((ws / "again.config.json").read_text())["sampler"]
    assert info["resumed_from"] == 3
