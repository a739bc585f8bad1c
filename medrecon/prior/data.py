"""Training slices for a 2D prior: from NIfTI/DICOM volumes, a data manifest, the phantom family,
or the sample datasets, windowed to [0, 1] and split into train/validation by volume or slab.

A :class:`SliceSet` holds ``train`` and ``val`` tensors ``[N, H, W]`` in [0, 1] and a description
of where they came from (recorded in the model card). Batches are drawn with seeded flips and
small rotations (:func:`augment`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medrecon.errors import UserError
from medrecon.volume import DEFAULT_CT_WINDOW, Volume, to_window


@dataclass
class SliceSet:
    """Training and validation slices ``[N, H, W]`` in [0, 1] plus provenance."""

    train: torch.Tensor
    val: torch.Tensor
    window: tuple[float, float]
    units: str
    provenance: dict = field(default_factory=dict)


def _square(array: np.ndarray) -> np.ndarray:
    """Zero-pad (with the minimum) the in-plane axes of ``[Z, Y, X]`` to a square."""
    z, y, x = array.shape
    n = max(y, x)
    out = np.full((z, n, n), array.min(), dtype=np.float32)
    oy, ox = (n - y) // 2, (n - x) // 2
    out[:, oy:oy + y, ox:ox + x] = array
    return out


def windowed_slices(volume: Volume, size: int, window: Optional[Sequence[float]] = None) -> tuple[np.ndarray, tuple]:
    """Axial slices of ``volume`` squared, resampled to ``size`` and windowed to [0, 1] (clipped)."""
    from medrecon.datasets import resample_slices

    if window is None:
        if volume.units == "HU":
            window = DEFAULT_CT_WINDOW
        else:
            lo, hi = float(np.percentile(volume.array, 0.5)), float(np.percentile(volume.array, 99.5))
            window = (min(lo, 0.0), hi)
    array = resample_slices(_square(volume.array), size)
    return np.asarray(to_window(array, window), np.float32), (float(window[0]), float(window[1]))


def from_volumes(paths: Sequence[str | Path | Sequence[str]], size: int, val_fraction: float = 0.1,
                 window: Optional[Sequence[float]] = None) -> SliceSet:
    """Slices of several volumes (NIfTI files, DICOM folders, or lists of DICOM files); the last
    volumes are held out for validation, so no slab contributes to both splits. With a single
    volume, the last contiguous slab of ``val_fraction`` of its slices is held out instead."""
    from medrecon.io import load_volume

    if not paths:
        raise UserError("no training volumes given")
    volumes = [load_volume(p) for p in paths]
    win = window
    stacks = []
    for v in volumes:
        s, win = windowed_slices(v, size, win)
        stacks.append(s)
    units = volumes[0].units
    if len(stacks) == 1:
        n_val = max(1, int(round(val_fraction * len(stacks[0]))))
        train, val = stacks[0][:-n_val], stacks[0][-n_val:]
        split = f"by slab: last {n_val} slices held out"
    else:
        n_val = max(1, int(round(val_fraction * len(stacks))))
        train, val = np.concatenate(stacks[:-n_val]), np.concatenate(stacks[-n_val:])
        split = f"by volume: last {n_val} of {len(stacks)} volumes held out"
    return SliceSet(torch.from_numpy(train), torch.from_numpy(val), win, units,
                    {"data": [str(p) for p in paths], "split": split})


def from_phantoms(n_volumes: int, size: int, slices: int = 32, contrast: str = "ct",
                  first_seed: int = 0, n_val: int = 4) -> SliceSet:
    """The seeded random-ellipsoid family: training seeds ``first_seed ..`` (all below 900000),
    validation volumes from the reserved validation seeds (900000 ..). Never Shepp-Logan, never
    the test seeds (>= 1000000)."""
    from medrecon.phantoms import VALIDATION_SEED_START, check_training_seeds, random_ellipsoids

    seeds = range(first_seed, first_seed + n_volumes)
    check_training_seeds(seeds)
    shape = (slices, size, size)
    train = np.concatenate([random_ellipsoids(shape, s, contrast) for s in seeds])
    val = np.concatenate([random_ellipsoids(shape, VALIDATION_SEED_START + s, contrast) for s in range(n_val)])
    return SliceSet(torch.from_numpy(train), torch.from_numpy(val), (0.0, 1.0), "a.u.",
                    {"data": f"random-ellipsoid phantoms ({contrast}), seeds {seeds.start}..{seeds.stop - 1}, "
                             f"{slices} slices each", "split": f"by volume: validation seeds "
                             f"{VALIDATION_SEED_START}..{VALIDATION_SEED_START + n_val - 1}"})


def augment(batch: torch.Tensor, generator: torch.Generator, max_rotation_deg: float = 10.0) -> torch.Tensor:
    """Random horizontal flips and rotations of ``[B, 1, H, W]`` (seeded; border replicated)."""
    b = batch.shape[0]
    flip = torch.rand(b, generator=generator) < 0.5
    batch = torch.where(flip.reshape(-1, 1, 1, 1), batch.flip(-1), batch)
    if max_rotation_deg <= 0:
        return batch
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_rotation_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(b)], 1),
                         torch.stack([sin, cos, torch.zeros(b)], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_crop(batch: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One seeded random ``size x size`` window per image of ``[B, 1, H, W]``."""
    b, _, h, w = batch.shape
    oy = torch.randint(0, h - size + 1, (b,), generator=generator)
    ox = torch.randint(0, w - size + 1, (b,), generator=generator)
    return torch.stack([batch[i, :, oy[i]:oy[i] + size, ox[i]:ox[i] + size] for i in range(b)])


def draw_batch(slices: torch.Tensor, batch_size: int, generator: torch.Generator,
               max_rotation_deg: float = 10.0, crop: int = 0) -> torch.Tensor:
    """A seeded random batch ``[B, 1, H, W]`` of augmented slices (``crop > 0``: random
    ``crop x crop`` windows, which makes a convolutional prior several times cheaper to train)."""
    idx = torch.randint(0, slices.shape[0], (batch_size,), generator=generator)
    batch = augment(slices[idx][:, None], generator, max_rotation_deg)
    return random_crop(batch, crop, generator) if 0 < crop < batch.shape[-1] else batch
