"""Resuming a sampler run: what identifies the run, and the verdict on a state saved before.

A run is identified by its settings, seed, step count, the prior's weights, the volume's data
shape (``identity``, compared exactly) and by probes of the measurement and the operator
(compared to a relative 1e-4). A state saved by another run, or by another number of processes,
is refused with a :class:`~medrecon.errors.UserError` naming what differs. In a distributed run
every rank keeps its slab's state in the child store ``rank-<r>-of-<N>`` and all ranks reach the
same verdict.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Optional

import torch

from medrecon.errors import UserError
from medrecon.jsontext import json_text
from medrecon.physics.operator import LinearOperator
from medrecon.prior.denoiser import Denoiser
from medrecon.prior.precision import resolve_precision
from medrecon.samplers.problem import real_dtype
from medrecon.samplers.state import StateStore

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab


def run_identity(method: str, n_steps: int, identity: dict) -> dict:
    """The identity saved with a state and compared on resume: ``method``, ``n_steps`` and
    ``identity`` as they read back from JSON (tuples become lists, ...)."""
    return json.loads(json_text({"method": method, "steps": n_steps, **identity}, indent=None))


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


def describe_processes(n: int) -> str:
    """``"1 process"`` or ``"N processes"``, for messages."""
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
                    f"{describe_processes(others[0])}); resume it or choose another state "
                    "directory"), None
        return (f"the state in {store.location} was saved by {describe_processes(others[0])} "
                f"(one z-slab each) and this run has {describe_processes(world)}; resume with "
                f"{describe_processes(others[0])} or start afresh in another state directory"), None
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


def resume_point(store: StateStore, slab: Optional["Slab"], method: str, ident: dict,
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
    :func:`~medrecon.samplers.loop.run_steps` compares them to a relative 1e-4, which
    floating-point noise across devices and thread counts stays far below."""
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
    """Refuse (UserError) before any work what :func:`~medrecon.samplers.loop.run_steps` would
    refuse on ``resume``: a state in ``store`` saved by another run (settings, seed, steps,
    prior, measurement or process count). ``identity`` as built by the sampler, including the prior's fingerprint.
    A collective when ``slab`` is distributed."""
    probes = dict(probes)
    ident = run_identity(method, n_steps, identity)
    resume_point(store, slab, method, ident, probes, resume=True)


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
