"""The resumable step loop every sampler runs: seeded steps with progress, the state saved
periodically and on SIGINT/SIGTERM, and exact resume.

- The state is saved in a :class:`~medrecon.samplers.state.StateStore` the caller hands over
  (samplers never open files); a resumed run continues with the saved tensors and noise
  generator, so its result equals an uninterrupted run's (:mod:`medrecon.samplers.resume`
  decides whether a saved state may be resumed).
- Distributed runs (``slab``: a :class:`~medrecon.distributed.slab.Slab` with ``world > 1``):
  every rank runs the loop on its slab and saves its state in the child store
  ``rank-<r>-of-<N>``; the ranks agree after every step whether one of them was interrupted,
  and then all save and stop.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from medrecon.errors import UserError
from medrecon.progress import tqdm
from medrecon.samplers.interruption import InterruptGuard, SamplingInterrupted
from medrecon.samplers.noise import NoiseSource
from medrecon.samplers.resume import describe_processes, resume_point, run_identity
from medrecon.samplers.state import StateStore, Tensors

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

log = logging.getLogger(__name__)


# ``trace(i, quantities)``: called inside step ``i`` (0-based) with that step's intermediate values
# (names in each sampler's docstring; tensors are the sampler's own: read, do not modify).
# For tests and debugging; it does not change the result.
Trace = Callable[[int, dict[str, Any]], None]


@dataclass
class RunOptions:
    """How a sampler runs (none of this changes the result).

    store: where the state is saved (None: no saving; signals act as usual in one process).
    save_every: save the state every this many steps (0: only on SIGINT/SIGTERM and at the end).
    resume: continue from the state in ``store`` (a fresh start when there is none).
    progress: show a tqdm bar with the step and the data residual ``||A x - y|| / ||y||``.
    callback: ``callback(step_done, tensors)`` after every step (tensors: the sampler's state).
    """

    store: Optional[StateStore] = None
    save_every: int = 0
    resume: bool = False
    progress: bool = False
    callback: Optional[Callable[[int, Tensors], None]] = None

    def __post_init__(self) -> None:
        if self.store is not None and not isinstance(self.store, StateStore):
            raise UserError(f"store must be a StateStore, got {type(self.store).__name__}")
        if self.save_every < 0:
            raise UserError(f"save_every must be >= 0, got {self.save_every}")
        if self.resume and self.store is None:
            raise UserError("resume needs a state store (store= / --state-dir)")


def run_steps(method: str, n_steps: int, identity: dict, y_norm: float | dict[str, float],
              init: Callable[[], Tensors], step: Callable[[int, Tensors], Tensors],
              noise: NoiseSource, residual: Callable[[Tensors], float], device: torch.device,
              options: RunOptions, slab: Optional["Slab"] = None) -> tuple[Tensors, dict]:
    """Run ``step(i, tensors)`` for ``i = start .. n_steps - 1`` and return the final tensors.

    ``identity`` (JSON-serialisable) is everything that determines the result besides the data;
    a saved state is only resumed when it matches (and ``y_norm`` agrees to 1e-5). With a
    distributed ``slab`` every rank runs this loop on its slab (see the module docstring).
    Returns ``(tensors, info)`` with ``info = {"resumed_from": step or None}``.
    """
    distributed = slab is not None and slab.distributed
    store = options.store
    if store is not None and not distributed:
        # one run per state store: a second run on it is refused (StateStore.exclusive)
        with store.exclusive():
            return _run_steps(method, n_steps, identity, y_norm, init, step, noise, residual,
                              device, options, slab)
    return _run_steps(method, n_steps, identity, y_norm, init, step, noise, residual, device,
                      options, slab)


def _run_steps(method: str, n_steps: int, identity: dict, y_norm: float | dict[str, float],
               init: Callable[[], Tensors], step: Callable[[int, Tensors], Tensors],
               noise: NoiseSource, residual: Callable[[Tensors], float], device: torch.device,
               options: RunOptions, slab: Optional["Slab"]) -> tuple[Tensors, dict]:
    distributed = slab is not None and slab.distributed
    store = options.store
    probes = dict(y_norm) if isinstance(y_norm, dict) else {"y_norm": float(y_norm)}
    ident = run_identity(method, n_steps, identity)
    start, tensors, resumed, mine = 0, None, None, None
    if store is not None:
        mine, loaded = resume_point(store, slab, method, ident, probes, options.resume)
        if loaded is not None:
            start, saved = loaded
            noise.set_state(saved.pop("rng"))
            tensors = {k: v.to(device) for k, v in saved.items()}
            resumed = start
            log.info("%s: resuming from step %d/%d in %s", method, start, n_steps, mine.location)
        elif options.resume:
            log.warning("%s: no saved state in %s; starting from the beginning", method,
                        store.location)
    if tensors is None:
        tensors = init()

    def save(done: int) -> None:
        if mine is not None:
            meta = {"method": method, "identity": ident, "y_norm": probes.get("y_norm"), "probes": probes}
            if distributed:
                meta["slab"] = {"rank": slab.rank, "processes": slab.world, "slices": [slab.lo, slab.hi]}
            mine.save(done, {**tensors, "rng": noise.get_state()}, meta)

    show = options.progress and (slab is None or slab.rank == 0)
    bar = tqdm(total=n_steps, initial=start, desc=method, disable=not show, leave=False,
               dynamic_ncols=True)
    with InterruptGuard(enabled=store is not None or distributed) as guard, bar:
        for i in range(start, n_steps):
            tensors = step(i, tensors)
            done = i + 1
            if options.progress:                       # a collective when distributed
                value = residual(tensors)
                bar.set_postfix(residual=f"{value:.3e}", refresh=False)
                bar.update(1)
            if options.callback is not None:
                options.callback(done, tensors)
            signum = guard.requested or 0
            if distributed:                            # stop together when any rank was signalled
                signum = slab.max_int(signum)
            if signum:
                save(done)
                where = (f"state saved in {store.location}" if store is not None else
                         "no state saved (no state directory)")
                if distributed:
                    where += f" ({slab.world} z-slabs: resume with {describe_processes(slab.world)})"
                raise SamplingInterrupted(
                    f"{method} interrupted by {signal.Signals(signum).name} after step "
                    f"{done}/{n_steps}; {where}; resume with resume=True (--resume)")
            if options.save_every and done % options.save_every == 0 and done < n_steps:
                save(done)
        if start < n_steps:
            save(n_steps)
    return tensors, {"resumed_from": resumed}


@dataclass
class SampleResult:
    """A sampler's output: the volume ``x`` ``[Z, Y, X]`` (prior units, the operator's dtype and
    device) and ``info`` (settings used, network evaluations, timings, final residual)."""

    x: torch.Tensor
    info: dict
