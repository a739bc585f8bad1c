"""Posterior spread: K seeded reconstructions -> per-voxel mean and standard deviation.

Sample ``k`` uses seed ``seed + k``. The mean and the (unbiased, K - 1) standard deviation are
accumulated in sample order (Welford), so memory is two volumes and the result does not depend
on interruptions. For complex volumes the std is ``sqrt(E |x - mean|^2)`` (real and imaginary
spread together). With a state ``store`` every sample keeps its state in the child store
``sample-<k>``; ``resume`` reuses finished samples and continues the interrupted one. With a
distributed ``slab`` every rank accumulates the mean and std of its slices.

The spread reflects the sampler's randomness: DDS with ``eta = 0`` and ``init_noise=False`` is
deterministic, so its std is exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch

from medrecon.errors import UserError
from medrecon.physics.operator import LinearOperator
from medrecon.prior.denoiser import Denoiser
from medrecon.samplers.config import SamplerConfig
from medrecon.samplers.conventions import operator_norm_sq
from medrecon.samplers.dds import dds
from medrecon.samplers.mbir import mbir
from medrecon.samplers.state import StateStore

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

SAMPLERS = {"dds": dds, "mbir": mbir}


def sample_store(store: StateStore, k: int) -> StateStore:
    """Where sample ``k`` of a posterior run keeps its state."""
    return store.child(f"sample-{k:03d}")


@dataclass
class PosteriorResult:
    """``mean`` ``[Z, Y, X]`` (the operator's dtype), ``std`` ``[Z, Y, X]`` (real), per-sample info."""

    mean: torch.Tensor
    std: torch.Tensor
    samples: int
    seeds: list[int]
    infos: list[dict] = field(default_factory=list)


def sample_posterior(method: str, op: LinearOperator, y: torch.Tensor, denoiser: Denoiser,
                     samples: int, config: Optional[SamplerConfig] = None, *, seed: int = 0,
                     op_norm_sq: Optional[float] = None,
                     store: Optional[StateStore] = None, save_every: int = 0,
                     resume: bool = False, progress: bool = False,
                     slab: Optional["Slab"] = None, **overrides: Any) -> PosteriorResult:
    """Run ``samples`` (>= 2) reconstructions of ``method`` ("dds" | "mbir") with seeds
    ``seed, seed + 1, ...`` and return their per-voxel mean and standard deviation."""
    if method not in SAMPLERS:
        raise UserError(f"unknown sampler {method!r}; choose one of {sorted(SAMPLERS)}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise UserError(f"samples must be an integer >= 2 for a standard deviation, got {samples!r}")
    sampler = SAMPLERS[method]
    norm_sq = operator_norm_sq(op, slab) if op_norm_sq is None else float(op_norm_sq)
    mean: Optional[torch.Tensor] = None
    m2: Optional[torch.Tensor] = None
    infos = []
    for k in range(samples):
        sub = None if store is None else sample_store(store, k)
        result = sampler(op, y, denoiser, config, seed=seed + k, op_norm_sq=norm_sq,
                         store=sub, save_every=save_every, resume=resume,
                         progress=progress, slab=slab, **overrides)
        x = result.x
        infos.append(result.info)
        if mean is None:
            mean, m2 = x.clone(), torch.zeros(x.shape, dtype=x.real.dtype, device=x.device)
            continue
        delta = x - mean
        mean = mean + delta / (k + 1)
        m2 = m2 + (delta.conj() * (x - mean)).real if x.is_complex() else m2 + delta * (x - mean)
    assert mean is not None and m2 is not None
    std = torch.sqrt(m2.clamp_min(0) / (samples - 1))
    return PosteriorResult(mean=mean, std=std, samples=samples,
                           seeds=[seed + k for k in range(samples)], infos=infos)
