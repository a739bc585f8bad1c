"""Re-noising noise correlated across slices (after ISCS, arXiv 2602.04162): instead of an
independent draw per slice, slices lie on spherical interpolation paths between independent
anchor draws placed every ``period`` slices along z.

Slice ``k`` between anchors ``a_j`` (slice ``j P``) and ``a_{j+1}`` (slice ``(j + 1) P``), with
``t = (k - j P) / P``, gets ``cos(t pi / 2) a_j + sin(t pi / 2) a_{j+1}``: every pixel stays
``N(0, 1)`` (the anchors are independent, ``cos^2 + sin^2 = 1``), and neighbouring slices
are correlated by ``cos(pi / (2 P))`` (0.71 for P = 2, 0.92 for P = 4). ``period = 1`` is the
independent noise of DDS. The anchors are placed on the whole volume's slice index, so a slab
of a distributed run takes exactly its rows of the one-process noise.
"""

from __future__ import annotations

import math

import torch


def anchor_count(n_slices: int, period: int) -> int:
    """Number of anchor draws a volume of ``n_slices`` needs: anchors at 0, P, 2P, ... up to
    the first at or beyond the last slice."""
    return (n_slices - 1) // period + 2 if n_slices > 1 else 1


def interpolate_anchors(anchors: torch.Tensor, n_slices: int, period: int) -> torch.Tensor:
    """``[A, R, ...]`` independent anchors (R rows per slice: 1 real, 2 for re/im) ->
    ``[n_slices * R, ...]`` slice noise on the spherical paths between them (module docstring)."""
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    k = torch.arange(n_slices)
    j = torch.div(k, period, rounding_mode="floor")
    t = (k - j * period).to(torch.float64) / period
    a = torch.cos(t * math.pi / 2).to(anchors.dtype)
    b = torch.sin(t * math.pi / 2).to(anchors.dtype)
    shape = (n_slices,) + (1,) * (anchors.dim() - 1)
    nxt = torch.clamp(j + 1, max=anchors.shape[0] - 1)
    out = a.reshape(shape) * anchors[j] + b.reshape(shape) * anchors[nxt]
    return out.reshape(n_slices * anchors.shape[1], *anchors.shape[2:])
