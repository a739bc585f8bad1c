"""Ordered reductions: whole-volume scalars that do not depend on how the slices are shared out.

A scalar of a ``[Z, ...]`` volume (a CG inner product, a squared norm, a data residual, a power
iteration norm) is computed in two stages, in one process and under torchrun/srun alike:

1. every process reduces each of its slices to one float64 partial value (:func:`slice_sums`,
   :func:`slice_inner`); a slice's value is computed by the same floating-point operations
   whatever the number of slices beside it and the number of threads;
2. :func:`ordered_sum` gathers the partial values of all slices, in slice order, and adds them
   exactly rounded (``math.fsum``), so the sum cannot depend on where the slab boundaries fall.

The single-process path (``slab=None`` or a one-process slab) runs stage 2 on its own slices,
so N processes reproduce the one-process result bit for bit. Products of float32 entries are
formed in float64, where they are exact.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab


def _as_real(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def slice_sums(t: torch.Tensor) -> torch.Tensor:
    """The sum of every slice of ``t`` ``[Z, ...]`` (real), as float64 ``[Z]``.

    Each row is reduced serially by torch's vectorised kernel; a lone row is reduced as one of
    two identical rows, because a single-output reduction would be split over threads (and its
    rounding would then depend on the thread count)."""
    rows = t.reshape(t.shape[0], -1).to(torch.float64)
    if rows.shape[0] == 1:
        return rows.expand(2, -1).sum(dim=1)[:1]
    return rows.sum(dim=1)


def slice_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re <a_k, b_k> = Re sum(conj(a_k) b_k)`` of every slice ``k`` (float64 ``[Z]``)."""
    ra, rb = _as_real(a).to(torch.float64), _as_real(b).to(torch.float64)
    return slice_sums(ra * rb)


def slice_norm_sq(t: torch.Tensor) -> torch.Tensor:
    """``||t_k||^2`` of every slice ``k`` (float64 ``[Z]``; complex entries count ``|v|^2``)."""
    r = _as_real(t).to(torch.float64)
    return slice_sums(r * r)


def ordered_sum(partials: torch.Tensor, slab: Optional["Slab"] = None) -> torch.Tensor:
    """The whole volume's sum of per-slice values: ``partials`` ``[count, *K]`` holds this
    process's slices (all of them without a distributed ``slab``); returns float64 ``[*K]`` on
    ``partials``'s device, equal on every rank and equal to the one-process value.

    A collective when ``slab`` is distributed (every rank must call it)."""
    values = partials.detach().to(torch.float64).contiguous()
    if slab is not None and slab.distributed:
        if values.shape[0] != slab.count:
            raise ValueError(f"{values.shape[0]} per-slice values for {slab}")
        values = slab.all_gather(values)
    columns = values.cpu().reshape(values.shape[0], -1).T.tolist()
    total = [math.fsum(column) for column in columns]
    return torch.tensor(total, dtype=torch.float64, device=partials.device).reshape(partials.shape[1:])


def volume_inner(a: torch.Tensor, b: torch.Tensor, slab: Optional["Slab"] = None) -> torch.Tensor:
    """``Re <a, b>`` of the whole volume (float64 scalar tensor); ``a``, ``b`` ``[count, ...]``."""
    return ordered_sum(slice_inner(a, b), slab)


def volume_norm_sq(t: torch.Tensor, slab: Optional["Slab"] = None) -> torch.Tensor:
    """``||t||^2`` of the whole volume (float64 scalar tensor)."""
    return ordered_sum(slice_norm_sq(t), slab)


def volume_norm(t: torch.Tensor, slab: Optional["Slab"] = None) -> float:
    """``||t||`` of the whole volume."""
    return math.sqrt(float(volume_norm_sq(t, slab)))
