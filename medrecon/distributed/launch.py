"""Join the process group a launcher started: ``torchrun`` or SLURM's ``srun``.

- ``torchrun --nproc_per_node N ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT``.
- ``srun -n N ...`` sets ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` and ``SLURM_LOCALID`` (an
  ``sbatch`` script outside ``srun`` also sees ``SLURM_NTASKS``, which is therefore not used).
  The rendezvous host is ``MASTER_ADDR`` if set, else the first node of the step
  (``scontrol show hostnames``); the port is ``MASTER_PORT`` if set, else derived from the job id.

One process per GPU: on CUDA the rank uses ``cuda:<local rank>`` and NCCL; on the CPU, gloo.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from medrecon.device import resolve_device
from medrecon.errors import UserError


@dataclass(frozen=True)
class Launch:
    """What the launcher said about this process."""

    rank: int
    world: int
    local_rank: int
    launcher: str                  # "torchrun" or "srun"


def _int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def launch_from_environment() -> Optional[Launch]:
    """This process's place among several started by torchrun or srun; None for one process."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        world = _int("WORLD_SIZE")
        if world > 1:
            return Launch(_int("RANK"), world, int(os.environ.get("LOCAL_RANK", "0")), "torchrun")
        return None
    if "SLURM_STEP_NUM_TASKS" in os.environ and "SLURM_PROCID" in os.environ:
        world = _int("SLURM_STEP_NUM_TASKS")
        if world > 1:
            return Launch(_int("SLURM_PROCID"), world, int(os.environ.get("SLURM_LOCALID", "0")),
                          "srun")
    return None


def _slurm_master() -> tuple[str, str]:
    addr = os.environ.get("MASTER_ADDR")
    if not addr:
        nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "")
        if int(os.environ.get("SLURM_STEP_NUM_NODES", os.environ.get("SLURM_NNODES", "1"))) <= 1:
            addr = "127.0.0.1"
        elif shutil.which("scontrol") and nodes:
            out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True,
                                 text=True, check=False)
            addr = out.stdout.split()[0] if out.returncode == 0 and out.stdout.split() else ""
        if not addr:
            raise UserError("srun over several nodes: set MASTER_ADDR to the first node's host "
                            "name (e.g. export MASTER_ADDR=$(scontrol show hostnames "
                            "$SLURM_JOB_NODELIST | head -n 1))")
    port = os.environ.get("MASTER_PORT") or str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000)
    return addr, port


@dataclass
class ProcessGroup:
    """An initialised ``torch.distributed`` group and this process's device in it."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def rank_device(device_name: str, local_rank: int) -> torch.device:
    """``device_name`` (auto, cpu, cuda) for the process with ``local_rank`` on its node: CUDA
    ranks get GPU ``local_rank`` (made the current device)."""
    device = resolve_device(device_name)
    if device.type != "cuda":
        return device
    if device.index is not None and device.index != local_rank:
        raise UserError(f"--device {device_name}: with several processes every rank takes the GPU "
                        "of its local rank; use --device cuda")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UserError(f"local rank {local_rank} has no GPU: this node has {count}; start at most "
                        f"{count} processes per node")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def join_from_environment(device_name: str = "auto",
                          timeout: datetime.timedelta = datetime.timedelta(minutes=30)
                          ) -> Optional[ProcessGroup]:
    """Initialise the process group of a torchrun/srun launch (None when launched as one
    process): NCCL on CUDA, gloo on the CPU."""
    launch = launch_from_environment()
    if launch is None:
        return None
    device = rank_device(device_name, launch.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if launch.launcher == "srun":
        addr, port = _slurm_master()
        os.environ.update(MASTER_ADDR=addr, MASTER_PORT=port, RANK=str(launch.rank),
                          WORLD_SIZE=str(launch.world), LOCAL_RANK=str(launch.local_rank))
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=launch.rank,
                                world_size=launch.world, timeout=timeout)
    return ProcessGroup(launch.rank, launch.world, launch.local_rank, device, backend)
