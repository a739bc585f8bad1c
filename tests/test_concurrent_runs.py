"""Runs that meet: several runs on one output, a second run on a state folder, a resume with
another prior or other data, a killed run, a folder the user cannot write."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import hostile_inputs as H
from medrecon.cli import main
from medrecon.io import load_volume
from medrecon.io.measurements import load_measurement

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("runs")
    assert main(["phantom", "--shape", "4", "32", "32", "--output", str(d / "ph.nii.gz")]) == 0
    assert main(["simulate", "--task", "sparse-view-ct", "--views", "24", "--input",
                 str(d / "ph.nii.gz"), "--output", str(d / "ct.h5")]) == 0
    assert main(["phantom", "--shape", "2", "128", "128", "--output", str(d / "ph128.nii.gz")]) == 0
    assert main(["simulate", "--task", "sparse-view-ct", "--views", "16", "--input",
                 str(d / "ph128.nii.gz"), "--output", str(d / "ct128.h5")]) == 0
    return d


def _child(argv: list[str], err_path: str, delay: float) -> None:  # pragma: no cover - child
    """Run the CLI with every NIfTI write slowed down by ``delay`` s, so that runs overlap."""
    import medrecon.io

    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    real = medrecon.io.save_volume

    def slow(*args, **kwargs):
        time.sleep(delay)
        return real(*args, **kwargs)

    medrecon.io.save_volume = slow
    sys.stderr = os.fdopen(2, "w", buffering=1)
    os._exit(main(argv))


def test_concurrent_overwrite_leaves_one_complete_set(data, tmp_path) -> None:
    """N runs with --overwrite on one output, started together and overlapping (each holds its
    output for over a second): one run writes, the others are refused, and the set on disk is
    that run's: its NIfTI, its config and its metrics."""
    out = tmp_path / "out"
    out.mkdir()
    iterations = [2, 5, 9, 14]
    ctx = multiprocessing.get_context("fork")
    procs = []
    for k in iterations:
        argv = ["--quiet", "reconstruct", "--input", str(data / "ct.h5"), "--method", "sirt",
                "--set", f"iterations={k}", "--output", str(out / "r.nii.gz"), "--overwrite"]
        procs.append(ctx.Process(target=_child, args=(argv, str(tmp_path / f"err{k}.txt"), 1.5)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    codes = [p.exitcode for p in procs]
    errs = [(tmp_path / f"err{k}.txt").read_text() for k in iterations]
    assert codes.count(0) == 1 and codes.count(2) == len(iterations) - 1, (codes, errs)
    for code, err in zip(codes, errs):
        if code == 2:
            assert "in use by another medrecon run" in err.splitlines()[-1], err
    assert sorted(p.name for p in out.iterdir()) == ["r.config.json", "r.metrics.json", "r.nii.gz"]
    # the three files come from the same run
    config = json.loads((out / "r.config.json").read_text())
    k = config["settings"]["iterations"]
    assert k == iterations[codes.index(0)]
    from medrecon.methods import run_method
    from medrecon.metrics import volume_metrics
    from medrecon.tasks import to_volume_units
    m = load_measurement(data / "ct.h5")
    expect = to_volume_units(run_method(m, "sirt", {"iterations": k}), m)
    got = load_volume(out / "r.nii.gz").array
    np.testing.assert_allclose(got, expect, atol=1e-5)
    metrics = json.loads((out / "r.metrics.json").read_text())
    ref = m.arrays["reference"]
    assert metrics["psnr"] == pytest.approx(
        volume_metrics(got, ref, float(ref.max() - ref.min()))["psnr"], abs=1e-6)


def _hold_lock(path: str, ready, release) -> None:  # pragma: no cover - child
    from medrecon.io.outputs import acquire_lock, release_lock
    acquire_lock(path, "state directory")
    ready.set()
    release.wait(60)
    release_lock(path)


def test_second_run_on_a_state_folder_is_refused(data, tmp_path, capsys) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path / "state"), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        capsys.readouterr()
        rc = main(["reconstruct", "--input", str(data / "ct128.h5"), "--method", "dds", "--set",
                   "steps=2", "--state-dir", str(tmp_path / "state"), "--output",
                   str(tmp_path / "r.nii.gz")])
        err = capsys.readouterr().err
    finally:
        release.set()
        holder.join(30)
    assert rc == 2 and "--state-dir" in err and "in use by another medrecon run" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, lock released


def test_resume_with_a_different_prior_or_data_is_refused(data, tmp_path, capsys) -> None:
    same = H.prior_copy(tmp_path / "same")                 # the shipped weights, another folder
    other = H.prior_copy(tmp_path / "other", scale=1.01)   # one tensor 1 % larger
    state, out = tmp_path / "state", tmp_path / "out"
    common = ["--quiet", "reconstruct", "--method", "dds", "--set", "steps=3", "--state-dir",
              str(state), "--save-every", "1"]
    assert main(common + ["--input", str(data / "ct128.h5"), "--prior", str(same),
                          "--output", str(out / "a.nii.gz")]) == 0
    first = load_volume(out / "a.nii.gz").array
    before = H.tree_checksums(tmp_path)
    capsys.readouterr()
    rc = main(common + ["--resume", "--input", str(data / "ct128.h5"), "--prior", str(other),
                        "--output", str(out / "b.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and "prior of other weights" in err.splitlines()[-1], err
    changed = dict(H.tree_checksums(tmp_path))
    assert changed == before  # no output, state untouched
    # the same weights from another folder resume (and give the same result)
    assert main(common + ["--resume", "--input", str(data / "ct128.h5"), "--prior", str(same),
                          "--output", str(out / "c.nii.gz")]) == 0
    np.testing.assert_array_equal(load_volume(out / "c.nii.gz").array, first)
    # other measured data with the same shape: refused
    m = load_measurement(data / "ct128.h5")
    y = m.data.copy()
    y[:, ::2] *= 1.05
    H.copy_measurement(data / "ct128.h5", tmp_path / "other.h5", data=y)
    capsys.readouterr()
    rc = main(common + ["--resume", "--input", str(tmp_path / "other.h5"), "--prior", str(same),
                        "--output", str(out / "d.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and "different measurements" in err.splitlines()[-1], err
    assert not (out / "d.nii.gz").exists()


@pytest.mark.slow
def test_sigkill_then_resume_completes_and_cleans_up(data, tmp_path) -> None:
    """A run killed with SIGKILL mid-sampling leaves its lock files behind; the resumed run
    takes the locks, finishes with the uninterrupted result and leaves no medrecon temporary."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    state = tmp_path / "state"
    base = [sys.executable, "-m", "medrecon.cli", "--quiet", "reconstruct", "--input",
            str(data / "ct128.h5"), "--method", "dds", "--set", "steps=12", "--set",
            "start_sigma=0", "--state-dir", str(state), "--save-every", "1"]
    assert main(base[3:-4] + ["--output", str(tmp_path / "full.nii.gz")]) == 0
    proc = subprocess.Popen(base + ["--output", str(tmp_path / "r.nii.gz")], env=env, cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline and not (state / "state.json").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert (state / "state.json").exists() and not (tmp_path / "r.nii.gz").exists()
    assert main(base[3:] + ["--resume", "--output", str(tmp_path / "r.nii.gz")]) == 0
    np.testing.assert_array_equal(load_volume(tmp_path / "r.nii.gz").array,
                                  load_volume(tmp_path / "full.nii.gz").array)
    leftovers = [p for p in tmp_path.rglob("*") if ".medrecon-" in p.name]
    assert leftovers == []


def test_read_only_folder_refused_before_work(data, tmp_path, capsys, monkeypatch) -> None:
    """An output in a folder the user may not write to: one line, before any work. Root writes
    anywhere, so as root the kernel's answer for that folder is simulated."""
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False
                            if Path(p) == ro and mode & os.W_OK else real_access(p, mode, **kw))
    import medrecon.methods
    monkeypatch.setattr(medrecon.methods, "run_method", None)  # any work would crash
    capsys.readouterr()
    try:
        rc = main(["reconstruct", "--input", str(data / "ct.h5"), "--method", "fbp", "--output",
                   str(ro / "r.nii.gz")])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and lines[-1].startswith("medrecon reconstruct: error: "), err
        assert f"{ro} is not writable" in lines[-1] and "Traceback" not in err
        assert list(ro.iterdir()) == []
    finally:
        os.chmod(ro, 0o755)
