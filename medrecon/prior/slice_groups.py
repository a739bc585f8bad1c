"""Training batches for slice-group priors: C neighbouring axial slices stacked as channels.

A group is C slices ``k, k + s, ..., k + (C - 1) s`` of one volume (``s`` a stride from the
recipe's ``z_strides``), so a volume with slices every ``dz`` mm gives groups whose slices are
``s dz`` mm apart: the 3 mm abdomen gives 3, 6 and 9 mm groups, the 5 mm chest volumes 5, 10
and 15 mm. The group's spacing is returned beside it (the network's class input).

Windows, augmentation and tissue selection follow :func:`medrecon.prior.data.draw_multiscale_batch`:
one pixel-spacing level per batch, per group the window (1.5x the crop) with the most tissue of
three, one in-plane flip / rotation / zoom for all C slices of a group, then the centre crop;
the order of the slices along z is also reversed for half of the groups (anatomy has no up or
down the prior should rely on).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from medrecon.prior.data import augment

Stack = tuple[float, torch.Tensor]   # (slice spacing dz in mm, [Z, N, N] contiguous slices)


def group_spacings(stacks: Sequence[Sequence[Stack]], channels: int, strides: Sequence[int]) -> list[float]:
    """The distinct slice spacings (mm) of the groups a recipe draws from ``stacks``."""
    out = {round(dz * s, 6) for level in stacks for dz, a in level for s in strides
           if a.shape[0] > (channels - 1) * s}
    return sorted(out)


def draw_group_batch(stacks: Sequence[Sequence[Stack]], batch_size: int, generator: torch.Generator,
                     crop: int, channels: int, strides: Sequence[int], max_rotation_deg: float = 10.0,
                     max_zoom: float = 0.0, tries: int = 3, tissue: float = 0.1
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded batch: ``[B, C, crop, crop]`` slice groups in prior units and ``[B]`` float64
    slice spacings (mm). The level is drawn uniformly; per group a volume (uniformly), a stride
    the volume is long enough for, and a first slice."""
    level = stacks[int(torch.randint(0, len(stacks), (1,), generator=generator))]
    groups, spacing = [], []
    for _ in range(batch_size):
        dz, volume = level[int(torch.randint(0, len(level), (1,), generator=generator))]
        fits = [s for s in strides if volume.shape[0] > (channels - 1) * s]
        if not fits:
            raise ValueError(f"a stack of {volume.shape[0]} slices holds no group of {channels} slices")
        stride = fits[int(torch.randint(0, len(fits), (1,), generator=generator))]
        first = int(torch.randint(0, volume.shape[0] - (channels - 1) * stride, (1,), generator=generator))
        index = torch.arange(channels) * stride + first
        if bool(torch.rand(1, generator=generator) < 0.5):
            index = index.flip(0)
        n, h, w = volume.shape
        window = min(h, w, int(math.ceil(crop * 1.5)))
        oy = torch.randint(0, h - window + 1, (tries,), generator=generator).tolist()
        ox = torch.randint(0, w - window + 1, (tries,), generator=generator).tolist()
        centre = index[channels // 2]
        y, x = max(zip(oy, ox), key=lambda p: float((volume[centre, p[0]:p[0] + window, p[1]:p[1] + window]
                                                     > tissue).float().mean()))
        groups.append(volume[index, y:y + window, x:x + window])
        spacing.append(dz * stride)
    batch = augment(torch.stack(groups), generator, max_rotation_deg, max_zoom)
    o = (batch.shape[-1] - crop) // 2
    return batch[..., o:o + crop, o:o + crop].contiguous(), torch.tensor(spacing, dtype=torch.float64)


def validation_groups(val_stacks: Sequence[Sequence[Stack]], channels: int, size: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed validation groups: the first C slices of every volume's validation slab at every
    level (stride 1), centre ``size`` window: ``[M, C, size, size]`` and ``[M]`` spacings (mm)."""
    found = [(dz, volume[:channels]) for level in val_stacks for dz, volume in level
             if volume.shape[0] >= channels]
    if not found:
        raise ValueError(f"no validation slab holds {channels} slices")
    w = min(size, *(g.shape[-1] for _, g in found))

    def centre(g: torch.Tensor) -> torch.Tensor:
        o = (g.shape[-1] - w) // 2
        return g[..., o:o + w, o:o + w]

    return (torch.stack([centre(g) for _, g in found]),
            torch.tensor([dz for dz, _ in found], dtype=torch.float64))
