"""The command line past one process: ``torchrun ... -m medrecon reconstruct`` equals one process,
Ctrl-C on one rank stops and saves every rank, and ``reconstruct-batch`` shares out studies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medrecon.cli import main
from medrecon.errors import UserError

TINY = dict(image_size=32, channels=(8, 16), attention_levels=(False, False), num_res_blocks=1,
            num_head_channels=16, norm_num_groups=4)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A 7-slice 32x32 sparse-view CT measurement and a tiny random-weight prior directory."""
    from medrecon.prior.checkpoint import save_prior
    from medrecon.prior.network import EDMUNetDenoiser, UNetConfig

    d = tmp_path_factory.mktemp("dist-cli")
    assert main(["phantom", "--kind", "ellipsoids", "--shape", "7", "32", "32", "--seed", "3",
                 "--output", str(d / "ph.nii.gz")]) == 0
    assert main(["simulate", "--task", "sparse-view-ct", "--views", "8", "--input",
                 str(d / "ph.nii.gz"), "--output", str(d / "ct.h5")]) == 0
    torch.manual_seed(0)
    model = EDMUNetDenoiser(UNetConfig(**TINY))
    card = {"name": "tiny", "architecture": {"family": "edm-unet",
                                             "config": UNetConfig(**TINY).to_dict()},
            "parameterisation": "edm", "noise": {"sigma_min": 0.002, "sigma_max": 80.0},
            "image_size": 32, "training": {"command": "test"},
            "intensity": {"convention": "window01", "window": [0.0, 1.0], "units": "a.u."}}
    save_prior(d / "prior", card, model.state_dict())
    return d


def torchrun(n: int, *argv: str, cwd: Path, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(n), "-m", "medrecon", "--quiet", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def volume(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.mark.parametrize("world", [2, 3])
def test_torchrun_reconstruct_equals_one_process(workspace: Path, world: int) -> None:
    """ADMM-TV and DDS (2 posterior samples) on 2 and 3 ranks (4+3, 3+2+2 slices): the volumes
    and the std equal one process bit for bit; rank 0 alone wrote the outputs and recorded every
    rank's slab. (DDS's ADMM-TV warm start is left out for time: 200 iterations of collectives;
    the tv run and tests/test_distributed.py cover it.)"""
    d = workspace
    runs = {"tv": ["reconstruct", "--input", "ct.h5", "--method", "tv", "--set", "iterations=40"],
            "dds": ["reconstruct", "--input", "ct.h5", "--method", "dds", "--prior", "prior",
                    "--set", "steps=4", "--set", "start_sigma=0", "--samples", "2", "--seed", "1"]}
    for method, args in runs.items():
        one = d / f"one-{method}.nii.gz"
        if not one.exists():
            cwd = os.getcwd()
            os.chdir(d)
            try:
                assert main(["--quiet", *args, "--output", one.name]) == 0
            finally:
                os.chdir(cwd)
        out = f"{method}-{world}.nii.gz"
        run = torchrun(world, *args, "--output", out, cwd=d)
        assert run.returncode == 0, run.stderr[-3000:]
        assert np.array_equal(volume(d / out), volume(one)), method
        assert run.stdout.count(f"wrote {out}") == 1          # written once, by rank 0
    assert np.array_equal(volume(d / f"dds-{world}_std.nii.gz"), volume(d / "one-dds_std.nii.gz"))
    ranks = json.loads((d / f"dds-{world}.config.json").read_text())["sampler"]["ranks"]
    assert [r["slices"] for r in ranks] == {2: [[0, 4], [4, 7]], 3: [[0, 3], [3, 5], [5, 7]]}[world]


def _rank_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """Worker pid by RANK, read from the environment of the launcher's children."""
    out = {}
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        try:
            stat = (child / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != launcher.pid:
                continue
            env = dict(item.split("=", 1) for item in (child / "environ").read_bytes()
                       .decode(errors="replace").split("\0") if "=" in item)
            out[int(env["RANK"])] = int(child.name)
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_ctrl_c_on_one_rank_saves_all_and_resume_needs_the_same_count(workspace: Path) -> None:
    d = workspace
    args = ["reconstruct", "--input", "ct.h5", "--method", "dds", "--prior", "prior", "--seed", "2",
            "--set", "steps=80", "--set", "start_sigma=0", "--state-dir", "state",
            "--save-every", "1"]
    cwd = os.getcwd()
    os.chdir(d)
    try:
        assert main(["--quiet", *args[:-4], "--output", "straight.nii.gz"]) == 0
    finally:
        os.chdir(cwd)
    launcher = torchrun(2, *args, "--output", "cut.nii.gz", cwd=d, wait=False)
    first = d / "state" / "rank-001-of-002" / "state.json"
    deadline = time.monotonic() + 300
    while not first.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = _rank_pids(launcher)
    assert 1 in pids, "no rank 1 worker found"
    os.kill(pids[1], signal.SIGINT)                      # Ctrl-C reaches rank 1 only
    _, err = launcher.communicate(timeout=300)
    assert launcher.returncode != 0 and "interrupted by SIGINT" in err, err[-3000:]
    steps = {json.loads((d / "state" / r / "state.json").read_text())["step"]
             for r in ("rank-000-of-002", "rank-001-of-002")}
    assert len(steps) == 1 and 0 < steps.pop() < 80          # both saved after the same step
    assert not (d / "cut.nii.gz").exists()
    refused = torchrun(3, *args, "--resume", "--output", "cut.nii.gz", cwd=d)
    assert refused.returncode != 0 and "saved by 2 processes" in refused.stderr
    resumed = torchrun(2, *args, "--resume", "--output", "cut.nii.gz", cwd=d)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # resuming is exact: the same as 2 ranks uninterrupted and as one process, bit for bit
    whole = torchrun(2, *args[:-4], "--output", "straight2.nii.gz", cwd=d)
    assert whole.returncode == 0, whole.stderr[-3000:]
    cut, one = volume(d / "cut.nii.gz"), volume(d / "straight.nii.gz")
    assert np.array_equal(cut, volume(d / "straight2.nii.gz"))
    assert np.array_equal(cut, one)


# -- reconstruct-batch ---------------------------------------------------------------------------
def test_reconstruct_batch_shares_studies_and_skips_finished(workspace: Path, monkeypatch,
                                                             capsys) -> None:
    d = workspace
    (d / "batch").mkdir()
    (d / "batch" / "list.txt").write_text("# input output\n../ct.h5 a.nii.gz\n"
                                          "../missing.h5 b.nii.gz\n'../ct.h5' 'c d.nii.gz'\n")
    opts = ["--method", "fbp"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")                        # rank 1 takes study 2 of 3 only
    assert main(["reconstruct-batch", str(d / "batch" / "list.txt"), *opts]) == 2
    err = capsys.readouterr().err
    assert "study 2/3" in err and "missing.h5" in err
    assert not (d / "batch" / "a.nii.gz").exists()
    monkeypatch.setenv("RANK", "0")                        # rank 0 takes studies 1 and 3
    assert main(["reconstruct-batch", str(d / "batch" / "list.txt"), *opts]) == 0
    assert (d / "batch" / "a.nii.gz").exists() and (d / "batch" / "c d.nii.gz").exists()
    stamp = (d / "batch" / "a.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["reconstruct-batch", str(d / "batch" / "list.txt"), *opts]) == 0   # a rerun
    assert "0 reconstructed, 2 skipped" in capsys.readouterr().out
    assert (d / "batch" / "a.nii.gz").stat().st_mtime_ns == stamp
    one = volume(d / "batch" / "a.nii.gz")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    (d / "batch" / "list.csv").write_text("output,input\ne.nii.gz,../ct.h5\n")
    assert main(["reconstruct-batch", str(d / "batch" / "list.csv"), *opts]) == 0
    assert np.array_equal(volume(d / "batch" / "e.nii.gz"), one)


def test_reconstruct_batch_refuses_bad_lists_and_per_study_options(workspace: Path, capsys) -> None:
    d = workspace
    bad = d / "bad.txt"
    bad.write_text("only-one-field\n")
    assert main(["reconstruct-batch", str(bad), "--method", "fbp"]) == 2
    assert "line 1: expected an input and an output" in capsys.readouterr().err
    (d / "bad.csv").write_text("in,out\na,b\n")
    assert main(["reconstruct-batch", str(d / "bad.csv"), "--method", "fbp"]) == 2
    assert "needs the columns input and output" in capsys.readouterr().err
    good = d / "good.txt"
    good.write_text("ct.h5 x.nii.gz\n")
    assert main(["reconstruct-batch", str(good), "--method", "fbp", "--output", "y.nii.gz"]) == 2
    assert "--output: set per study" in capsys.readouterr().err


def test_srun_environment_is_a_process_group(workspace: Path, tmp_path: Path) -> None:
    """Two processes started with the variables srun sets (no torchrun): they join one gloo group
    on this node (rendezvous 127.0.0.1, port from the job id) and give the one-process volume."""
    d = workspace
    args = ["--quiet", "reconstruct", "--input", str(d / "ct.h5"), "--method", "cgls",
            "--set", "iterations=8", "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "one.nii.gz")]) == 0
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "MASTER_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    procs = []
    for rank in range(2):
        env = {**base, "OMP_NUM_THREADS": "1", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
               "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_NODES": "1",
               "SLURM_JOB_ID": str(40000 + os.getpid() % 9000)}
        procs.append(subprocess.Popen([sys.executable, "-m", "medrecon", *args, "--output",
                                       str(tmp_path / "two.nii.gz")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert "wrote" in outs[0][0] and "wrote" not in outs[1][0]          # rank 0 writes
    # CGLS's inner products are ordered reductions: bit for bit
    assert np.array_equal(volume(tmp_path / "two.nii.gz"), volume(tmp_path / "one.nii.gz"))


def test_launch_environment(monkeypatch) -> None:
    from medrecon.distributed.launch import launch_from_environment, rank_device

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")            # an sbatch script outside srun: one process
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert launch_from_environment() is None
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    got = launch_from_environment()
    assert (got.rank, got.world, got.local_rank, got.launcher) == (3, 4, 1, "srun")
    monkeypatch.setenv("WORLD_SIZE", "2")               # torchrun's variables come first
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    got = launch_from_environment()
    assert (got.rank, got.world, got.launcher) == (1, 2, "torchrun")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert launch_from_environment() is None
    assert rank_device("cpu", 3) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            rank_device("cuda", 0)


# -- which variable says what (each set to a different number, so a swap shows) --------------------
_LAUNCH_KEYS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
                "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_PROCID",
                "SLURM_LOCALID", "SLURM_NODEID", "SLURM_STEP_NUM_NODES", "SLURM_NNODES",
                "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")


@pytest.fixture
def clean_launch_env(monkeypatch):
    for key in _LAUNCH_KEYS:      # set, then removed: whatever the code exports is undone after
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    return monkeypatch


def test_torchrun_rank_world_and_local_rank_come_from_their_own_variables(clean_launch_env) -> None:
    from medrecon.distributed.launch import launch_from_environment

    env = clean_launch_env
    for key, value in dict(WORLD_SIZE="8", RANK="5", LOCAL_RANK="1", LOCAL_WORLD_SIZE="4",
                           GROUP_RANK="1", NODE_RANK="1", SLURM_PROCID="6", SLURM_LOCALID="2",
                           SLURM_STEP_NUM_TASKS="9").items():
        env.setenv(key, value)
    got = launch_from_environment()
    assert (got.rank, got.world, got.local_rank, got.launcher) == (5, 8, 1, "torchrun")
    env.delenv("LOCAL_RANK")
    assert launch_from_environment().local_rank == 0          # torchrun always sets it; default 0
    env.setenv("WORLD_SIZE", "1")                             # one process: no group, even in srun
    assert launch_from_environment() is None
    env.delenv("RANK")                                        # not torchrun: srun's variables
    env.setenv("WORLD_SIZE", "8")
    got = launch_from_environment()
    assert (got.rank, got.world, got.local_rank, got.launcher) == (6, 9, 2, "srun")


def test_srun_rank_world_and_local_rank_come_from_their_own_variables(clean_launch_env) -> None:
    from medrecon.distributed.launch import launch_from_environment

    env = clean_launch_env
    for key, value in dict(SLURM_PROCID="3", SLURM_LOCALID="1", SLURM_NODEID="2",
                           SLURM_STEP_NUM_TASKS="4", SLURM_NTASKS="16").items():
        env.setenv(key, value)
    got = launch_from_environment()
    assert (got.rank, got.world, got.local_rank, got.launcher) == (3, 4, 1, "srun")
    env.delenv("SLURM_LOCALID")
    assert launch_from_environment().local_rank == 0
    env.setenv("SLURM_STEP_NUM_TASKS", "1")                   # srun -n 1 inside a 16-task job
    assert launch_from_environment() is None
    env.delenv("SLURM_STEP_NUM_TASKS")                        # an sbatch script outside srun
    assert launch_from_environment() is None
    env.setenv("SLURM_STEP_NUM_TASKS", "4")
    env.delenv("SLURM_PROCID")
    assert launch_from_environment() is None
    env.setenv("SLURM_PROCID", "three")
    with pytest.raises(UserError, match="SLURM_PROCID='three' is not an integer"):
        launch_from_environment()
    env.setenv("WORLD_SIZE", "2x")
    env.setenv("RANK", "0")
    with pytest.raises(UserError, match="WORLD_SIZE='2x' is not an integer"):
        launch_from_environment()


def test_srun_rendezvous_address_and_port(clean_launch_env) -> None:
    from medrecon.distributed import launch

    env = clean_launch_env
    env.setenv("SLURM_JOB_ID", "123456")
    assert launch._slurm_master() == ("127.0.0.1", str(20000 + 123456 % 20000))   # one node
    env.setenv("MASTER_PORT", "29400")
    env.setenv("MASTER_ADDR", "head")
    assert launch._slurm_master() == ("head", "29400")
    env.delenv("MASTER_ADDR")
    env.delenv("MASTER_PORT")
    env.setenv("SLURM_STEP_NUM_NODES", "2")                   # two nodes: ask scontrol for the first
    env.setenv("SLURM_NNODES", "1")
    env.setenv("SLURM_STEP_NODELIST", "gpu[07-08]")
    env.setenv("SLURM_JOB_NODELIST", "gpu[01-08]")
    calls = []

    def scontrol(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="gpu07\ngpu08\n", stderr="")

    env.setattr(launch.shutil, "which", lambda name: "/usr/bin/scontrol" if name == "scontrol" else None)
    env.setattr(launch.subprocess, "run", scontrol)
    assert launch._slurm_master() == ("gpu07", "23456")
    assert calls == [["scontrol", "show", "hostnames", "gpu[07-08]"]]
    env.delenv("SLURM_STEP_NUM_NODES")                        # the job's node count as fallback
    env.setenv("SLURM_NNODES", "1")
    assert launch._slurm_master()[0] == "127.0.0.1"
    env.setenv("SLURM_NNODES", "3")
    env.delenv("SLURM_STEP_NODELIST")
    assert launch._slurm_master()[0] == "gpu07" and calls[-1][-1] == "gpu[01-08]"
    env.setattr(launch.shutil, "which", lambda name: None)    # no scontrol: say what to set
    with pytest.raises(UserError, match="set MASTER_ADDR"):
        launch._slurm_master()


def test_join_under_srun_exports_the_torchrun_variables(clean_launch_env) -> None:
    from medrecon.distributed import launch

    env = clean_launch_env
    for key, value in dict(SLURM_PROCID="2", SLURM_LOCALID="0", SLURM_STEP_NUM_TASKS="3",
                           SLURM_JOB_ID="7").items():
        env.setenv(key, value)
    calls = []
    env.setattr(launch.dist, "is_initialized", lambda: False)
    env.setattr(launch.dist, "init_process_group", lambda *a, **kw: calls.append((a, kw)))
    group = launch.join_from_environment("cpu")
    assert (group.rank, group.world, group.local_rank, group.backend) == (2, 3, 0, "gloo")
    assert group.device == torch.device("cpu") and not group.is_root
    assert [os.environ[k] for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")] \
        == ["127.0.0.1", "20007", "2", "3", "0"]
    (args, kw), = calls
    assert args == ("gloo",) and kw["rank"] == 2 and kw["world_size"] == 3 and kw["init_method"] == "env://"
    for key in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS"):
        env.delenv(key)
    env.delenv("WORLD_SIZE")
    env.delenv("RANK")
    assert launch.join_from_environment("cpu") is None and len(calls) == 1


def test_each_cuda_rank_takes_the_gpu_of_its_local_rank(monkeypatch) -> None:
    from medrecon.distributed import launch

    chosen = []
    monkeypatch.setattr(launch, "resolve_device", lambda name: torch.device(name))
    monkeypatch.setattr(launch.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(launch.torch.cuda, "set_device", lambda i: chosen.append(i))
    assert launch.rank_device("cuda", 1) == torch.device("cuda", 1) and chosen == [1]
    assert launch.rank_device("cuda:0", 0) == torch.device("cuda", 0) and chosen == [1, 0]
    with pytest.raises(UserError, match="local rank 2 has no GPU: this node has 2"):
        launch.rank_device("cuda", 2)
    with pytest.raises(UserError, match="--device cuda:1: with several processes"):
        launch.rank_device("cuda:1", 0)
    assert launch.rank_device("cpu", 5) == torch.device("cpu") and chosen == [1, 0]
