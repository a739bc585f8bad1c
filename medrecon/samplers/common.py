"""Machinery shared by the diffusion samplers: chunked prior calls, seeded noise, the step loop
with progress, periodic and on-signal state saving, and exact resume.

Conventions
- Volumes are ``[Z, Y, X]`` in the operator's dtype: real for CT, complex64 for MRI.
- The 2D prior sees a *prior batch* ``[B, Y, X]`` of real images: the slices themselves for real
  volumes, and for complex volumes the real and imaginary part of every slice as two separate
  images (``B = 2 Z``, ordered re(0), im(0), re(1), im(1), ...). ``chunk`` counts prior images.
- Every random number comes from one CPU ``torch.Generator`` seeded by the caller; noise is
  drawn on the CPU in float32 and then moved, so CPU and CUDA runs draw the same numbers.
- State files: ``STATE_DIR/state.json`` (format, step, what the run is) names
  ``STATE_DIR/state-<step>.pt`` (tensors only; read back with ``weights_only=True``). Both are
  written atomically and the JSON is written last, so the pair on disk is always consistent.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from medrecon.progress import tqdm

from medrecon.errors import DataError, Interrupted, UserError
from medrecon.io.atomic import atomic_path
from medrecon.io.jsonio import json_text
from medrecon.physics.operator import LinearOperator, OperatorShapeError
from medrecon.prior.denoiser import Denoiser

log = logging.getLogger(__name__)

STATE_FORMAT = "medrecon-sampler-state/1"
Tensors = dict[str, torch.Tensor]
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
    if size and (len(image) != 2 or image != (size, size)):
        raise UserError(f"the prior was trained on {size}x{size} slices but the operator's "
                        f"slices are {'x'.join(map(str, image))}; resample the volume or choose "
                        "a prior of that size")
    return int(y.shape[0])


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


@torch.no_grad()
def prior_chunked(denoiser: Denoiser, x: torch.Tensor, sigma: float, chunk: int,
                  kind: str = "denoise") -> torch.Tensor:
    """``D(x, sigma)`` (``kind="denoise"``) or the VE score (``kind="score"``) of a prior batch
    ``[B, Y, X]``, ``chunk`` images per network call; output in ``x``'s dtype and device."""
    if chunk < 1:
        raise UserError(f"chunk must be a positive number of slices, got {chunk}")
    fn = denoiser.denoise if kind == "denoise" else denoiser.score
    dtype = _net_dtype(denoiser, x.dtype)
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk].unsqueeze(1).to(dtype)
        s = torch.full((part.shape[0],), float(sigma), dtype=dtype, device=x.device)
        out[start:start + chunk] = fn(part, s)[:, 0].to(x.dtype)
    return out


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------
class NoiseSource:
    """Seeded standard normal noise: drawn on the CPU (float32), then moved to ``device``."""

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {seed!r}")
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def normal(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``N(0, 1)`` of ``shape`` (a real dtype) on ``device``."""
        z = torch.randn(shape, generator=self.generator, dtype=torch.float32)
        return z.to(device=device, dtype=dtype)

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
# State files
# --------------------------------------------------------------------------------------------
def _json_normal(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, ...), for comparisons."""
    return json.loads(json_text(obj, indent=None))


class StateStore:
    """Atomic save/load of a sampler's state in a directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"state directory {self.dir} exists and is not a directory")
        self.json_path = self.dir / "state.json"

    def exists(self) -> bool:
        return self.json_path.exists()

    def save(self, step: int, tensors: Tensors, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"state-{step:06d}.pt"
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        with atomic_path(self.dir / name, overwrite=True, what="sampler state") as tmp:
            torch.save(cpu, tmp)
        doc = {"format": STATE_FORMAT, "step": int(step), "tensors": name, **meta}
        with atomic_path(self.json_path, overwrite=True, what="sampler state") as tmp:
            tmp.write_text(json_text(doc, indent=1, sort_keys=True), encoding="utf-8")
        for old in self.dir.glob("state-*.pt"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def load(self) -> tuple[int, Tensors, dict]:
        try:
            doc = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"sampler state {self.json_path} is unreadable: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise DataError(f"sampler state {self.json_path} is not a {STATE_FORMAT} file")
        path = self.dir / str(doc.get("tensors", ""))
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a DataError for the user
            raise DataError(f"sampler state tensors {path} are unreadable: {exc}") from None
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise DataError(f"sampler state tensors {path} are not a dict of tensors")
        return int(doc["step"]), tensors, doc


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

    state_dir: where state is saved (None: no saving, signals act as usual).
    save_every: save the state every this many steps (0: only on SIGINT/SIGTERM and at the end).
    resume: continue from the state in ``state_dir`` (a fresh start when there is none).
    progress: show a tqdm bar with the step and the data residual ``||A x - y|| / ||y||``.
    callback: ``callback(step_done, tensors)`` after every step (tensors: the sampler's state).
    """

    state_dir: Optional[str | os.PathLike] = None
    save_every: int = 0
    resume: bool = False
    progress: bool = False
    callback: Optional[Callable[[int, Tensors], None]] = None

    def __post_init__(self) -> None:
        if self.save_every < 0:
            raise UserError(f"save_every must be >= 0, got {self.save_every}")
        if self.resume and self.state_dir is None:
            raise UserError("resume needs a state directory (state_dir / --state-dir)")


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
              options: RunOptions) -> tuple[Tensors, dict]:
    """Run ``step(i, tensors)`` for ``i = start .. n_steps - 1`` and return the final tensors.

    ``identity`` (JSON-serialisable) is everything that determines the result besides the data
    (settings, seed, the prior's weights hash: see :func:`problem_identity`); ``y_norm`` is
    ``||y||`` or a dict of probes of the measurement and the operator. A saved state is only
    resumed when the identity matches and every probe agrees to a relative 1e-4. The state
    folder is locked for the run (a second run on it is refused).
    Returns ``(tensors, info)`` with ``info = {"resumed_from": step or None}``.
    """
    store = StateStore(options.state_dir) if options.state_dir is not None else None
    if store is None:
        return _run_steps(method, n_steps, identity, y_norm, init, step, noise, residual,
                          device, options, None)
    from medrecon.io.outputs import hold_lock

    store.dir.parent.mkdir(parents=True, exist_ok=True)
    with hold_lock(store.dir, "state directory"):
        return _run_steps(method, n_steps, identity, y_norm, init, step, noise, residual,
                          device, options, store)


def _run_steps(method: str, n_steps: int, identity: dict, y_norm: float | dict[str, float],
               init: Callable[[], Tensors], step: Callable[[int, Tensors], Tensors],
               noise: NoiseSource, residual: Callable[[Tensors], float], device: torch.device,
               options: RunOptions, store: Optional[StateStore]) -> tuple[Tensors, dict]:
    probes = dict(y_norm) if isinstance(y_norm, dict) else {"y_norm": float(y_norm)}
    ident = _json_normal({"method": method, "steps": n_steps, **identity})
    start, tensors, resumed = 0, None, None
    if store is not None and store.exists():
        if not options.resume:
            raise UserError(f"{store.dir} already holds a saved {method} state; resume it "
                            "(resume=True / --resume) or choose another state directory")
        start, saved, doc = store.load()
        if doc.get("identity") != ident:
            saved_ident = doc.get("identity") if isinstance(doc.get("identity"), dict) else {}
            diff = sorted(k for k in set(ident) | set(saved_ident)
                          if ident.get(k) != saved_ident.get(k))
            if "prior_weights" in diff:
                raise UserError(f"the state in {store.dir} was computed with a prior of other "
                                f"weights; resume with the same prior (--prior) or choose "
                                f"another state directory")
            raise UserError(f"the state in {store.dir} belongs to a different run (differs in: "
                            f"{', '.join(diff)}); resume with the same settings and seed")
        saved_probes = doc.get("probes") if isinstance(doc.get("probes"), dict) else \
            {"y_norm": doc.get("y_norm")}
        differ = _probes_differ(saved_probes, probes)
        if differ:
            what = "measurements" if all(k.startswith("y_") for k in differ) else \
                "measurements or operator"
            raise UserError(f"the state in {store.dir} was computed from different {what} "
                            f"(differs in: {', '.join(differ)}); resume with the same input")
        noise.set_state(saved.pop("rng"))
        tensors = {k: v.to(device) for k, v in saved.items()}
        resumed = start
        log.info("%s: resuming from step %d/%d in %s", method, start, n_steps, store.dir)
    elif options.resume:
        log.warning("%s: no saved state in %s; starting from the beginning", method,
                    options.state_dir)
    if tensors is None:
        tensors = init()

    def save(done: int) -> None:
        if store is not None:
            store.save(done, {**tensors, "rng": noise.get_state()},
                       {"method": method, "identity": ident, "y_norm": probes.get("y_norm"),
                        "probes": probes})

    bar = tqdm(total=n_steps, initial=start, desc=method, disable=not options.progress,
               leave=False, dynamic_ncols=True)
    with InterruptGuard(enabled=store is not None) as guard, bar:
        for i in range(start, n_steps):
            tensors = step(i, tensors)
            done = i + 1
            if options.progress:
                bar.set_postfix(residual=f"{residual(tensors):.3e}", refresh=False)
                bar.update(1)
            if options.callback is not None:
                options.callback(done, tensors)
            if guard.requested is not None:
                save(done)
                name = signal.Signals(guard.requested).name
                raise SamplingInterrupted(
                    f"{method} interrupted by {name} after step {done}/{n_steps}; state saved "
                    f"in {store.dir if store else '-'}; resume with resume=True (--resume)")
            if options.save_every and done % options.save_every == 0 and done < n_steps:
                save(done)
        if start < n_steps:
            save(n_steps)
    return tensors, {"resumed_from": resumed}


@torch.no_grad()
def data_residual(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, y_norm: float) -> float:
    """Relative data residual ``||A x - y|| / ||y||``."""
    return float((op.forward(x) - y).norm()) / max(y_norm, 1e-30)


@dataclass
class SampleResult:
    """A sampler's output: the volume ``x`` ``[Z, Y, X]`` (prior units, the operator's dtype and
    device) and ``info`` (settings used, network evaluations, timings, final residual)."""

    x: torch.Tensor
    info: dict
