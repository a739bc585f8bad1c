"""Seeded Cartesian k-space sampling masks for 2D MRI slices.

Conventions (shared with :mod:`medrecon.physics.mri`):

- A mask is a boolean array ``[Y, X] = [ky, kx]`` in *centred* k-space order, i.e. after
  ``fftshift``: the DC sample sits at ``(Y // 2, X // 2)``.
- 1D masks sample whole phase-encode lines: a line is a row ``mask[ky, :]`` along the first image
  axis ``Y`` (phase encoding), fully sampled along the readout axis ``X``.
- ``acceleration`` is the *effective* acceleration ``1 / sampled_fraction``. Lines are drawn
  without replacement, so it matches the request up to rounding of the line count (unlike
  DiffusionMBIR's masks, drawn with replacement, whose "x2" is really about x2.5).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from medrecon.errors import UserError

MASK_KINDS = ("uniform1d", "gaussian1d", "poisson2d")


class MRIInputError(UserError, ValueError):
    """Bad MRI input (mask, coil maps, k-space or option); the message names the problem."""


@dataclass(eq=False)
class SamplingMask:
    """A 2D sampling mask with how it was made.

    mask: bool ``[Y, X]`` (centred k-space; True = sampled); kind: one of :data:`MASK_KINDS`;
    acceleration_requested: the acceleration asked for; params: the other generator options
    (seed, centre size, ...), enough to rebuild the mask.
    """

    mask: np.ndarray
    kind: str
    acceleration_requested: float
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask)
        if self.mask.ndim != 2 or self.mask.dtype != np.bool_:
            raise MRIInputError(f"SamplingMask.mask must be a bool [Y, X] array, got "
                                f"{self.mask.dtype} {self.mask.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @property
    def sampled_fraction(self) -> float:
        """Fraction of k-space samples acquired, in [0, 1]."""
        return float(self.mask.mean())

    @property
    def acceleration(self) -> float:
        """Effective acceleration ``1 / sampled_fraction`` (``inf`` for an empty mask)."""
        frac = self.sampled_fraction
        return math.inf if frac == 0.0 else 1.0 / frac

    def to_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The mask as a bool torch tensor ``[Y, X]`` on ``device``."""
        return torch.from_numpy(self.mask.copy()).to(device)

    def __repr__(self) -> str:
        return (f"SamplingMask(kind={self.kind!r}, shape={self.shape}, requested=x"
                f"{self.acceleration_requested:g}, effective=x{self.acceleration:.3f}, "
                f"params={self.params})")


# -- validation helpers -------------------------------------------------------------------------

def _shape2(shape: Any) -> tuple[int, int]:
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise MRIInputError(f"mask shape must be two integers (Y, X), got {shape!r}") from None
    if ny < 1 or nx < 1:
        raise MRIInputError(f"mask shape must be positive, got {(ny, nx)}")
    return ny, nx


def _acceleration(acceleration: Any, strict: bool = False) -> float:
    try:
        acc = float(acceleration)
    except (TypeError, ValueError):
        raise MRIInputError(f"acceleration must be a number, got {acceleration!r}") from None
    if not math.isfinite(acc) or acc < 1.0 or (strict and acc == 1.0):
        need = "> 1" if strict else ">= 1"
        raise MRIInputError(f"acceleration must be a finite number {need}, got {acceleration!r}")
    return acc


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MRIInputError(f"mask seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def center_lines(n_lines: int, n_center: int) -> np.ndarray:
    """Indices of the ``n_center`` lines around DC (index ``n_lines // 2``) of ``n_lines``."""
    start = n_lines // 2 - n_center // 2
    return np.arange(start, start + n_center)


def _line_counts(ny: int, acceleration: float, center_fraction: float) -> tuple[int, int]:
    """(total lines, centre lines): the total is the integer whose ``ny / n`` is nearest."""
    if not 0.0 <= float(center_fraction) <= 1.0:
        raise MRIInputError(f"center_fraction must be in [0, 1], got {center_fraction!r}")
    n_center = min(ny, int(math.floor(ny * float(center_fraction) + 0.5)))
    if acceleration > ny:
        raise MRIInputError(f"acceleration x{acceleration:g} is impossible with {ny} phase-encode "
                            f"lines (one line is x{ny})")
    lo = max(1, int(math.floor(ny / acceleration)))
    hi = max(1, int(math.ceil(ny / acceleration)))
    n_total = min((lo, hi), key=lambda n: (abs(ny / n - acceleration), n))
    if n_total < n_center:
        most = ny / max(n_center, 1)
        raise MRIInputError(
            f"acceleration x{acceleration:g} is impossible with {ny} phase-encode lines and a "
            f"fully sampled centre of {n_center} lines (center_fraction={center_fraction:g}); "
            f"the most this centre allows is x{most:.2f}")
    return n_total, n_center


def _lines_to_mask(lines: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[np.asarray(lines, dtype=np.int64), :] = True
    return mask


# -- generators ----------------------------------------------------------------------------------

def uniform_1d(shape: tuple[int, int], acceleration: float, center_fraction: float = 0.08,
               seed: int = 0) -> SamplingMask:
    """Phase-encode lines (rows ``ky`` along Y): a fully sampled centre band of
    ``round(center_fraction * Y)`` lines plus lines drawn uniformly without replacement, so that
    the total line count ``n`` is the integer whose ``Y / n`` is nearest the requested acceleration.
    """
    ny, nx = _shape2(shape)
    acc, seed = _acceleration(acceleration), _seed(seed)
    n_total, n_center = _line_counts(ny, acc, center_fraction)
    center = center_lines(ny, n_center)
    others = np.setdiff1d(np.arange(ny), center)
    rng = np.random.default_rng(seed)
    picked = rng.choice(others, size=n_total - n_center, replace=False)
    return SamplingMask(_lines_to_mask(np.concatenate([center, picked]), (ny, nx)), "uniform1d",
                        acc, {"center_fraction": float(center_fraction), "seed": seed,
                              "n_lines": n_total, "n_center_lines": n_center})


def gaussian_1d(shape: tuple[int, int], acceleration: float, center_fraction: float = 0.08,
                seed: int = 0, std_fraction: float = 0.25) -> SamplingMask:
    """Like :func:`uniform_1d`, but the non-centre lines are drawn without replacement with a
    Gaussian density ``exp(-(ky - Y//2)^2 / (2 (std_fraction * Y)^2))`` around the centre
    (floored at 1e-12 so that any acceleration the line count allows stays reachable).
    """
    ny, nx = _shape2(shape)
    acc, seed = _acceleration(acceleration), _seed(seed)
    if not (math.isfinite(float(std_fraction)) and float(std_fraction) > 0):
        raise MRIInputError(f"std_fraction must be a positive number, got {std_fraction!r}")
    n_total, n_center = _line_counts(ny, acc, center_fraction)
    center = center_lines(ny, n_center)
    others = np.setdiff1d(np.arange(ny), center)
    std = float(std_fraction) * ny
    weights = np.maximum(np.exp(-0.5 * ((others - ny // 2) / std) ** 2), 1e-12)
    rng = np.random.default_rng(seed)
    picked = rng.choice(others, size=n_total - n_center, replace=False, p=weights / weights.sum())
    return SamplingMask(_lines_to_mask(np.concatenate([center, picked]), (ny, nx)), "gaussian1d",
                        acc, {"center_fraction": float(center_fraction), "seed": seed,
                              "std_fraction": float(std_fraction), "n_lines": n_total,
                              "n_center_lines": n_center})


def poisson_2d(shape: tuple[int, int], acceleration: float, calib: tuple[int, int] = (24, 24),
               seed: int = 0, crop_corner: bool = True) -> SamplingMask:
    """Variable-density Poisson-disc mask from ``sigpy.mri.poisson`` (seeded), with a fully
    sampled ``calib = (cy, cx)`` centre (24 x 24 by default, matching ESPIRiT's calibration
    width; clipped to the shape). SigPy matches the acceleration to within 0.1.
    """
    ny, nx = _shape2(shape)
    acc, seed = _acceleration(acceleration, strict=True), _seed(seed)
    try:
        cy, cx = (int(c) for c in calib)
    except (TypeError, ValueError):
        raise MRIInputError(f"calib must be two integers (cy, cx), got {calib!r}") from None
    if cy < 0 or cx < 0:
        raise MRIInputError(f"calib must be non-negative, got {(cy, cx)}")
    cy, cx = min(cy, ny), min(cx, nx)
    if cy * cx * acc > ny * nx:
        raise MRIInputError(
            f"acceleration x{acc:g} is impossible for a {ny}x{nx} Poisson-disc mask with a "
            f"{cy}x{cx} calibration region (at most x{ny * nx / max(cy * cx, 1):.2f})")
    import sigpy.mri  # heavy import (numba): only when a Poisson mask is made

    try:
        mask = sigpy.mri.poisson((ny, nx), acc, calib=(cy, cx), dtype=np.float32,
                                 crop_corner=bool(crop_corner), seed=seed)
    except ValueError as exc:
        raise MRIInputError(f"cannot make a {ny}x{nx} Poisson-disc mask at acceleration "
                            f"x{acc:g}: {exc}") from None
    return SamplingMask(np.asarray(mask) > 0.5, "poisson2d", acc,
                        {"calib": [cy, cx], "seed": seed, "crop_corner": bool(crop_corner)})


_FACTORIES: dict[str, Callable[..., SamplingMask]] = {
    "uniform1d": uniform_1d, "gaussian1d": gaussian_1d, "poisson2d": poisson_2d}


def make_mask(kind: str, shape: tuple[int, int], acceleration: float, seed: int = 0,
              **kw: Any) -> SamplingMask:
    """A mask of ``kind`` (one of :data:`MASK_KINDS`); ``kw`` are that generator's options."""
    if kind not in _FACTORIES:
        raise MRIInputError(f"unknown mask kind {kind!r}; choose one of {', '.join(MASK_KINDS)}")
    factory = _FACTORIES[kind]
    allowed = set(inspect.signature(factory).parameters) - {"shape", "acceleration", "seed"}
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise MRIInputError(f"mask kind {kind!r} has no option(s) {', '.join(unknown)}; "
                            f"it takes {', '.join(sorted(allowed))}")
    return factory(shape, acceleration, seed=seed, **kw)
