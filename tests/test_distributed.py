"""Slab-parallel reconstruction: N gloo processes on the CPU give the single-process result.

Every case of :mod:`distributed_cases` (classical solvers through ``run_method``, DDS, DDS with a
warm-start solver, DiffusionMBIR with chunk-averaged corrector norms and a circular ``D_z``, the
posterior std, MRI with per-slice coil maps) runs once in this process and once on N = 2, 3, 4
ranks (7 slices: 4+3, 3+2+2, 2+2+2+1), and the slabs put together must equal the single-process
volume bit for bit: every whole-volume scalar is an ordered reduction
(:mod:`medrecon.distributed.reduce`), so no sum depends on where the slab boundaries fall.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import distributed_cases as cases
from medrecon.distributed.local import run_local
from medrecon.distributed.slab import Slab, slab_bounds
from medrecon.errors import UserError
from medrecon.io.measurements import Measurement

_single: dict = {}


def _single_results(network: bool = False) -> dict:
    if network not in _single:
        _single[network] = cases.slab_results(0, 1, network)["results"]
    return _single[network]


def relative_difference(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _ordered_sums(rank: int, world: int, values: torch.Tensor) -> dict:
    """This rank's ordered sums of the per-slice ``values`` ``[n, 2]``, and what a plain
    all-reduce of this rank's partial sums gives (the order those depend on)."""
    import torch.distributed as dist

    from medrecon.distributed.reduce import ordered_sum, volume_inner, volume_norm_sq

    slab = Slab.of_group(values.shape[0])
    mine = slab.take(values)
    plain = mine.sum(dim=0)
    dist.all_reduce(plain)
    a = torch.linspace(-1, 1, values.shape[0] * 9, dtype=torch.float32).reshape(-1, 3, 3) ** 3
    b = torch.complex(a, a.flip(0))
    return {"ordered": ordered_sum(mine, slab), "plain": plain,
            "inner": volume_inner(slab.take(b), slab.take(b * 1j + a), slab),
            "norm_sq": volume_norm_sq(slab.take(a), slab)}


def test_ordered_sum_does_not_depend_on_the_slabs() -> None:
    """Partial values whose sum depends on the order of additions: the ordered sum is the
    exactly rounded one on every rank of 2, 3 and 4 (uneven slabs), as in one process; a plain
    all-reduce of per-rank sums is not."""
    from medrecon.distributed.reduce import ordered_sum, volume_inner, volume_norm_sq

    values = torch.tensor([[1e16, 1.0], [1.0, 1e-17], [-1e16, 3.0], [1.0, -3.0], [0.5, 1e-17],
                           [0.25, 2.0], [1.0, 1e-17]], dtype=torch.float64)
    exact = torch.tensor([3.75, 3.0 + 3e-17], dtype=torch.float64)
    single = ordered_sum(values)
    assert torch.equal(single, exact)
    a = torch.linspace(-1, 1, 7 * 9, dtype=torch.float32).reshape(-1, 3, 3) ** 3
    b = torch.complex(a, a.flip(0))
    inner, norm_sq = volume_inner(b, b * 1j + a), volume_norm_sq(a)
    assert float(norm_sq) == pytest.approx(float((a.double() ** 2).sum()), rel=1e-15)
    plain_sums = set()
    for world in (2, 3, 4):
        for part in run_local(_ordered_sums, world, values, timeout=300):
            assert torch.equal(part["ordered"], single)
            assert torch.equal(part["inner"], inner) and torch.equal(part["norm_sq"], norm_sq)
            plain_sums.add(tuple(part["plain"].tolist()))
    assert any(s != tuple(exact.tolist()) for s in plain_sums)     # the order does matter


def test_slice_sums_do_not_depend_on_the_batch_or_the_threads() -> None:
    """A slice's partial value is the same alone, in a slab of any size, with 1 or 2 threads
    (one row of 2^18 entries would otherwise be split over the threads)."""
    from medrecon.distributed.reduce import slice_sums

    x = torch.randn(5, 512, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    threads = torch.get_num_threads()
    got = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            got += [slice_sums(x), torch.cat([slice_sums(x[:3]), slice_sums(x[3:])]),
                    torch.cat([slice_sums(x[k:k + 1]) for k in range(5)])]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(g, got[0]) for g in got)


def test_slab_bounds_are_contiguous_and_even() -> None:
    assert slab_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert slab_bounds(7, 4) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert slab_bounds(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    with pytest.raises(ValueError, match="cannot split 3 slices over 4"):
        slab_bounds(3, 4)
    s = Slab(7, 2, 3)
    assert (s.lo, s.hi, s.count, s.is_last) == (5, 7, 2, True)
    assert torch.equal(s.take(torch.arange(14), per_slice=2), torch.arange(10, 14))


@pytest.mark.parametrize("world, slices", [(2, [[0, 4], [4, 7]]), (3, [[0, 3], [3, 5], [5, 7]]),
                                           (4, [[0, 2], [2, 4], [4, 6], [6, 7]])])
def test_slabs_equal_one_process(world: int, slices: list) -> None:
    single = _single_results()
    parts = run_local(cases.slab_results, world, timeout=300)
    assert [p["slices"] for p in parts] == slices
    worst = {}
    for name, ref in single.items():
        got = torch.cat([p["results"][name] for p in parts])
        assert got.shape == ref.shape and got.dtype == ref.dtype, name
        if not torch.equal(got, ref):
            worst[name] = relative_difference(got, ref)
    assert not worst, worst


@pytest.mark.slow
def test_slabs_equal_one_process_with_the_shipped_phantom_prior() -> None:
    """DDS with the shipped UNet prior on 128x128 slices (network batches differ per rank)."""
    single = _single_results(network=True)["ct128-dds-phantom-prior"]
    parts = run_local(cases.slab_results, 3, True, timeout=900)
    got = torch.cat([p["results"]["ct128-dds-phantom-prior"] for p in parts])
    assert torch.equal(got, single), relative_difference(got, single)


# -- interrupt and resume ------------------------------------------------------------------------
def _interrupted_dds(rank: int, world: int, state_dir: str, interrupt_rank: int) -> dict:
    """DDS on this rank's slab: a full run, then a run that SIGINTs rank ``interrupt_rank``
    after step 2 (state saved), then the resume."""
    from denoisers import GaussianMixtureDenoiser, template_set
    from medrecon.io.sampler_state import DirectoryStateStore
    from medrecon.samplers import SamplingInterrupted, dds

    slab = Slab.of_group(cases.N_SLICES)
    _, op, y = cases._local(cases.ct_measurement(), slab)
    den = GaussianMixtureDenoiser(template_set(32), tau=0.05)
    kw = dict(steps=5, seed=7, slab=slab)
    full = dds(op, y, den, **kw).x

    def interrupt(step: int, tensors: dict) -> None:
        if step == 2 and rank == interrupt_rank:
            os.kill(os.getpid(), signal.SIGINT)

    store = DirectoryStateStore(state_dir)
    message = None
    try:
        dds(op, y, den, store=store, callback=interrupt, **kw)
    except SamplingInterrupted as exc:
        message = str(exc)
    resumed = dds(op, y, den, store=store, resume=True, **kw)
    return {"full": full, "message": message, "resumed": resumed.x,
            "resumed_from": resumed.info["resumed_from"]}


def _resume_refused(rank: int, world: int, state_dir: str) -> str:
    from denoisers import GaussianMixtureDenoiser, template_set
    from medrecon.io.sampler_state import DirectoryStateStore
    from medrecon.samplers import dds

    slab = Slab.of_group(cases.N_SLICES)
    _, op, y = cases._local(cases.ct_measurement(), slab)
    den = GaussianMixtureDenoiser(template_set(32), tau=0.05)
    try:
        dds(op, y, den, steps=5, seed=7, slab=slab, store=DirectoryStateStore(state_dir),
            resume=True)
    except UserError as exc:
        return str(exc)
    return "resumed"


def test_sigint_on_one_rank_saves_every_slab_and_resume_needs_the_same_count(tmp_path: Path) -> None:
    parts = run_local(_interrupted_dds, 2, str(tmp_path), 1, timeout=300)
    for p in parts:                       # both ranks stopped after step 2, each saved its slab
        assert p["message"] is not None and "interrupted by SIGINT after step 2/5" in p["message"]
        assert p["resumed_from"] == 2 and torch.equal(p["resumed"], p["full"])
    assert sorted(q.name for q in tmp_path.iterdir()) == ["rank-000-of-002", "rank-001-of-002"]
    single = _single_results()                      # the same DDS in one process, for scale
    assert single["ct-dds"].shape[0] == cases.N_SLICES
    refused = run_local(_resume_refused, 3, str(tmp_path), timeout=300)
    assert all("saved by 2 processes" in m and "this run has 3 processes" in m for m in refused)
    # one process resuming the two-process state is refused as well
    from denoisers import GaussianMixtureDenoiser, template_set
    from medrecon.io.sampler_state import DirectoryStateStore
    from medrecon.samplers import dds

    _, op, y = cases._local(cases.ct_measurement(), None)
    with pytest.raises(UserError, match="saved by 2 processes"):
        dds(op, y, GaussianMixtureDenoiser(template_set(32), tau=0.05), steps=5, seed=7,
            store=DirectoryStateStore(tmp_path), resume=True)


# -- how a measurement is cut into slabs (hand-built arrays, every slab checked) ----------------
def _numbered(shape: tuple, dtype=np.float32) -> np.ndarray:
    """An array whose every entry is distinct, so any wrong cut shows."""
    return np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape).astype(dtype)


def _mri(n: int, mask_shape: tuple, maps_shape: tuple) -> Measurement:
    data = _numbered((n, 2, 4, 3)).astype(np.complex64) * (1 + 1j)
    return Measurement(task="cs-mri", data=data, geometry={"kind": "sense"},
                       arrays={"mask": _numbered(mask_shape, np.uint8) % 2,
                               "coil_maps": _numbered(maps_shape, np.complex64),
                               "reference": _numbered((n, 4, 3)), "extra": _numbered((n, 4, 3))},
                       attrs={"scale": 2.0})


@pytest.mark.parametrize("lo, hi", [(0, 3), (3, 5), (5, 7), (2, 3), (0, 7)])
def test_split_measurement_cuts_per_slice_arrays_only(lo: int, hi: int) -> None:
    from medrecon.slab_driver import split_measurement

    n = 7
    # per-slice: a [Z, ky, kx] mask and [Z, C, Y, X] coil maps
    m = _mri(n, (n, 4, 3), (n, 2, 4, 3))
    part = split_measurement(m, lo, hi)
    np.testing.assert_array_equal(part.data, m.data[lo:hi])
    np.testing.assert_array_equal(part.arrays["mask"], m.arrays["mask"][lo:hi])
    np.testing.assert_array_equal(part.arrays["coil_maps"], m.arrays["coil_maps"][lo:hi])
    assert part.data.flags.c_contiguous and part.arrays["coil_maps"].flags.c_contiguous
    assert "reference" not in part.arrays                      # only rank 0 scores
    np.testing.assert_array_equal(part.arrays["extra"], m.arrays["extra"])   # not a per-slice name
    assert (part.task, part.geometry, part.attrs) == (m.task, m.geometry, m.attrs)
    assert set(part.arrays) == {"mask", "coil_maps", "extra"}
    # shared: a [ky, kx] mask and [C, Y, X] maps, whatever their first dimension
    for shared in (_mri(n, (4, 3), (2, 4, 3)), _mri(n, (n, 3), (n, 4, 3))):
        part = split_measurement(shared, lo, hi)
        assert part.data.shape[0] == hi - lo
        np.testing.assert_array_equal(part.arrays["mask"], shared.arrays["mask"])
        np.testing.assert_array_equal(part.arrays["coil_maps"], shared.arrays["coil_maps"])
    # arrays of the right rank but another length along z are shared, not cut
    other = _mri(n, (n + 1, 4, 3), (n + 1, 2, 4, 3))
    part = split_measurement(other, lo, hi)
    assert part.arrays["mask"].shape == (n + 1, 4, 3) and part.arrays["coil_maps"].shape[0] == n + 1


def test_split_measurement_of_a_sinogram() -> None:
    from medrecon.slab_driver import split_measurement

    sino = _numbered((7, 5, 6))
    m = Measurement(task="sparse-view-ct", data=sino, geometry={"views": 5},
                    arrays={"reference": _numbered((7, 6, 6)), "mask": _numbered((5, 6))})
    parts = [split_measurement(m, lo, hi) for lo, hi in slab_bounds(7, 3)]
    np.testing.assert_array_equal(np.concatenate([p.data for p in parts]), sino)
    assert [p.data.shape[0] for p in parts] == [3, 2, 2]
    assert all(p.arrays.keys() == {"mask"} and p.arrays["mask"].shape == (5, 6) for p in parts)


def test_the_driver_refuses_more_processes_than_slices(monkeypatch) -> None:
    """Checked on rank 0 before any rank is sent a job: N processes need at least N slices."""
    from medrecon import slab_driver
    from medrecon.distributed.launch import ProcessGroup

    group = ProcessGroup(rank=0, world=3, local_rank=0, device=torch.device("cpu"), backend="gloo")
    m = Measurement(task="sparse-view-ct", data=_numbered((2, 5, 6)), geometry={})
    driver = slab_driver.SlabDriver(group)
    with pytest.raises(UserError, match="2 slices cannot be shared out over 3 processes; start at most 2"):
        driver.run_method(m, "fbp")
    with pytest.raises(UserError, match="unknown method 'nope'"):
        driver.run_method(m, "nope")
    with pytest.raises(UserError, match="does not apply to task 'sparse-view-ct'"):
        driver.run_method(m, "sense")

    class Sent(Exception):
        pass

    def broadcast(self, job):
        raise Sent(job)

    monkeypatch.setattr(slab_driver.Slab, "broadcast_object", broadcast)
    three = Measurement(task="sparse-view-ct", data=_numbered((3, 5, 6)), geometry={})
    with pytest.raises(Sent) as sent:                       # 3 slices over 3: the job goes out
        driver.run_method(three, "fbp")
    assert sent.value.args[0]["n"] == 3 and sent.value.args[0]["method"] == "fbp"
    with pytest.raises(ValueError, match="rank 0"):
        slab_driver.SlabDriver(ProcessGroup(1, 3, 1, torch.device("cpu"), "gloo"))
