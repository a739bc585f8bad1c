"""Machinery shared by the diffusion samplers: chunked prior calls, seeded noise, the step loop
with progress, periodic and on-signal state saving, and exact resume.

Conventions
- Volumes are ``[Z, Y, X]`` in the operator's dtype: real for CT, complex64 for MRI.
- The 2D prior sees a *prior batch* ``[B, Y, X]`` of real images: the slices themselves for real
  volumes, and for complex volumes the real and imaginary part of every slice as two separate
  images (``B = 2 Z``, ordered re(0), im(0), re(1), im(1), ...). ``chunk`` counts prior images.
- Every random number comes from one CPU ``torch.Generator`` seeded by the caller; noise is
  drawn on the CPU in float32 and then moved, so CPU and CUDA runs draw the same numbers.
- The state is saved in a :class:`~medrecon.samplers.state.StateStore` the caller hands over
  (samplers never open files).
- Distributed runs (``slab``: a :class:`~medrecon.distributed.slab.Slab` with ``world > 1``):
  every rank holds the slices ``[lo, hi)`` and draws the *whole volume's* noise, keeping its own
  rows, so each slice gets the same numbers as in a single process whatever the number of ranks;
  every rank saves its slab's state in the child store ``rank-<r>-of-<N>``; the ranks agree after
  every step whether one of them was interrupted, and then all save and stop.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from medrecon.distributed.reduce import volume_norm
from medrecon.errors import Interrupted, UserError
from medrecon.io.jsonio import json_text
from medrecon.physics.operator import LinearOperator, OperatorShapeError
from medrecon.prior.denoiser import Denoiser
from medrecon.prior.precision import Precision, network_autocast, resolve_precision
from medrecon.progress import tqdm
from medrecon.samplers.state import StateStore, Tensors

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

log = logging.getLogger(__name__)

# ``trace(i, quantities)``: called inside step ``i`` (0-based) with that step's intermediate values
# (names in each sampler's docstring; tensors are the sampler's own: read, do not modify).
# For tests and debugging; it does not change the result.
Trace = Callable[[int, dict[str, Any]], None]


class SamplingInterrupted(Interrupted):
    """SIGINT/SIGTERM arrived during sampling; the state was saved and the run can be resumed."""


# --------------------------------------------------------------------------------------------
# Inputs and the prior batch
# --------------------------------------------------------------------------------------------
def check_problem(op: LinearOperator, y: torch.Tensor, denoiser: Denoiser) -> int:
    """Validate ``y`` against ``op`` and the prior's image size; return the number of slices."""
    if not isinstance(y, torch.Tensor):
        raise UserError(f"measurement must be a torch tensor, got {type(y).__name__}")
    try:
        with torch.no_grad():
            op.adjoint(y)
    except OperatorShapeError as exc:
        raise UserError(f"measurement does not fit the operator: {exc}") from None
    image = tuple(int(s) for s in op.in_shape[1:])
    size = int(getattr(denoiser, "image_size", 0) or 0)
    fixed = bool(getattr(denoiser, "fixed_size", True))
    if fixed and size and (len(image) != 2 or image != (size, size)):
        raise UserError(f"the prior was trained on {size}x{size} slices but the operator's "
                        f"slices are {'x'.join(map(str, image))}; resample the volume or choose "
                        "a prior of that size")
    return int(y.shape[0])


def volume_shape(y: torch.Tensor, slab: Optional["Slab"] = None) -> list[int]:
    """The whole volume's data shape: ``y``'s, with every slice counted when ``y`` is one slab
    of a distributed run (checked against the slab)."""
    shape = [int(s) for s in y.shape]
    if slab is not None and slab.distributed:
        if shape[0] != slab.count:
            raise UserError(f"the data hold {shape[0]} slices but {slab} expects {slab.count}")
        shape[0] = slab.n
    return shape


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for complex64, float64 for complex128, else ``dtype``."""
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def to_prior_batch(x: torch.Tensor) -> torch.Tensor:
    """``[Z, Y, X]`` volume -> real prior batch ``[B, Y, X]`` (``B = 2 Z`` for complex)."""
    if not x.is_complex():
        return x
    z, ny, nx = x.shape
    return torch.view_as_real(x).permute(0, 3, 1, 2).reshape(2 * z, ny, nx)


def from_prior_batch(b: torch.Tensor, complex_dtype: Optional[torch.dtype]) -> torch.Tensor:
    """Inverse of :func:`to_prior_batch`; ``complex_dtype`` None for real volumes."""
    if complex_dtype is None:
        return b
    z2, ny, nx = b.shape
    pairs = b.reshape(z2 // 2, 2, ny, nx).permute(0, 2, 3, 1).contiguous()
    return torch.view_as_complex(pairs).to(complex_dtype)


def _net_dtype(denoiser: Denoiser, fallback: torch.dtype) -> torch.dtype:
    for t in list(denoiser.parameters()) + list(denoiser.buffers()):
        if t.is_floating_point():
            return t.dtype
    return fallback


def available_memory(device: torch.device) -> Optional[int]:
    """Bytes free for new tensors on ``device``: CUDA's free memory, or the host's available
    memory (``MemAvailable``) on the CPU; None when it cannot be read."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "cpu":
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
    except (OSError, RuntimeError, ValueError):
        return None
    return None


_CHUNK_NOTED: set = set()


def memory_chunk(denoiser: Denoiser, image: tuple[int, int], chunk: int, device: torch.device,
                 fraction: float = 0.5, available: Optional[int] = None) -> int:
    """The number of images per network call: ``chunk``, lowered so that the call's estimated
    peak memory (``denoiser.bytes_per_pixel`` x pixels x images) stays within ``fraction`` of
    the device's free memory (estimated before allocating; never below 1). Images of one call
    are independent, so the result does not depend on it."""
    per_image = int(getattr(denoiser, "bytes_per_pixel", 0) or 0) * int(image[0]) * int(image[1])
    free = available if available is not None else available_memory(torch.device(device))
    if per_image <= 0 or free is None:
        return chunk
    fits = max(1, int(fraction * free) // per_image)
    if fits < chunk and (image, chunk, fits) not in _CHUNK_NOTED:
        _CHUNK_NOTED.add((image, chunk, fits))
        log.info("network calls take %d slices of %dx%d at a time (not %d): about %.0f MB each, "
                 "%.0f MB free", fits, image[0], image[1], chunk, per_image / 2**20, free / 2**20)
    return min(chunk, fits)


@torch.no_grad()
def prior_chunked(denoiser: Denoiser, x: torch.Tensor, sigma: float, chunk: int,
                  kind: str = "denoise", precision: Optional[Precision] = None) -> torch.Tensor:
    """``D(x, sigma)`` (``kind="denoise"``) or the VE score (``kind="score"``) of a prior batch
    ``[B, Y, X]``, ``chunk`` images per network call, under ``precision``'s autocast (None:
    float32); output in ``x``'s dtype and device."""
    if chunk < 1:
        raise UserError(f"chunk must be a positive number of slices, got {chunk}")
    fn = denoiser.denoise if kind == "denoise" else denoiser.score
    dtype = _net_dtype(denoiser, x.dtype)
    chunk = memory_chunk(denoiser, tuple(x.shape[-2:]), chunk, x.device)
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk].unsqueeze(1).to(dtype)
        s = torch.full((part.shape[0],), float(sigma), dtype=dtype, device=x.device)
        with network_autocast(precision, x.device) if precision is not None else nullcontext():
            value = fn(part, s)
        out[start:start + chunk] = value[:, 0].to(x.dtype)
    return out


def network_precision(setting: str, denoiser: Denoiser, device: torch.device) -> Precision:
    """The precision ``setting`` resolves to on ``device``; a published network's own CUDA
    autocast is switched off when it resolves to float32."""
    precision = resolve_precision(setting, device)
    if getattr(denoiser, "precision", None) in ("auto", "fp32"):
        denoiser.precision = "fp32" if precision.dtype is None else "auto"
    return precision


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------
class NoiseSource:
    """Seeded standard normal noise: drawn on the CPU (float32), then moved to ``device``.

    With a distributed ``slab`` the whole volume's noise is drawn (dim 0 of ``shape`` is the
    local number of rows, a whole number per slice) and this rank's rows are kept, so the numbers
    of a slice do not depend on the number of ranks (the cost: every rank draws the volume).
    """

    def __init__(self, seed: int, slab: Optional["Slab"] = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {seed!r}")
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.slab = slab if slab is not None and slab.distributed else None

    def normal(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
               period: int = 1, rows_per_slice: int = 1) -> torch.Tensor:
        """``N(0, 1)`` of ``shape`` (a real dtype) on ``device``. ``period > 1``: correlated
        across slices (:mod:`medrecon.samplers.slice_noise`; ``rows_per_slice`` rows of dim 0
        belong to one slice), defined on the whole volume as the independent noise is."""
        if period > 1:
            from medrecon.samplers.slice_noise import anchor_count, interpolate_anchors

            rows = self.slab.global_rows(shape[0]) if self.slab is not None else shape[0]
            n = rows // rows_per_slice
            anchors = torch.randn((anchor_count(n, period), rows_per_slice, *shape[1:]),
                                  generator=self.generator, dtype=torch.float32)
            full = interpolate_anchors(anchors, n, period)
            mine = self.slab.take(full, rows_per_slice).clone() if self.slab is not None else full
            return mine.to(device=device, dtype=dtype)
        if self.slab is None:
            z = torch.randn(shape, generator=self.generator, dtype=torch.float32)
            return z.to(device=device, dtype=dtype)
        rows = self.slab.global_rows(shape[0])
        full = torch.randn((rows, *shape[1:]), generator=self.generator, dtype=torch.float32)
        mine = self.slab.take(full, rows // self.slab.n).clone()
        del full
        return mine.to(device=device, dtype=dtype)

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state.to("cpu", torch.uint8))


# --------------------------------------------------------------------------------------------
# Timing (network vs physics), synchronised on CUDA
# --------------------------------------------------------------------------------------------
@dataclass
class Timer:
    """Accumulated wall time per named phase (seconds)."""

    device: torch.device
    totals: dict[str, float] = field(default_factory=dict)

    def measure(self, name: str) -> "_Phase":
        return _Phase(self, name)


class _Phase:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        if self.timer.device.type == "cuda":
            torch.cuda.synchronize(self.timer.device)
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        if self.timer.device.type == "cuda":
            torch.cuda.synchronize(self.timer.device)
        t = self.timer.totals
        t[self.name] = t.get(self.name, 0.0) + time.perf_counter() - self.start


# --------------------------------------------------------------------------------------------
# SIGINT / SIGTERM
# --------------------------------------------------------------------------------------------
class InterruptGuard:
    """While active, SIGINT and SIGTERM only set :attr:`requested` (the loop then saves and
    stops). The first signal restores the previous handlers, so a second Ctrl-C acts at once.
    Inactive outside the main thread (Python delivers signals there only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = signum
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self) -> "InterruptGuard":
        if self.enabled:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()


# --------------------------------------------------------------------------------------------
# The step loop
# --------------------------------------------------------------------------------------------
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


def _json_normal(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, ...), for comparisons."""
    return json.loads(json_text(obj, indent=None))


_RANK_STORE = re.compile(r"rank-(\d+)-of-(\d+)$")


def rank_store_name(rank: int, world: int) -> str:
    """The child store of rank ``rank`` of a ``world``-process run."""
    return f"rank-{rank:03d}-of-{world:03d}"


def _saved_worlds(store: StateStore) -> set[int]:
    """Process counts of the states in ``store``: 1 for its own state, N for rank children."""
    worlds = {1} if store.exists() else set()
    for name in store.children():
        match = _RANK_STORE.match(name)
        if match:
            worlds.add(int(match.group(2)))
    return worlds


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def _check_saved(store: StateStore, mine: StateStore, world: int, method: str, ident: dict,
                 probes: dict[str, float], resume: bool) -> tuple[Optional[str], Optional[tuple]]:
    """This rank's verdict on the saved state: ``(error message or None, loaded state or None)``."""
    others = sorted(_saved_worlds(store) - {world})
    if not mine.exists():
        if not others:
            return None, None
        if not resume:
            return (f"{store.location} already holds a saved {method} state (of "
                    f"{_processes(others[0])}); resume it or choose another state directory"), None
        return (f"the state in {store.location} was saved by {_processes(others[0])} (one z-slab "
                f"each) and this run has {_processes(world)}; resume with {_processes(others[0])} "
                "or start afresh in another state directory"), None
    if not resume:
        return (f"{store.location} already holds a saved {method} state; resume it "
                "(resume=True / --resume) or choose another state directory"), None
    start, saved, doc = mine.load()
    if doc.get("identity") != ident:
        saved_ident = doc.get("identity") if isinstance(doc.get("identity"), dict) else {}
        diff = sorted(k for k in set(ident) | set(saved_ident) if ident.get(k) != saved_ident.get(k))
        if "prior_weights" in diff:
            return (f"the state in {store.location} was computed with a prior of other weights; "
                    "resume with the same prior (--prior) or choose another state directory"), None
        return (f"the state in {store.location} belongs to a different run (differs in: "
                f"{', '.join(diff)}); resume with the same settings and seed"), None
    saved_probes = doc.get("probes") if isinstance(doc.get("probes"), dict) else {"y_norm": doc.get("y_norm")}
    differ = _probes_differ(saved_probes, probes)
    if differ:
        what = "measurements" if all(k.startswith("y_") for k in differ) else "measurements or operator"
        return (f"the state in {store.location} was computed from different {what} (differs in: "
                f"{', '.join(differ)}); resume with the same input"), None
    return None, (start, saved)


def _resume_point(store: StateStore, slab: Optional["Slab"], method: str, ident: dict,
                  probes: dict[str, float], resume: bool) -> tuple[StateStore, Optional[tuple]]:
    """The store this rank saves to and the state to resume (None: a fresh start). Every rank
    reaches the same verdict: one rank's refusal is raised on all of them."""
    world = slab.world if slab is not None and slab.distributed else 1
    mine = store.child(rank_store_name(slab.rank, world)) if world > 1 else store
    try:
        error, loaded = _check_saved(store, mine, world, method, ident, probes, resume)
    except UserError as exc:                     # a damaged state file (DataError)
        error, loaded = str(exc), None
    if world > 1:
        verdicts = slab.all_gather_object((error, None if loaded is None else loaded[0]))
        error = next((e for e, _ in verdicts if e), None)
        steps = {s for _, s in verdicts}
        if error is None and len(steps) > 1:
            error = (f"the per-rank states in {store.location} do not match (saved after steps "
                     f"{sorted(steps, key=lambda s: -1 if s is None else s)}); start afresh in "
                     "another state directory")
    if error is not None:
        raise UserError(error)
    return mine, loaded


@torch.no_grad()
def problem_identity(op: LinearOperator, y: torch.Tensor,
                     denoiser: Denoiser) -> tuple[dict, dict[str, float]]:
    """What a sampler run reconstructs from, for resuming it: ``(exact, probes)``.

    ``exact``: ``{"prior_weights": SHA-256 of the prior's parameters}``. ``probes``: positive
    numbers that change with the measurement and the operator (``||y||``, a seeded weighting
    of ``y``, the gain of ``A`` and of a weighted ``A`` on a seeded image, ``||A^H y||``);
    :func:`run_steps` compares them to a relative 1e-4, which floating-point noise across
    devices and thread counts stays far below."""
    from medrecon.prior.checkpoint import weights_fingerprint

    g = torch.Generator(device="cpu").manual_seed(20240601)
    rdt = real_dtype(op.in_dtype)

    def draw(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        t = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5  # in [0.5, 1.5)
        return t.to(device=y.device, dtype=real_dtype(dtype))

    probe = torch.randn((int(y.shape[0]), *(int(s) for s in op.in_shape[1:])), generator=g,
                        dtype=torch.float64).to(device=y.device, dtype=rdt).to(op.in_dtype)
    ap = op.forward(probe)
    w = draw(tuple(y.shape), y.dtype)
    probes = {"y_norm": float(y.norm()), "y_weighted": float((w * y).norm()),
              "op_gain": float(ap.norm() / probe.norm()),
              "op_weighted": float((w * ap).norm() / probe.norm()),
              "adjoint_y": float(op.adjoint(y).norm())}
    return {"prior_weights": weights_fingerprint(denoiser)}, probes


def sampler_identity(config: Any, seed: int, op_norm_sq: float, shape: list[int],
                     op: LinearOperator, denoiser: Denoiser) -> dict:
    """Everything besides the data that determines a sampler's result (saved with its state
    and compared on resume): settings, seed, ``||A||^2``, the volume's data shape, dtype, the
    prior's sigma range and the network's resolved precision."""
    return {"config": config.identity(), "seed": seed, "op_norm_sq": op_norm_sq,
            "shape": shape, "dtype": str(op.in_dtype),
            "prior_sigma": [float(denoiser.sigma_min), float(denoiser.sigma_max)],
            "network_precision": resolve_precision(config.precision, op.device).name}


def check_resumable(method: str, n_steps: int, identity: dict, probes: dict[str, float],
                    store: StateStore, slab: Optional["Slab"] = None) -> None:
    """Refuse (UserError) before any work what :func:`run_steps` would refuse on ``resume``:
    a state in ``store`` saved by another run (settings, seed, steps, prior, measurement or
    process count). ``identity`` as built by the sampler, including the prior's fingerprint.
    A collective when ``slab`` is distributed."""
    probes = dict(probes)
    ident = _json_normal({"method": method, "steps": n_steps, **identity})
    _resume_point(store, slab, method, ident, probes, resume=True)


def _probes_differ(saved: dict, now: dict[str, float]) -> list[str]:
    out = []
    for key, value in now.items():
        old = saved.get(key)
        try:
            old = float(old)
        except (TypeError, ValueError):
            out.append(key)
            continue
        if not abs(old - value) <= 1e-4 * max(abs(value), abs(old), 1e-30):
            out.append(key)
    return out


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
    if store is not None and not distributed and hasattr(store, "dir"):
        # one run per state folder: a second run on it is refused (see medrecon.io.outputs)
        from medrecon.io.outputs import hold_lock

        store.dir.parent.mkdir(parents=True, exist_ok=True)
        with hold_lock(store.dir, "state directory"):
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
    ident = _json_normal({"method": method, "steps": n_steps, **identity})
    start, tensors, resumed, mine = 0, None, None, None
    if store is not None:
        mine, loaded = _resume_point(store, slab, method, ident, probes, options.resume)
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
                    where += f" ({slab.world} z-slabs: resume with {_processes(slab.world)})"
                raise SamplingInterrupted(
                    f"{method} interrupted by {signal.Signals(signum).name} after step "
                    f"{done}/{n_steps}; {where}; resume with resume=True (--resume)")
            if options.save_every and done % options.save_every == 0 and done < n_steps:
                save(done)
        if start < n_steps:
            save(n_steps)
    return tensors, {"resumed_from": resumed}


def global_norm(t: torch.Tensor, slab: Optional["Slab"] = None) -> float:
    """``||t||`` of the whole volume (an ordered reduction over a distributed ``slab``)."""
    return volume_norm(t, slab)


@torch.no_grad()
def data_residual(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, y_norm: float,
                  slab: Optional["Slab"] = None) -> float:
    """Relative data residual ``||A x - y|| / ||y||`` (of the whole volume)."""
    return global_norm(op.forward(x) - y, slab) / max(y_norm, 1e-30)


@dataclass
class SampleResult:
    """A sampler's output: the volume ``x`` ``[Z, Y, X]`` (prior units, the operator's dtype and
    device) and ``info`` (settings used, network evaluations, timings, final residual)."""

    x: torch.Tensor
    info: dict
