"""Image quality: PSNR and SSIM over the whole volume and per plane.

Volumes are ``[Z, Y, X]`` (numpy or torch, real or complex; complex inputs are compared as
magnitudes). The data range is always explicit: PSNR = 10 log10(range^2 / MSE).

Per plane, a metric is computed on every 2D slice of that plane and averaged over slices, as the
DiffusionMBIR paper reports it: axial slices are ``vol[z]``, coronal ``vol[:, y]``, sagittal
``vol[:, :, x]``. Slices where the reference is constant (e.g. all air outside the object) are
left out of the plane average: their PSNR says nothing about the object and would inflate it.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
from skimage.metrics import structural_similarity

ArrayLike = Union[np.ndarray, torch.Tensor]
PLANES = ("axial", "coronal", "sagittal")
_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if np.iscomplexobj(x):
        x = np.abs(x)
    return x.astype(np.float64, copy=False)


def _check_pair(x: np.ndarray, ref: np.ndarray, data_range: float) -> None:
    if x.shape != ref.shape:
        raise ValueError(f"reconstruction shape {x.shape} differs from reference shape {ref.shape}")
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive number, got {data_range}")
    for name, a in (("reconstruction", x), ("reference", ref)):
        if not np.isfinite(a).all():
            raise ValueError(f"the {name} holds NaN or Inf values: no meaningful score")


def psnr(x: ArrayLike, ref: ArrayLike, data_range: float) -> float:
    """PSNR in dB of ``x`` against ``ref`` over all voxels (inf when identical)."""
    a, b = _as_numpy(x), _as_numpy(ref)
    _check_pair(a, b, data_range)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(x: ArrayLike, ref: ArrayLike, data_range: float) -> float:
    """SSIM (Wang et al. 2004, uniform window of 7 or the largest odd size that fits, scikit-image)
    of ``x`` against ``ref``, any dimension. Volumes with an axis shorter than 3 voxels are scored
    as the mean SSIM of their 2D slices along that axis; NaN if no axis allows a window."""
    a, b = _as_numpy(x), _as_numpy(ref)
    _check_pair(a, b, data_range)
    short = [k for k, n in enumerate(a.shape) if n < 3]
    if short:
        if a.ndim <= 2 or len(short) == a.ndim:
            return math.nan
        axis = short[0]
        values = [ssim(np.take(a, i, axis), np.take(b, i, axis), data_range) for i in range(a.shape[axis])]
        return float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else math.nan
    win = min(7, *[n if n % 2 else n - 1 for n in a.shape])
    return float(structural_similarity(a, b, data_range=data_range, win_size=win))


def plane_metrics(x: ArrayLike, ref: ArrayLike, data_range: float, plane: str) -> dict[str, float]:
    """PSNR and SSIM averaged over the 2D slices of ``plane`` (axial, coronal or sagittal)."""
    if plane not in _AXIS:
        raise ValueError(f"unknown plane {plane!r}; choose from {PLANES}")
    a, b = _as_numpy(x), _as_numpy(ref)
    _check_pair(a, b, data_range)
    if a.ndim != 3:
        raise ValueError(f"per-plane metrics need a [Z, Y, X] volume, got shape {a.shape}")
    a, b = np.moveaxis(a, _AXIS[plane], 0), np.moveaxis(b, _AXIS[plane], 0)
    keep = [k for k in range(b.shape[0]) if np.ptp(b[k]) > 0]
    if keep:
        a, b = a[keep], b[keep]
    psnrs = [psnr(s, r, data_range) for s, r in zip(a, b)]
    finite = [p for p in psnrs if math.isfinite(p)]
    mean_psnr = float(np.mean(finite)) if finite else math.inf
    ssims = [v for v in (ssim(s, r, data_range) for s, r in zip(a, b)) if not math.isnan(v)]
    return {"psnr": mean_psnr, "ssim": float(np.mean(ssims)) if ssims else math.nan}


def volume_metrics(x: ArrayLike, ref: ArrayLike, data_range: float) -> dict:
    """Whole-volume and per-plane metrics:
    ``{"psnr", "ssim", "data_range", "identical", "planes": {"axial": {"psnr", "ssim"}, ...}}``.

    ``identical`` is True when ``x`` equals ``ref`` voxel for voxel; PSNR is then infinite,
    which standard JSON (:mod:`medrecon.io.jsonio`) writes as ``null`` and
    :func:`format_table` prints as "exact": never as a number."""
    value = psnr(x, ref, data_range)
    return {
        "psnr": value,
        "ssim": ssim(x, ref, data_range),
        "data_range": float(data_range),
        "identical": math.isinf(value),
        "planes": {p: plane_metrics(x, ref, data_range, p) for p in PLANES},
    }


def _cell(value: float | None, width: int, digits: int) -> str:
    """A score for a table: "exact" for an infinite PSNR, "n/a" when undefined (never inf/NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'n/a':>{width}}"
    if math.isinf(value):
        return f"{'exact':>{width}}"
    return f"{value:{width}.{digits}f}"


def format_table(rows: dict[str, dict]) -> str:
    """A plain-text table of ``volume_metrics`` results keyed by method name."""
    head = f"{'method':<16} {'PSNR':>7} {'SSIM':>6}" + "".join(
        f" {p[:3] + ' PSNR':>9} {p[:3] + ' SSIM':>9}" for p in PLANES)
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        line = f"{name:<16} {_cell(m['psnr'], 7, 2)} {_cell(m['ssim'], 6, 3)}"
        line += "".join(f" {_cell(m['planes'][p]['psnr'], 9, 2)} {_cell(m['planes'][p]['ssim'], 9, 3)}"
                        for p in PLANES)
        lines.append(line)
    return "\n".join(lines)
