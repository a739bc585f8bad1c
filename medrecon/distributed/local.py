"""Run a function in N fresh CPU processes joined by gloo (tests and benchmarks of slab runs).

``run_local(fn, N, *args)`` spawns N processes, initialises a gloo group through a temporary
file (no network port), calls ``fn(rank, N, *args)`` in each and returns their results in rank
order. ``fn`` must be importable by name (a module-level function); results travel by pickle.
A failure in any process raises :class:`RuntimeError` with that process's traceback.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable


def _child(fn: Callable[..., Any], rank: int, world: int, init_file: str, threads: int,
           results: Any, args: tuple) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                world_size=world)
        try:
            # plain pickle: tensors travel by value, not as shared-memory handles that die
            # with this process
            results.put((rank, True, pickle.dumps(fn(rank, world, *args))))
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - report every failure to the parent
        results.put((rank, False, traceback.format_exc()))


def run_local(fn: Callable[..., Any], world: int, *args: Any, threads: int = 1,
              timeout: float = 900.0) -> list[Any]:
    """``[fn(0, world, *args), ..., fn(world - 1, world, *args)]``, each in its own process."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="medrecon-gloo-") as tmp:
        init_file = str(Path(tmp) / "rendezvous")
        env_threads = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)        # inherited by the spawned children
        try:
            procs = [ctx.Process(target=_child, args=(fn, r, world, init_file, threads, results, args))
                     for r in range(world)]
            for p in procs:
                p.start()
        finally:
            if env_threads is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = env_threads
        out: dict[int, Any] = {}
        errors: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < world and not errors:
                try:
                    rank, ok, value = results.get(timeout=0.5)
                except queue.Empty:
                    dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)
                            and r not in out]
                    if dead:
                        errors.append(f"rank {dead[0]} exited with code {procs[dead[0]].exitcode}")
                    elif time.monotonic() > deadline:
                        errors.append(f"no result within {timeout:.0f} s")
                    continue
                if ok:
                    out[rank] = pickle.loads(value)
                else:
                    errors.append(f"rank {rank}:\n{value}")
        finally:
            if errors:
                for p in procs:
                    p.kill()
            for p in procs:
                p.join()
    if errors:
        raise RuntimeError("a process of the local group failed: " + "\n".join(errors))
    return [out[r] for r in range(world)]
