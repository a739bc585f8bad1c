"""Training slices for a 2D prior: from volumes the caller read (NIfTI/DICOM files, a data
manifest, the sample datasets: :mod:`medrecon.training_sets`) or from the phantom family,
windowed to [0, 1] and split into train/validation by volume or slab.

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

from medrecon.errors import DataError, UserError
from medrecon.resample import resample_slices
from medrecon.volume import DEFAULT_CT_WINDOW, Volume, to_window


@dataclass
class SliceSet:
    """Training and validation slices ``[N, H, W]`` in [0, 1] plus provenance."""

    train: torch.Tensor
    val: torch.Tensor
    window: tuple[float, float]
    units: str
    provenance: dict = field(default_factory=dict)
    # Multi-scale training (:func:`multiscale_levels`): one ``[N_l, H_l, W_l]`` stack of whole
    # training slices per physical pixel spacing ``level_spacings[l]`` (mm); ``train`` then holds
    # the centre windows of every level (a summary), and batches are drawn from the levels.
    levels: list = field(default_factory=list)
    level_spacings: list = field(default_factory=list)
    # The pixel spacings (mm) of the slices the prior sees (empty: no physical spacing, e.g. phantoms).
    pixel_spacings: list = field(default_factory=list)
    # Slice-group training (:mod:`medrecon.prior.slice_groups`): per level, one
    # ``(z_spacing_mm, [Z, N, N])`` stack of contiguous training slices per volume, and the
    # volumes' last contiguous slices for validation.
    stacks: list = field(default_factory=list)
    val_stacks: list = field(default_factory=list)


def _square(array: np.ndarray, fill: Optional[float] = None) -> np.ndarray:
    """Pad the in-plane axes of ``[Z, Y, X]`` to a square with ``fill`` (default: the minimum)."""
    z, y, x = array.shape
    n = max(y, x)
    out = np.full((z, n, n), array.min() if fill is None else fill, dtype=np.float32)
    oy, ox = (n - y) // 2, (n - x) // 2
    out[:, oy:oy + y, ox:ox + x] = array
    return out


def windowed_slices(volume: Volume, size: int, window: Optional[Sequence[float]] = None) -> tuple[np.ndarray, tuple]:
    """Axial slices of ``volume`` squared, resampled to ``size`` and windowed to [0, 1] (clipped)."""
    if window is None:
        if volume.units == "HU":
            window = DEFAULT_CT_WINDOW
        else:
            lo, hi = float(np.percentile(volume.array, 0.5)), float(np.percentile(volume.array, 99.5))
            window = (min(lo, 0.0), hi)
    array = resample_slices(_square(volume.array), size)
    return np.asarray(to_window(array, window), np.float32), (float(window[0]), float(window[1]))


def from_volumes(paths: Sequence[str | Path | Sequence[str]], volumes: Sequence[Volume], size: int,
                 val_fraction: float = 0.1, window: Optional[Sequence[float]] = None) -> SliceSet:
    """Slices of several volumes, read by the caller from ``paths`` (NIfTI files, DICOM folders,
    or lists of DICOM files; named in messages and the provenance); the last volumes are held
    out for validation, so no slab contributes to both splits. With a single volume, the last
    contiguous slab of ``val_fraction`` of its slices is held out instead."""
    if not paths:
        raise UserError("no training volumes given")
    if len(volumes) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(volumes)} volumes")
    for p, v in zip(paths, volumes):
        check_training_volume(v, p)
    win = window
    stacks = []
    for v in volumes:
        s, win = windowed_slices(v, size, win)
        stacks.append(s)
    units = volumes[0].units
    if len(stacks) == 1:
        if len(stacks[0]) < 2:
            raise DataError(f"{paths[0]}: a single slice (a 2D image) cannot be split into training "
                            f"and validation slices; give a 3D volume or several files")
        n_val = max(1, int(round(val_fraction * len(stacks[0]))))
        train, val = stacks[0][:-n_val], stacks[0][-n_val:]
        split = f"by slab: last {n_val} slices held out"
    else:
        n_val = max(1, int(round(val_fraction * len(stacks))))
        train, val = np.concatenate(stacks[:-n_val]), np.concatenate(stacks[-n_val:])
        split = f"by volume: last {n_val} of {len(stacks)} volumes held out"
    return SliceSet(torch.from_numpy(train), torch.from_numpy(val), win, units,
                    {"data": [str(p) for p in paths], "split": split},
                    pixel_spacings=[field_of_view_spacing(v, size) for v in volumes])


def check_training_volume(volume: Volume, where: str | Path | Sequence[str]) -> None:
    """Refuse a training volume with nothing to learn: constant (e.g. all zero) or complex."""
    if np.iscomplexobj(volume.array):
        raise DataError(f"{where}: complex volume; train on magnitude images")
    lo, hi = float(volume.array.min()), float(volume.array.max())
    if not hi > lo:
        raise DataError(f"{where}: every voxel is {lo:g}: a constant volume has nothing to learn from")


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


def augment(batch: torch.Tensor, generator: torch.Generator, max_rotation_deg: float = 10.0,
            max_zoom: float = 0.0) -> torch.Tensor:
    """Random horizontal flips, rotations and (``max_zoom > 0``) isotropic zooms by a factor in
    ``[1 / (1 + max_zoom), 1 + max_zoom]`` (log-uniform) of ``[B, 1, H, W]``; seeded. Without zoom
    the border is replicated; with zoom, pixels from outside the image are 0 (air / background
    in prior units), so a zoomed-out slice gains a margin of background."""
    b = batch.shape[0]
    flip = torch.rand(b, generator=generator) < 0.5
    batch = torch.where(flip.reshape(-1, 1, 1, 1), batch.flip(-1), batch)
    if max_rotation_deg <= 0 and max_zoom <= 0:
        return batch
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_rotation_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    if max_zoom > 0:  # grid coordinates scale by 1/zoom
        log_zoom = (torch.rand(b, generator=generator) * 2 - 1) * math.log1p(max_zoom)
        inv = torch.exp(-log_zoom)
        cos, sin = cos * inv, sin * inv
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(b)], 1),
                         torch.stack([sin, cos, torch.zeros(b)], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros" if max_zoom > 0 else "border",
                         align_corners=False)


def random_crop(batch: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One seeded random ``size x size`` window per image of ``[B, 1, H, W]``."""
    b, _, h, w = batch.shape
    oy = torch.randint(0, h - size + 1, (b,), generator=generator)
    ox = torch.randint(0, w - size + 1, (b,), generator=generator)
    return torch.stack([batch[i, :, oy[i]:oy[i] + size, ox[i]:ox[i] + size] for i in range(b)])


def draw_batch(slices: torch.Tensor, batch_size: int, generator: torch.Generator,
               max_rotation_deg: float = 10.0, crop: int = 0, max_zoom: float = 0.0) -> torch.Tensor:
    """A seeded random batch ``[B, 1, H, W]`` of augmented slices (``crop > 0``: random
    ``crop x crop`` windows, which makes a convolutional prior several times cheaper to train)."""
    idx = torch.randint(0, slices.shape[0], (batch_size,), generator=generator)
    batch = augment(slices[idx][:, None], generator, max_rotation_deg, max_zoom)
    return random_crop(batch, crop, generator) if 0 < crop < batch.shape[-1] else batch


def draw_multiscale_batch(levels: Sequence[torch.Tensor], batch_size: int, generator: torch.Generator,
                          crop: int, max_rotation_deg: float = 10.0, max_zoom: float = 0.0,
                          tries: int = 3, tissue: float = 0.1) -> torch.Tensor:
    """A seeded batch ``[B, 1, crop, crop]`` from one pixel-spacing level (drawn uniformly): per
    slice, the window (1.5x the crop) with the most tissue (prior value > ``tissue``) of ``tries``
    random windows, augmented (:func:`augment`), then its centre crop, so that rotations and zooms
    never reach the window's border, a large slice costs no more than a small one, and wide
    fields of view do not fill batches with air."""
    level = levels[int(torch.randint(0, len(levels), (1,), generator=generator))]
    n, h, w = level.shape
    window = min(h, w, int(math.ceil(crop * 1.5)))
    idx = torch.randint(0, n, (batch_size,), generator=generator)
    oy = torch.randint(0, h - window + 1, (batch_size, tries), generator=generator)
    ox = torch.randint(0, w - window + 1, (batch_size, tries), generator=generator)
    windows = []
    for b, i in enumerate(idx.tolist()):
        candidates = [level[i, y:y + window, x:x + window] for y, x in zip(oy[b].tolist(), ox[b].tolist())]
        windows.append(max(candidates, key=lambda c: float((c > tissue).float().mean())))
    batch = augment(torch.stack(windows)[:, None], generator, max_rotation_deg, max_zoom)
    o = (window - crop) // 2
    return batch[..., o:o + crop, o:o + crop]


def at_pixel_spacing(volume: Volume, spacing_mm: float, minimum: int, magnitude: bool = False) -> np.ndarray:
    """Axial slices of ``volume`` resampled to square pixels of ``spacing_mm`` (antialiased
    bilinear; the whole field of view kept), padded with the volume's minimum (0 for the
    ``magnitude``) to a square of at least ``minimum`` pixels: ``[Z, N, N]``."""
    z, y, x = volume.shape
    dy, dx = volume.spacing[1], volume.spacing[2]
    ny, nx = max(1, int(round(y * dy / spacing_mm))), max(1, int(round(x * dx / spacing_mm)))
    array = np.abs(volume.array).astype(np.float32) if magnitude else np.asarray(volume.array, np.float32)
    if (ny, nx) != (y, x):
        t = torch.from_numpy(np.ascontiguousarray(array))[:, None]
        array = F.interpolate(t, size=(ny, nx), mode="bilinear", antialias=True, align_corners=False)[:, 0].numpy()
    fill = 0.0 if magnitude else float(np.min(volume.array))
    n = max(ny, nx, minimum)
    out = np.full((z, n, n), fill, dtype=np.float32)
    oy, ox = (n - ny) // 2, (n - nx) // 2
    out[:, oy:oy + ny, ox:ox + nx] = array
    return out


def multiscale_levels(volume: Volume, spacings: Sequence[float], intensity: dict, minimum: int,
                      keep: Optional[np.ndarray] = None, max_upsampling: float = 1.5
                      ) -> list[tuple[float, np.ndarray]]:
    """``(spacing, [Z', N, N])`` prior-unit slices of ``volume`` at each pixel spacing (mm) of
    ``spacings`` that is not finer than the volume's own in-plane spacing divided by
    ``max_upsampling`` (an upsampled slice would teach the prior blur); ``keep`` selects slices."""
    native = min(volume.spacing[1], volume.spacing[2])
    out = []
    for s in spacings:
        if s * max_upsampling < native:
            continue
        slices = at_pixel_spacing(volume, float(s), minimum, intensity["convention"] == "normalised")
        if keep is not None:
            slices = slices[keep]
        if intensity["convention"] == "window01":
            slices = np.asarray(to_window(slices, intensity["window"]), np.float32)
        else:
            slices = normalise_magnitude(slices, float(intensity["percentile"]), float(intensity["target"]))[0]
        out.append((float(s), slices))
    return out


def isotropic_square_slices(volume: Volume, size: int, magnitude: bool = False) -> np.ndarray:
    """Axial slices ``[Z, size, size]`` of ``volume`` on a square grid of square pixels: each slice
    is resampled to the smaller in-plane spacing and padded to a square
    (:func:`at_pixel_spacing`), then resampled to ``size``, so the whole field of view is kept at
    its true aspect."""
    native = min(volume.spacing[1], volume.spacing[2])
    return resample_slices(at_pixel_spacing(volume, native, 1, magnitude), size)


def normalise_magnitude(slices: np.ndarray, percentile: float, target: float) -> tuple[np.ndarray, float]:
    """MR intensity normalisation: ``|x| * target / p`` clipped to [0, 1], with ``p`` the
    ``percentile`` of ``|x|`` over all of ``slices`` (the convention the samplers apply at
    reconstruction time to a SENSE image, :func:`medrecon.samplers.intensity.mri_intensity`)."""
    mag = np.abs(slices)
    p = float(np.percentile(mag, percentile))
    if not np.isfinite(p) or p <= 0:
        raise UserError(f"cannot normalise: the {percentile}th percentile of the magnitude is {p}")
    return np.clip(mag * (target / p), 0.0, 1.0).astype(np.float32), p


def tissue_slices(slices: np.ndarray, level: float = 0.1, fraction: float = 0.05) -> np.ndarray:
    """The slices of ``[Z, H, W]`` (in [0, 1]) with more than ``fraction`` of pixels above ``level``."""
    keep = (slices > level).mean(axis=(1, 2)) > fraction
    return slices[keep]


def training_slices(volume: Volume, size: int, intensity: dict) -> np.ndarray:
    """``[Z, size, size]`` prior-unit slices of ``volume`` (see :func:`isotropic_square_slices`)
    under ``intensity``: ``{"convention": "window01", "window": [lo, hi]}`` (CT in HU) or
    ``{"convention": "normalised", "percentile": P, "target": T}`` (MR magnitude)."""
    slices = isotropic_square_slices(volume, size, magnitude=intensity["convention"] == "normalised")
    if intensity["convention"] == "window01":
        return np.asarray(to_window(slices, intensity["window"]), np.float32)
    if intensity["convention"] == "normalised":
        return normalise_magnitude(slices, float(intensity["percentile"]), float(intensity["target"]))[0]
    raise UserError(f"unknown intensity convention {intensity['convention']!r}")


CT_INTENSITY = {"convention": "window01", "window": [-1000.0, 1000.0], "units": "HU"}
MR_INTENSITY = {"convention": "normalised", "percentile": 99.0, "target": 0.8, "units": "normalised",
                "of": "magnitude image: the training volume itself; at reconstruction a 10-iteration "
                      "SENSE reconstruction of the measurement"}
def field_of_view_spacing(volume: Volume, size: int) -> float:
    """Pixel spacing (mm) of ``volume``'s slices squared and resampled to ``size`` pixels
    (:func:`isotropic_square_slices`)."""
    dy, dx = volume.spacing[1], volume.spacing[2]
    return max(volume.shape[1] * dy, volume.shape[2] * dx) / size


def centre_window(slices: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size x size`` window of ``[Z, N, N]`` (N >= size)."""
    o = (slices.shape[-1] - size) // 2
    return slices[:, o:o + size, o:o + size]


def stack_padded(stacks: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate ``[Z_i, N_i, N_i]`` stacks, each padded (centred) with 0 to the largest N."""
    n = max(a.shape[-1] for a in stacks)
    out = []
    for a in stacks:
        o = (n - a.shape[-1]) // 2
        padded = np.zeros((a.shape[0], n, n), np.float32)
        padded[:, o:o + a.shape[-1], o:o + a.shape[-1]] = a
        out.append(padded)
    return np.concatenate(out)


def pixel_spacing_range(data: SliceSet, max_zoom: float) -> Optional[list[float]]:
    """The pixel spacings (mm) a prior trained on ``data`` has seen: the extreme spacings of its
    slices widened by the zoom augmentation (factor ``1 + max_zoom`` each way); None when the data
    carry no physical spacing (phantoms)."""
    if not data.pixel_spacings:
        return None
    return [round(min(data.pixel_spacings) / (1 + max_zoom), 3), round(max(data.pixel_spacings) * (1 + max_zoom), 3)]
