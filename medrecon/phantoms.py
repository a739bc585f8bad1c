"""Phantoms: the 3D Shepp-Logan head and a seeded family of random-ellipsoid heads.

All volumes are numpy arrays ``[Z, Y, X]`` with values in ``[0, 1]`` (arbitrary units). The
normalised coordinates span ``[-1, 1]`` on every axis (voxel centres), with ``+y`` pointing to
row 0 (the top of the image, as in the usual Shepp-Logan figure) and ``+z`` to the last slice.

Seeds of :func:`random_ellipsoids` are partitioned so that held-out data never leaks into training:

* ``0 <= seed < VALIDATION_SEED_START`` (900_000): training seeds;
* ``VALIDATION_SEED_START <= seed < TEST_SEED_START``: validation during training;
* ``seed >= TEST_SEED_START`` (1_000_000): reserved for tests and held-out evaluation; the
  training code refuses them (:func:`check_training_seeds`).

The Shepp-Logan phantom is never part of any training set.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from medrecon.errors import UserError

VALIDATION_SEED_START = 900_000
TEST_SEED_START = 1_000_000

# Modified (Toft) high-contrast 3D Shepp-Logan ellipsoids, as tabulated for 3D in the literature
# (Kak & Slaney's head extended to 3D with Toft's intensities):
#   additive value A, semi-axes (a, b, c) along (x, y, z), centre (x0, y0, z0),
#   Euler angles (phi, theta, psi) in degrees (intrinsic z-x-z convention).
_SHEPP_LOGAN = np.array([
    # A      a       b      c       x0      y0      z0    phi  theta  psi
    [1.0,  .6900, .9200, .8100,  0.00,   0.0000,  0.00,   0.0, 0.0,  0.0],
    [-.8,  .6624, .8740, .7800,  0.00,  -0.0184,  0.00,   0.0, 0.0,  0.0],
    [-.2,  .1100, .3100, .2200,  0.22,   0.0000,  0.00, -18.0, 0.0, 10.0],
    [-.2,  .1600, .4100, .2800, -0.22,   0.0000,  0.00,  18.0, 0.0, 10.0],
    [0.1,  .2100, .2500, .4100,  0.00,   0.3500, -0.15,   0.0, 0.0,  0.0],
    [0.1,  .0460, .0460, .0500,  0.00,   0.1000,  0.25,   0.0, 0.0,  0.0],
    [0.1,  .0460, .0460, .0500,  0.00,  -0.1000,  0.25,   0.0, 0.0,  0.0],
    [0.1,  .0460, .0230, .0500, -0.08,  -0.6050,  0.00,   0.0, 0.0,  0.0],
    [0.1,  .0230, .0230, .0200,  0.00,  -0.6060,  0.00,   0.0, 0.0,  0.0],
    [0.1,  .0230, .0460, .0200,  0.06,  -0.6050,  0.00,   0.0, 0.0,  0.0],
])

# T2-weighted-like MR contrast of the same ellipsoids (additive values). Resulting tissue values:
# scalp/skull shell 0.10 (bone gives little signal), brain 0.50, the two ventricles (CSF, bright
# in T2) 1.00, the small structures/lesions 0.80.
_MR_VALUES = np.array([0.10, 0.40, 0.50, 0.50, 0.30, 0.30, 0.30, 0.30, 0.30, 0.30])

_CONTRASTS = ("ct", "mr")


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise UserError(f"phantom shape must be three positive sizes (Z, Y, X), got {tuple(shape)}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _check_contrast(contrast: str) -> str:
    if contrast not in _CONTRASTS:
        raise UserError(f"phantom contrast must be one of {_CONTRASTS}, got {contrast!r}")
    return contrast


def _axes(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates in [-1, 1]: z ``[Z]``, y ``[Y]`` (top row = +1), x ``[X]``."""
    def lin(n: int) -> np.ndarray:
        return (np.arange(n) + 0.5) / n * 2.0 - 1.0
    return lin(shape[0]), -lin(shape[1]), lin(shape[2])


def _add_ellipsoid(vol: np.ndarray, axes: tuple[np.ndarray, np.ndarray, np.ndarray],
                   value: float, semi: np.ndarray, centre: np.ndarray, rot: np.ndarray) -> None:
    """Add ``value`` inside one ellipsoid, evaluating only its bounding box (in place).

    ``semi`` = (a, b, c) along the body axes, ``centre`` = (x0, y0, z0), ``rot`` a 3x3 rotation
    whose columns are the body axes in (x, y, z) world coordinates.
    """
    z, y, x = axes
    half = np.sqrt(((rot * semi[None, :]) ** 2).sum(axis=1))  # world half-extents (x, y, z)

    def window(coord: np.ndarray, c: float, h: float) -> slice:
        idx = np.nonzero(np.abs(coord - c) <= h)[0]
        return slice(int(idx.min()), int(idx.max()) + 1) if idx.size else slice(0, 0)

    sz, sy, sx = window(z, centre[2], half[2]), window(y, centre[1], half[1]), window(x, centre[0], half[0])
    if sz.stop == sz.start or sy.stop == sy.start or sx.stop == sx.start:
        return
    dz = (z[sz] - centre[2])[:, None, None]
    dy = (y[sy] - centre[1])[None, :, None]
    dx = (x[sx] - centre[0])[None, None, :]
    inv = rot.T / semi[:, None]  # maps world offsets to scaled body coordinates
    q = 0.0
    for k in range(3):
        u = inv[k, 0] * dx + inv[k, 1] * dy + inv[k, 2] * dz
        q = q + u * u
    vol[sz, sy, sx] += np.where(q <= 1.0, np.float32(value), np.float32(0.0))


def _rotation(euler_deg: Sequence[float]) -> np.ndarray:
    return Rotation.from_euler("ZXZ", euler_deg, degrees=True).as_matrix()


def shepp_logan_3d(shape: Sequence[int] = (64, 128, 128), contrast: str = "ct",
                   dtype: np.dtype = np.float32) -> np.ndarray:
    """The 3D Shepp-Logan head ``[Z, Y, X]`` in ``[0, 1]``.

    ``contrast="ct"``: the modified (Toft) high-contrast intensities (skull 1.0, brain 0.2,
    ventricles 0.0, small structures 0.3). ``contrast="mr"``: a T2-like assignment of the same
    ellipsoids (skull 0.1, brain 0.5, ventricles 1.0, small structures 0.8).
    """
    shape = _check_shape(shape)
    values = _SHEPP_LOGAN[:, 0] if _check_contrast(contrast) == "ct" else _MR_VALUES
    axes = _axes(shape)
    vol = np.zeros(shape, dtype=np.float32)
    for row, value in zip(_SHEPP_LOGAN, values):
        _add_ellipsoid(vol, axes, float(value), row[1:4], row[4:7], _rotation(row[7:10]))
    return np.clip(vol, 0.0, 1.0).astype(dtype, copy=False)


def random_ellipsoids(shape: Sequence[int] = (64, 128, 128), seed: int = 0, contrast: str = "ct",
                      n_ellipsoids: int = 12, dtype: np.dtype = np.float32) -> np.ndarray:
    """One seeded random head phantom ``[Z, Y, X]`` in ``[0, 1]``.

    A head-like outer shell (random semi-axes and tilt; bright "skull" for CT, dark for MR), a
    brain ellipsoid inside it, and ``n_ellipsoids`` random inner ellipsoids (random centre inside
    the brain, semi-axes 0.02-0.30, random 3D orientation, additive intensity in [-0.25, 0.45]),
    clipped to ``[0, 1]``. The same ``(shape, seed, contrast, n_ellipsoids)`` always gives the
    same volume. See the module docstring for the seed ranges reserved for tests.
    """
    shape = _check_shape(shape)
    _check_contrast(contrast)
    if int(seed) < 0:
        raise UserError(f"phantom seed must be >= 0, got {seed}")
    if int(n_ellipsoids) < 0:
        raise UserError(f"n_ellipsoids must be >= 0, got {n_ellipsoids}")
    rng = np.random.default_rng([int(seed), 0x5EED])
    axes = _axes(shape)
    vol = np.zeros(shape, dtype=np.float32)

    outer = np.array([rng.uniform(0.60, 0.80), rng.uniform(0.80, 0.95), rng.uniform(0.70, 0.90)])
    tilt = _rotation([rng.uniform(-15, 15), rng.uniform(-8, 8), rng.uniform(-8, 8)])
    centre = np.array([rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04), 0.0])
    thickness = rng.uniform(0.03, 0.07)
    inner = outer - thickness * np.array([1.0, 1.0, 1.0])
    if contrast == "ct":
        shell, brain = rng.uniform(0.75, 1.0), rng.uniform(0.12, 0.35)
    else:
        shell, brain = rng.uniform(0.05, 0.20), rng.uniform(0.35, 0.60)
    _add_ellipsoid(vol, axes, shell, outer, centre, tilt)
    mask = np.zeros(shape, dtype=np.float32)
    _add_ellipsoid(mask, axes, 1.0, inner, centre, tilt)
    vol += (brain - shell) * mask

    structures = np.zeros(shape, dtype=np.float32)
    for _ in range(int(n_ellipsoids)):
        semi = rng.uniform(0.02, 0.30, size=3)
        direction = rng.uniform(-1.0, 1.0, size=3)
        offset = inner * direction * rng.uniform(0.0, 0.75) / max(np.linalg.norm(direction), 1e-6)
        rot = Rotation.random(random_state=np.random.RandomState(rng.integers(2**31))).as_matrix()
        semi = np.minimum(semi, 0.9 * (inner - np.abs(offset)).clip(min=0.02))
        value = rng.uniform(-0.25, 0.45)
        _add_ellipsoid(structures, axes, value, semi, centre + tilt @ offset, tilt @ rot)
    vol += structures * mask  # inner structures never spill over the shell
    return np.clip(vol, 0.0, 1.0).astype(dtype, copy=False)


def ellipsoid_family(n: int, shape: Sequence[int] = (64, 128, 128), first_seed: int = 0,
                     contrast: str = "ct", n_ellipsoids: int = 12,
                     dtype: np.dtype = np.float32) -> np.ndarray:
    """``n`` consecutive members (seeds ``first_seed .. first_seed + n - 1``) as ``[n, Z, Y, X]``."""
    if int(n) < 1:
        raise UserError(f"ellipsoid_family needs n >= 1, got {n}")
    return np.stack([random_ellipsoids(shape, first_seed + i, contrast, n_ellipsoids, dtype)
                     for i in range(int(n))])


def check_training_seeds(seeds: Sequence[int] | range) -> None:
    """Refuse seeds reserved for validation/tests in a *training* set (UserError)."""
    seeds = range(seeds.start, seeds.stop) if isinstance(seeds, range) else list(seeds)
    bad = [s for s in (seeds if not isinstance(seeds, range) else (seeds.start, seeds.stop - 1))
           if s < 0 or s >= VALIDATION_SEED_START]
    if len(seeds) and bad:
        raise UserError(
            f"training phantom seeds must lie in [0, {VALIDATION_SEED_START}); seeds >= "
            f"{VALIDATION_SEED_START} are reserved for validation and >= {TEST_SEED_START} for "
            f"tests/held-out evaluation (got {bad[0]})")
