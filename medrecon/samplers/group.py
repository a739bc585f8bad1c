"""The Tweedie estimate of a volume from a slice-group prior (issue 20; ALGORITHMS.md section 7).

A group prior denoises C neighbouring slices at once (``[B, C, H, W]``). DDS asks for the
estimate of every slice at each step; three ways to assemble it from groups (``combine``):

- ``"tile"``: groups tile z, starting at ``offset - C, offset, offset + C, ...`` clipped into the
  volume (edge-anchored: the first group starts at slice 0 and the last ends at slice n - 1, no
  wrap-around), ``offset = step mod C`` so the group borders move every step; slices covered by
  two groups get the mean of both. About ``n / C + 1`` network calls per step: T / C per slice.
- ``"centre"``: one group centred on every slice (shifted inwards at the volume's ends); each
  slice takes the output of the group it is the centre of. n calls per step, as 2D DDS.
- ``"mean"``: every group of C consecutive slices; each slice takes the mean of the outputs of
  all groups containing it. ``n - C + 1`` calls per step.

A *centre-output* group prior (``centre_output``: C slices in, the centre one out) takes
``"centre"`` only: one call per slice and step, as a 2D prior, the group ``k - C//2 .. k + C//2``
mirrored at the volume's ends (slice 0 sees slice 1 on both sides), so every slice sits at the
centre of its own group. ``"auto"`` is ``"centre"`` for such a prior and ``"tile"`` otherwise.

Distributed (``slab``): the whole prior batch is gathered (every rank holds all slices), each
rank denoises only the groups that touch its slices and keeps its rows, so the groups and their
combination are those of one process. Groups at a slab border are computed by both ranks.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Optional

import torch

from medrecon.errors import UserError
from medrecon.prior.precision import Precision, network_autocast

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

COMBINE = ("auto", "tile", "centre", "mean")


def resolve_combine(combine: str, denoiser: torch.nn.Module) -> str:
    """The combination a run uses: ``"auto"`` resolved for the prior (module docstring); a
    centre-output prior refuses anything but ``"centre"``."""
    centre_output = bool(getattr(denoiser, "centre_output", False))
    if combine == "auto":
        return "centre" if centre_output else "tile"
    if centre_output and combine != "centre":
        raise UserError(f"this slice-group prior outputs only the centre slice of a group: "
                        f"group_combine must be centre or auto, got {combine!r}")
    return combine


def mirrored_group(k: int, n: int, c: int) -> list[int]:
    """Slices ``k - c//2 .. k + c//2`` of an ``n``-slice volume, mirrored at its ends."""
    if n < c // 2 + 1:
        raise UserError(f"a slice-group prior of {c} slices needs at least {c // 2 + 1} slices; "
                        f"the volume has {n}")
    out = []
    for j in range(k - c // 2, k + c // 2 + 1):
        j = -j if j < 0 else j
        out.append(2 * (n - 1) - j if j > n - 1 else j)
    return out


def group_starts(n: int, c: int, combine: str, offset: int = 0) -> list[int]:
    """First slices of the groups of ``c`` slices that cover ``n`` slices (module docstring)."""
    if n < c:
        raise UserError(f"a slice-group prior of {c} slices needs at least {c} slices; the volume has {n}")
    if combine == "tile":
        return sorted({min(max(s, 0), n - c) for s in range(offset % c - c, n, c)})
    if combine == "centre":
        return sorted({min(max(k - c // 2, 0), n - c) for k in range(n)})
    if combine == "mean":
        return list(range(n - c + 1))
    raise UserError(f"group_combine must be one of {', '.join(COMBINE)}, got {combine!r}")


@torch.no_grad()
def group_denoise(denoiser: torch.nn.Module, x: torch.Tensor, sigma: float, z_spacing_mm: float,
                  combine: str, offset: int, chunk: int, precision: Optional[Precision] = None,
                  slab: Optional["Slab"] = None) -> torch.Tensor:
    """Tweedie estimate ``[n, H, W]`` of the prior batch ``x`` ``[n, H, W]`` (one rank's rows when
    ``slab`` is distributed) at noise level ``sigma`` from the group prior ``denoiser``."""
    c = int(denoiser.slice_group)
    whole = slab.all_gather(x) if slab is not None and slab.distributed else x
    n = whole.shape[0]
    lo, hi = (slab.lo, slab.hi) if slab is not None and slab.distributed else (0, n)
    if getattr(denoiser, "centre_output", False):
        return _centre_output_denoise(denoiser, whole, sigma, z_spacing_mm, lo, hi, chunk, precision)
    starts = [s for s in group_starts(n, c, combine, offset) if s < hi and s + c > lo]
    outputs = torch.empty((len(starts), c, *whole.shape[1:]), dtype=whole.dtype, device=whole.device)
    dtype = next(denoiser.parameters()).dtype
    for first in range(0, len(starts), chunk):
        part = torch.stack([whole[s:s + c] for s in starts[first:first + chunk]]).to(dtype)
        s = torch.full((part.shape[0],), float(sigma), dtype=dtype, device=whole.device)
        with network_autocast(precision, whole.device) if precision is not None else nullcontext():
            outputs[first:first + chunk] = denoiser.denoise(part, s, z_spacing_mm).to(whole.dtype)
    out = torch.zeros((hi - lo, *whole.shape[1:]), dtype=whole.dtype, device=whole.device)
    if combine == "centre":
        index = {s: i for i, s in enumerate(starts)}
        for k in range(lo, hi):
            s = min(max(k - c // 2, 0), n - c)
            out[k - lo] = outputs[index[s], k - s]
        return out
    count = torch.zeros(hi - lo, dtype=whole.dtype, device=whole.device)
    for i, s in enumerate(starts):
        a, b = max(s, lo), min(s + c, hi)
        out[a - lo:b - lo] += outputs[i, a - s:b - s]
        count[a - lo:b - lo] += 1
    return out / count.reshape(-1, *([1] * (out.dim() - 1)))


def _centre_output_denoise(denoiser: torch.nn.Module, whole: torch.Tensor, sigma: float,
                           z_spacing_mm: float, lo: int, hi: int, chunk: int,
                           precision: Optional[Precision]) -> torch.Tensor:
    """Slices ``lo..hi`` ``[hi - lo, H, W]`` of ``whole`` ``[n, H, W]``, each denoised by a
    centre-output prior from its mirrored group."""
    c, n = int(denoiser.slice_group), whole.shape[0]
    out = torch.empty((hi - lo, *whole.shape[1:]), dtype=whole.dtype, device=whole.device)
    dtype = next(denoiser.parameters()).dtype
    for first in range(lo, hi, chunk):
        ks = range(first, min(first + chunk, hi))
        part = torch.stack([whole[mirrored_group(k, n, c)] for k in ks]).to(dtype)
        s = torch.full((part.shape[0],), float(sigma), dtype=dtype, device=whole.device)
        with network_autocast(precision, whole.device) if precision is not None else nullcontext():
            out[first - lo:first - lo + part.shape[0]] = denoiser.denoise(part, s, z_spacing_mm)[:, 0].to(whole.dtype)
    return out
