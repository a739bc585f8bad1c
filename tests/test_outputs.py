"""Output planning (medrecon.io.outputs): checks before work, locks, all-or-none commit, modes,
stale temporaries; and the JSON and finite-value helpers every entry point uses."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from medrecon.errors import DataError, UserError
from medrecon.io import outputs
from medrecon.checks import count_nonfinite, require_finite, require_memory
from medrecon.io.jsonio import json_text
from medrecon.io.outputs import OutputPlan, acquire_lock, hold_lock, release_lock


def _plan(tmp_path, overwrite=False):
    plan = OutputPlan(overwrite=overwrite)
    a = plan.add_file(tmp_path / "out" / "a.txt", "a")
    b = plan.add_file(tmp_path / "out" / "b.txt", "b")
    return plan, a, b


def test_commit_writes_the_whole_set(tmp_path) -> None:
    plan, a, b = _plan(tmp_path)
    with plan.open() as staged:
        staged.path(a).write_text("A")
        staged.path(b).write_text("B")
        assert not (tmp_path / "out" / "a.txt").exists()  # nothing visible before the commit
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt"]


def test_error_during_work_leaves_nothing(tmp_path) -> None:
    plan, a, b = _plan(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with plan.open() as staged:
            staged.path(a).write_text("A")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # not even the folder the plan created


def test_failed_commit_restores_the_previous_set(tmp_path, monkeypatch) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("old A")
    (tmp_path / "out" / "b.txt").write_text("old B")
    plan, a, b = _plan(tmp_path, overwrite=True)
    real_replace, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if str(dst).endswith("b.txt") and ".medrecon-" not in str(dst):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    with pytest.raises(OSError):
        with plan.open() as staged:
            staged.path(a).write_text("new A")
            staged.path(b).write_text("new B")
            monkeypatch.setattr(outputs.os, "replace", flaky)
    monkeypatch.undo()
    assert (tmp_path / "out" / "a.txt").read_text() == "old A"  # rolled back
    assert (tmp_path / "out" / "b.txt").read_text() == "old B"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt"]


def test_planned_but_unwritten_output_is_an_error(tmp_path) -> None:
    plan, a, b = _plan(tmp_path)
    with pytest.raises(RuntimeError, match="not written"):
        with plan.open() as staged:
            staged.path(a).write_text("A")
    assert not (tmp_path / "out" / "a.txt").exists()


def test_checks_before_work(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "v.nii.gz").write_bytes(b"x")
    (tmp_path / "f").write_text("file")
    cases = [
        (lambda p: p.add_file(tmp_path / "f" / "x.json"), "is a file, not a folder"),
        (lambda p: p.add_file(tmp_path / "in" / "v.nii.gz"), "is the input"),
        (lambda p: p.add_file(tmp_path / "in" / "sub" / "x.json"), "inside the input folder"),
        (lambda p: p.add_dir(tmp_path), "contains the input"),
        (lambda p: (p.add_file(tmp_path / "o" / "x"), p.add_file(tmp_path / "o" / "../o/x")),
         "are the same path"),
        (lambda p: (p.add_dir(tmp_path / "d"), p.add_file(tmp_path / "d" / "x")), "lies inside"),
    ]
    for add, words in cases:
        plan = OutputPlan()
        plan.add_input(tmp_path / "in", "--input")
        plan.add_input(tmp_path / "in" / "v.nii.gz", "--reference")
        add(plan)
        with pytest.raises(UserError, match=words):
            plan.check()
        with pytest.raises(UserError, match=words):
            with plan.open():
                raise AssertionError("work must not start")


def test_dicom_file_input_protects_its_folder(tmp_path) -> None:
    from dicom_factory import phantom_hu, write_series
    files = write_series(tmp_path / "s", phantom_hu((2, 8, 8)))
    plan = OutputPlan()
    plan.add_input(files[0], "--input")
    plan.add_file(tmp_path / "s" / "r.nii.gz")
    with pytest.raises(UserError, match="folder of the input DICOM file"):
        plan.check()


def test_files_honour_the_umask(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        plan = OutputPlan()
        f = plan.add_file(tmp_path / "new" / "a.txt")
        d = plan.add_dir(tmp_path / "dir")
        with plan.open() as staged:
            staged.path(f).write_text("A")
            staged.path(d).mkdir()
        from medrecon.io.atomic import write_text_atomic
        write_text_atomic(tmp_path / "b.txt", "B")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "new" / "a.txt") == 0o640 and mode(tmp_path / "b.txt") == 0o640
    assert mode(tmp_path / "new") == 0o750 and mode(tmp_path / "dir") == 0o750


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path) -> None:
    (tmp_path / "out").mkdir()
    stale = [tmp_path / "out" / ".a.txt.medrecon-dead1234.tmp.txt",
             tmp_path / "out" / ".a.txt.medrecon-dead5678.tmp"]
    stale[0].write_text("half")
    stale[1].mkdir()
    other = tmp_path / "out" / ".c.txt.medrecon-beef.tmp.txt"  # another output's: not ours
    other.write_text("keep")
    plan, a, b = _plan(tmp_path)
    with plan.open() as staged:
        assert not any(p.exists() for p in stale)
        staged.path(a).write_text("A")
        staged.path(b).write_text("B")
    assert other.exists()


def _hold(path, ready, release):  # pragma: no cover - runs in a child process
    acquire_lock(path, "output")
    ready.set()
    release.wait(30)


def test_a_second_run_is_refused_while_the_first_holds_the_output(tmp_path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(tmp_path / "r.nii.gz", ready, release))
    child.start()
    try:
        assert ready.wait(30)
        plan = OutputPlan(overwrite=True)
        plan.add_file(tmp_path / "r.nii.gz", "--output")
        with pytest.raises(UserError, match=r"in use by another medrecon run \(pid \d+"):
            with plan.open():
                raise AssertionError("must not start")
    finally:
        release.set()
        child.join(30)
    # the holder is gone (a killed run's flock dies with it): the output is free again
    with hold_lock(tmp_path / "r.nii.gz", "--output"):
        pass
    assert list(tmp_path.iterdir()) == []  # lock files are removed on release


def test_lock_is_reentrant_within_a_process(tmp_path) -> None:
    with hold_lock(tmp_path / "state", "state directory"):
        with hold_lock(tmp_path / "state", "state directory"):
            pass
        assert (tmp_path / ".state.medrecon-lock").exists()
    release_lock(tmp_path / "state")  # releasing more than held is harmless
    assert not (tmp_path / ".state.medrecon-lock").exists()


# -- JSON and non-finite values ------------------------------------------------------------------------
def test_json_text_is_standard() -> None:
    doc = {"a": math.inf, "b": [np.float32(np.nan), np.int64(3)], "c": np.arange(2.0), "d": -math.inf}
    text = json_text(doc)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 3], "c": [0.0, 1.0], "d": None}
    with pytest.raises(TypeError, match="cannot be written as JSON"):
        json_text({"x": object()})


def test_nonfinite_counts_numpy_and_torch() -> None:
    a = np.ones((3, 4), np.complex64)
    a[1, 2] = complex(np.nan, 0)
    a[2, 0] = complex(0, np.inf)
    assert count_nonfinite(a) == (1, 1, (1, 2))
    t = torch.ones(5, dtype=torch.float64)
    t[4] = 1e300  # finite in float64: must not be called Inf (no float32 round trip)
    assert count_nonfinite(t) == (0, 0, None)
    t[2] = float("-inf")
    with pytest.raises(DataError, match=r"thing holds 1 non-finite value\(s\) \(Inf; 20 % of 5\), the first at index \[2\]"):
        require_finite(t, "thing")
    require_finite(np.arange(3), "integers are always finite")


def test_memory_refused_before_allocating() -> None:
    with pytest.raises(DataError, match="refusing before allocating"):
        require_memory(1e18, "a test allocation")
    require_memory(1e3, "a small one")


# -- rolling back a failed commit when an output is a folder --------------------------------------
def _tree(folder) -> dict:
    """Every file under ``folder`` with its text (relative paths), plus the hidden names beside it."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _failing_replace(monkeypatch, fail_on: str):
    """``os.replace`` failing once: when the staged ``fail_on`` is moved into place."""
    real_replace, failed = os.replace, []

    def flaky(src, dst):
        if str(dst).endswith(fail_on) and ".medrecon-" in str(src) and ".tmp.old" not in str(src) \
                and not failed:
            failed.append(dst)
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    return flaky


@pytest.mark.parametrize("fail_on", ["z.txt", "series"])
def test_failed_commit_restores_a_replaced_folder(tmp_path, monkeypatch, fail_on: str) -> None:
    """An existing output folder (two old files, one in a subfolder) replaced with --overwrite; the
    commit fails on the file after it, or on the folder itself: the old folder is back, file for
    file, and nothing new or temporary is left."""
    out = tmp_path / "out"
    (out / "series" / "sub").mkdir(parents=True)
    (out / "series" / "old1.dcm").write_text("old 1")
    (out / "series" / "sub" / "old2.dcm").write_text("old 2")
    (out / "z.txt").write_text("old z")
    before = _tree(out)
    plan = OutputPlan(overwrite=True)
    d = plan.add_dir(out / "series", "--dicom-out")
    f = plan.add_file(out / "z.txt", "--output")
    with pytest.raises(OSError, match="No space left"):
        with plan.open() as staged:
            staged.path(d).mkdir()
            (staged.path(d) / "new.dcm").write_text("new")
            staged.path(f).write_text("new z")
            monkeypatch.setattr(outputs.os, "replace", _failing_replace(monkeypatch, fail_on))
    monkeypatch.undo()
    assert _tree(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["series", "z.txt"]


def test_failed_commit_removes_a_new_folder_and_a_new_file(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "z.txt").write_text("old z")
    plan = OutputPlan(overwrite=True)
    d = plan.add_dir(out / "series", "--dicom-out")
    n = plan.add_file(out / "new.json", "config")
    f = plan.add_file(out / "z.txt", "--output")
    with pytest.raises(OSError):
        with plan.open() as staged:
            staged.path(d).mkdir()
            (staged.path(d) / "new.dcm").write_text("new")
            staged.path(n).write_text("{}")
            staged.path(f).write_text("new z")
            monkeypatch.setattr(outputs.os, "replace", _failing_replace(monkeypatch, "z.txt"))
    monkeypatch.undo()
    assert _tree(out) == {"z.txt": "old z"} and sorted(p.name for p in out.iterdir()) == ["z.txt"]


def test_a_successful_commit_replaces_a_folder_whole(tmp_path) -> None:
    out = tmp_path / "series"
    out.mkdir()
    (out / "old.dcm").write_text("old")
    plan = OutputPlan(overwrite=True)
    d = plan.add_dir(out, "--dicom-out")
    with plan.open() as staged:
        staged.path(d).mkdir()
        (staged.path(d) / "new.dcm").write_text("new")
    assert _tree(out) == {"new.dcm": "new"} and sorted(p.name for p in tmp_path.iterdir()) == ["series"]


def test_existing_outputs_need_overwrite_and_the_same_kind(tmp_path) -> None:
    (tmp_path / "f.txt").write_text("old")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.dcm").write_text("old")
    (tmp_path / "e").mkdir()
    cases = [
        (False, lambda p: p.add_file(tmp_path / "f.txt"), "already exists; pass --overwrite"),
        (True, lambda p: p.add_file(tmp_path / "d"), "is a folder; expected a file name"),
        (True, lambda p: p.add_dir(tmp_path / "f.txt"), "exists and is not a folder"),
        (False, lambda p: p.add_dir(tmp_path / "d"), "is not empty; pass --overwrite"),
        (True, lambda p: p.add_dir(tmp_path / "d", accept=lambda f: "not a DICOM file"),
         "holds .*x.dcm, not a DICOM file; --overwrite only replaces"),
        (True, lambda p: p.add_workdir(tmp_path / "f.txt"), "exists and is not a folder"),
    ]
    for overwrite, add, words in cases:
        plan = OutputPlan(overwrite=overwrite)
        add(plan)
        with pytest.raises(UserError, match=words):
            plan.check()
    for overwrite, add in [(False, lambda p: p.add_dir(tmp_path / "e")),          # empty: fine
                           (True, lambda p: p.add_dir(tmp_path / "d", accept=lambda f: None)),
                           (False, lambda p: p.add_workdir(tmp_path / "d")),     # written in place
                           (True, lambda p: p.add_file(tmp_path / "f.txt"))]:
        plan = OutputPlan(overwrite=overwrite)
        add(plan)
        plan.check()
