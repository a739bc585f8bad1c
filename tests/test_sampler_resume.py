"""Exact resume of a warm-started DDS run and of a K-sample posterior run interrupted part-way
through a sample (SIGINT delivered from inside the run)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from denoisers import ct_problem
from medrecon.io.sampler_state import DirectoryStateStore
from medrecon.samplers.interruption import SamplingInterrupted
from medrecon.samplers.dds import dds
from medrecon.samplers.posterior import sample_posterior
from medrecon.solvers.classical import cgls


@pytest.fixture(scope="module")
def ct():
    return ct_problem(views=4)


def _sigint_at(count: int):
    """A callback that sends SIGINT to this process at its ``count``-th call."""
    calls = {"n": 0}

    def callback(step, tensors):
        calls["n"] += 1
        if calls["n"] == count:
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def test_warm_started_dds_resumes_exactly(ct, tmp_path: Path) -> None:
    op, y, _, den = ct
    start = cgls(op, y, 10)
    kw = dict(steps=8, seed=1, start_sigma=0.3, x_init=start)
    full = dds(op, y, den, **kw)
    with pytest.raises(SamplingInterrupted, match="after step 5/8"):
        dds(op, y, den, store=DirectoryStateStore(tmp_path), callback=_sigint_at(5), **kw)
    resumed = dds(op, y, den, store=DirectoryStateStore(tmp_path), resume=True, **kw)
    assert resumed.info["resumed_from"] == 5 and torch.equal(resumed.x, full.x)


def test_posterior_interrupted_in_its_second_sample_resumes_exactly(ct, tmp_path: Path) -> None:
    op, y, _, den = ct
    kw = dict(samples=3, seed=4, steps=6, start_sigma=0.3)
    start = cgls(op, y, 10)
    full = sample_posterior("dds", op, y, den, x_init=start, **kw)
    with pytest.raises(SamplingInterrupted, match="after step 3/6"):
        sample_posterior("dds", op, y, den, x_init=start, store=DirectoryStateStore(tmp_path), save_every=1,
                         callback=_sigint_at(6 + 3), **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample-000", "sample-001"]
    again = sample_posterior("dds", op, y, den, x_init=start, store=DirectoryStateStore(tmp_path), resume=True, **kw)
    assert [i["resumed_from"] for i in again.infos] == [6, 3, None]
    assert torch.equal(again.mean, full.mean) and torch.equal(again.std, full.std)
    assert float(full.std.mean()) > 1e-3
