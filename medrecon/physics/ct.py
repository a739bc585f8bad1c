"""Slice-wise 2D CT: parallel beam and fan beam (flat detector), ASTRA and pure-torch backends.

Coordinates and units (shared by both backends and by :mod:`medrecon.solvers.fbp`):

- An image slice ``[Y, X]`` is centred on the rotation axis. Pixel ``(r, c)`` has its centre at
  ``x = (c - (X - 1) / 2) * pixel_size`` and ``y = ((Y - 1) / 2 - r) * pixel_size`` (mm): row 0
  is the top (largest y), as in ASTRA.
- View angle ``theta`` (radians). Parallel beam: rays run along ``(sin theta, -cos theta)`` and
  detector bin ``i`` sits at ``s_i = (i - (n_detectors - 1) / 2) * detector_spacing`` along
  ``e_u = (cos theta, sin theta)``. Fan beam: the source is at ``source_origin * (sin theta,
  -cos theta)``, the flat detector centre at ``-origin_detector * (sin theta, -cos theta)``, bin
  ``i`` at ``s_i`` along ``e_u`` on the detector (spacing measured on the detector, in mm).
- A sinogram entry is the line integral of the image along its ray, in ``mm x image units``
  (an image of ones, 10 mm thick along the ray, projects to 10).

Recommended projectors: ASTRA ``"linear"`` (Joseph) for parallel beam, ``"line_fanflat"``
(exact intersection lengths) for fan beam; the torch backend is a Joseph projector for both.
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch

from medrecon.errors import UserError
from medrecon.physics.operator import LinearOperator

if TYPE_CHECKING:  # annotations only
    import scipy.sparse

BEAMS = ("parallel", "fan")
BACKENDS = ("auto", "astra", "torch")
ASTRA_PROJECTORS = {"parallel": ("linear", "line", "strip"),
                    "fan": ("line_fanflat", "strip_fanflat")}


class GeometryError(UserError, ValueError):
    """An invalid CT geometry or angle specification (a ValueError and a UserError)."""


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def _positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise GeometryError(f"CT geometry: {name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise GeometryError(f"CT geometry: {name} must be a positive finite number, got {value!r}")
    return v


def _positive_int(name: str, value: Any) -> int:
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and int(value) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise GeometryError(f"CT geometry: {name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class CTGeometry:
    """A 2D CT acquisition applied to every slice of a volume.

    Attributes:
        beam: ``"parallel"`` or ``"fan"`` (flat detector).
        angles: view angles in radians (stored as a tuple of floats; see :attr:`angles_array`).
        n_detectors: detector bins per view.
        detector_spacing: bin width on the detector, mm.
        image_shape: ``(Y, X)`` pixels of one slice.
        pixel_size: square pixel width, mm.
        source_origin: source to rotation axis distance, mm (fan beam only).
        origin_detector: rotation axis to detector distance, mm (fan beam only).
    """

    beam: str
    angles: tuple[float, ...]
    n_detectors: int
    detector_spacing: float
    image_shape: tuple[int, int]
    pixel_size: float = 1.0
    source_origin: Optional[float] = None
    origin_detector: Optional[float] = None

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if self.beam not in BEAMS:
            raise GeometryError(f"CT geometry: beam must be one of {BEAMS}, got {self.beam!r}")
        angles = np.asarray(self.angles, dtype=np.float64)
        if angles.ndim != 1 or angles.size == 0:
            raise GeometryError(f"CT geometry: angles must be a non-empty 1D sequence (radians), "
                                f"got shape {angles.shape}")
        if not np.all(np.isfinite(angles)):
            raise GeometryError("CT geometry: angles contain NaN or infinite values")
        set_("angles", tuple(float(a) for a in angles))
        set_("n_detectors", _positive_int("n_detectors", self.n_detectors))
        set_("detector_spacing", _positive("detector_spacing", self.detector_spacing))
        shape = tuple(self.image_shape)
        if len(shape) != 2:
            raise GeometryError(f"CT geometry: image_shape must be (Y, X), got {self.image_shape!r}")
        set_("image_shape", tuple(_positive_int("image_shape", s) for s in shape))
        set_("pixel_size", _positive("pixel_size", self.pixel_size))
        if self.beam == "parallel":
            if self.source_origin is not None or self.origin_detector is not None:
                raise GeometryError("CT geometry: source_origin/origin_detector are only for "
                                    "fan beam; leave them unset for parallel beam")
        else:
            if self.source_origin is None or self.origin_detector is None:
                raise GeometryError("CT geometry: fan beam needs source_origin and origin_detector "
                                    "(mm)")
            set_("source_origin", _positive("source_origin", self.source_origin))
            od = float(self.origin_detector)
            if not (math.isfinite(od) and od >= 0):
                raise GeometryError(f"CT geometry: origin_detector must be >= 0, got {od!r}")
            set_("origin_detector", od)
            if self.source_origin <= self.image_radius:
                raise GeometryError(
                    f"CT geometry: source_origin {self.source_origin} mm puts the source inside "
                    f"the image's circumscribed circle (radius {self.image_radius:.2f} mm)")

    # -- derived quantities -------------------------------------------------------------------
    @property
    def angles_array(self) -> np.ndarray:
        """View angles, radians, float64 array ``[A]``."""
        return np.asarray(self.angles, dtype=np.float64)

    @property
    def n_angles(self) -> int:
        return len(self.angles)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(n_angles, n_detectors)`` of one slice."""
        return (self.n_angles, self.n_detectors)

    @property
    def image_radius(self) -> float:
        """Radius of the circle circumscribing the image, mm."""
        return 0.5 * self.pixel_size * math.hypot(*self.image_shape)

    @property
    def magnification(self) -> float:
        """Fan beam ``(source_origin + origin_detector) / source_origin``; 1 for parallel beam."""
        if self.beam == "parallel":
            return 1.0
        return (self.source_origin + self.origin_detector) / self.source_origin

    def detector_positions(self) -> np.ndarray:
        """Centres of the detector bins along the detector, mm, ``[D]``."""
        return (np.arange(self.n_detectors) - (self.n_detectors - 1) / 2) * self.detector_spacing

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable description (angles in radians as a list of floats)."""
        return {"beam": self.beam, "angles": list(self.angles), "n_detectors": self.n_detectors,
                "detector_spacing": self.detector_spacing, "image_shape": list(self.image_shape),
                "pixel_size": self.pixel_size, "source_origin": self.source_origin,
                "origin_detector": self.origin_detector}

    @classmethod
    def from_dict(cls, d: dict) -> "CTGeometry":
        """Inverse of :meth:`to_dict`; raises :class:`GeometryError` on missing/unknown keys."""
        if not isinstance(d, dict):
            raise GeometryError(f"CT geometry: expected a mapping, got {type(d).__name__}")
        required = {"beam", "angles", "n_detectors", "detector_spacing", "image_shape"}
        optional = {"pixel_size", "source_origin", "origin_detector"}
        missing = required - set(d)
        unknown = set(d) - required - optional
        if missing or unknown:
            raise GeometryError(f"CT geometry: missing keys {sorted(missing)}, unknown keys "
                                f"{sorted(unknown)}")
        return cls(**{k: (tuple(v) if k == "image_shape" else v) for k, v in d.items()})


def default_detector_count(image_shape: Sequence[int], pixel_size: float = 1.0,
                           detector_spacing: Optional[float] = None,
                           source_origin: Optional[float] = None,
                           origin_detector: Optional[float] = None) -> int:
    """Detector bins covering the image's circumscribed circle.

    Parallel beam (no distances): ``ceil(max(Y, X) * sqrt(2) * pixel_size / detector_spacing)``,
    i.e. ``ceil(max(Y, X) sqrt 2)`` with the default spacing (= pixel size): 363 for 256.
    Fan beam: the shadow of that circle (radius r) on the flat detector, width
    ``2 (Rs + Rd) r / sqrt(Rs^2 - r^2)``, divided by the spacing (default: pixel size times the
    magnification, i.e. one pixel at the rotation axis).
    """
    y, x = (_positive_int("image_shape", s) for s in image_shape)
    ps = _positive("pixel_size", pixel_size)
    r = max(y, x) * ps * math.sqrt(2) / 2
    if source_origin is None and origin_detector is None:
        width = 2 * r
        spacing = ps if detector_spacing is None else _positive("detector_spacing", detector_spacing)
    else:
        if source_origin is None or origin_detector is None:
            raise GeometryError("default_detector_count: fan beam needs both source_origin and "
                                "origin_detector")
        rs, rd = _positive("source_origin", source_origin), float(origin_detector)
        if rs <= r:
            raise GeometryError(f"default_detector_count: source_origin {rs} mm is inside the "
                                f"field of view (radius {r:.2f} mm)")
        width = 2 * (rs + rd) * r / math.sqrt(rs * rs - r * r)
        spacing = (ps * (rs + rd) / rs if detector_spacing is None
                   else _positive("detector_spacing", detector_spacing))
    return int(math.ceil(width / spacing - 1e-9))


def parallel_geometry(image_shape: Sequence[int], angles: Sequence[float], pixel_size: float = 1.0,
                      n_detectors: Optional[int] = None,
                      detector_spacing: Optional[float] = None) -> CTGeometry:
    """Parallel-beam geometry; detector defaults: spacing = pixel size, count covers the image."""
    spacing = pixel_size if detector_spacing is None else detector_spacing
    if n_detectors is None:
        n_detectors = default_detector_count(image_shape, pixel_size, spacing)
    return CTGeometry("parallel", tuple(np.asarray(angles, np.float64).ravel()), n_detectors,
                      spacing, tuple(image_shape), pixel_size)


def fan_geometry(image_shape: Sequence[int], angles: Sequence[float], source_origin: float,
                 origin_detector: float, pixel_size: float = 1.0, n_detectors: Optional[int] = None,
                 detector_spacing: Optional[float] = None) -> CTGeometry:
    """Fan-beam (flat detector) geometry; default spacing = pixel size x magnification."""
    rs = _positive("source_origin", source_origin)
    spacing = (pixel_size * (rs + float(origin_detector)) / rs if detector_spacing is None
               else detector_spacing)
    if n_detectors is None:
        n_detectors = default_detector_count(image_shape, pixel_size, spacing, source_origin,
                                             origin_detector)
    return CTGeometry("fan", tuple(np.asarray(angles, np.float64).ravel()), n_detectors, spacing,
                      tuple(image_shape), pixel_size, source_origin, origin_detector)


# --------------------------------------------------------------------------------------------
# Angle helpers (arguments in degrees, results in radians)
# --------------------------------------------------------------------------------------------
def sparse_view_angles(n_views: int, beam: str = "parallel") -> np.ndarray:
    """``n_views`` angles uniform on [0, 180) degrees (parallel) or [0, 360) (fan), radians."""
    n = _positive_int("n_views", n_views)
    if beam not in BEAMS:
        raise GeometryError(f"sparse_view_angles: beam must be one of {BEAMS}, got {beam!r}")
    span = math.pi if beam == "parallel" else 2 * math.pi
    return np.arange(n, dtype=np.float64) * (span / n)


def limited_angle_angles(wedge_deg: float, start_deg: float = 0.0, step_deg: float = 1.0) -> np.ndarray:
    """Angles ``start, start + step, ... < start + wedge`` (degrees in), radians out.

    ``limited_angle_angles(120)`` gives 0, 1, ..., 119 degrees (120 views).
    """
    wedge = _positive("wedge_deg", wedge_deg)
    step = _positive("step_deg", step_deg)
    start = float(start_deg)
    if not math.isfinite(start):
        raise GeometryError(f"limited_angle_angles: start_deg must be finite, got {start_deg!r}")
    if wedge > 360:
        raise GeometryError(f"limited_angle_angles: wedge_deg must be <= 360, got {wedge}")
    n = max(1, int(math.ceil(wedge / step - 1e-9)))
    return np.deg2rad(start + np.arange(n, dtype=np.float64) * step)


# --------------------------------------------------------------------------------------------
# Ray geometry and the torch (Joseph) system matrix
# --------------------------------------------------------------------------------------------
def ray_geometry(geometry: CTGeometry) -> tuple[np.ndarray, np.ndarray]:
    """A point on every ray and its unit direction, float64 ``[A * D, 2]`` each (x, y in mm).

    Rays are ordered angle-major, matching the sinogram layout ``[A, D]``.
    """
    th = geometry.angles_array[:, None]
    s = geometry.detector_positions()[None, :]
    src_dir = np.stack(np.broadcast_arrays(np.sin(th), -np.cos(th)), -1)  # [A, 1, 2]
    e_u = np.stack(np.broadcast_arrays(np.cos(th), np.sin(th)), -1)      # [A, 1, 2]
    if geometry.beam == "parallel":
        point = s[..., None] * e_u
        direction = np.broadcast_to(src_dir, point.shape)
    else:
        source = geometry.source_origin * src_dir
        bins = -geometry.origin_detector * src_dir + s[..., None] * e_u
        point = np.broadcast_to(source, bins.shape)
        direction = bins - source
        direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    return np.ascontiguousarray(point.reshape(-1, 2)), np.ascontiguousarray(direction.reshape(-1, 2))


def _joseph_entries(point: torch.Tensor, direction: torch.Tensor, ray0: int, shape: tuple[int, int],
                    ps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ray, pixel, weight) of Joseph's projector for a block of rays (float64, ray-major order).

    Each ray steps through the pixel columns (rows when it is closer to vertical), and at every
    step linearly interpolates between the two nearest pixels of the crossed column (row); the
    weight is the interpolation weight times the step length ``ps / |cos|`` along the ray.
    """
    ny, nx = shape
    n_steps = max(ny, nx)
    dom = (direction[:, 0].abs() >= direction[:, 1].abs())[:, None]      # x-dominant rays
    k = torch.arange(n_steps, dtype=torch.float64)[None, :]
    pa = torch.where(dom, point[:, :1], point[:, 1:])                      # stepped axis
    pb = torch.where(dom, point[:, 1:], point[:, :1])
    da = torch.where(dom, direction[:, :1], direction[:, 1:])
    db = torch.where(dom, direction[:, 1:], direction[:, :1])
    coord = torch.where(dom, (k - (nx - 1) / 2) * ps, ((ny - 1) / 2 - k) * ps)  # column x / row y
    other = pb + (coord - pa) / da * db
    frac = torch.where(dom, (ny - 1) / 2 - other / ps, other / ps + (nx - 1) / 2)
    n_interp = torch.where(dom, ny, nx)
    in_steps = k < torch.where(dom, nx, ny)
    i0 = torch.floor(frac)
    f = frac - i0
    i0 = i0.long()
    step = ps / da.abs()
    kk = k.long()
    idx = torch.stack((i0, i0 + 1), -1)                                    # [R, K, 2]
    weight = torch.stack((1 - f, f), -1) * step[..., None]
    ok = in_steps[..., None] & (idx >= 0) & (idx < n_interp[..., None]) & (weight > 0)
    pix = torch.where(dom[..., None], idx * nx + kk[..., None], kk[..., None] * nx + idx)
    flat = torch.nonzero(ok.reshape(-1)).squeeze(1)    # ray-major order: rows come out sorted
    return flat // (2 * n_steps) + ray0, pix.reshape(-1)[flat], weight.reshape(-1)[flat]


def system_matrix(geometry: CTGeometry, rays_per_block: int = 8192) -> "scipy.sparse.csr_matrix":
    """Joseph system matrix of one slice, scipy CSR float64 ``[A * D, Y * X]`` (sorted indices).

    Row ``a * D + i`` is ray ``i`` of view ``a``; column ``r * X + c`` is pixel ``(r, c)``;
    entries in mm (interpolation weight x step length along the ray).
    """
    import scipy.sparse as sp

    point, direction = (torch.from_numpy(a) for a in ray_geometry(geometry))
    n_rays = point.shape[0]
    block = max(1, min(rays_per_block, (1 << 21) // max(geometry.image_shape)))
    parts = [_joseph_entries(point[i:i + block], direction[i:i + block], i, geometry.image_shape,
                             geometry.pixel_size) for i in range(0, n_rays, block)]
    rows, cols, vals = (torch.cat([p[j] for p in parts]) for j in range(3))
    n_pix = geometry.image_shape[0] * geometry.image_shape[1]
    indptr = np.zeros(n_rays + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(torch.bincount(rows, minlength=n_rays).numpy())
    a = sp.csr_matrix((vals.numpy(), cols.numpy(), indptr), shape=(n_rays, n_pix))
    a.sort_indices()   # per-row sort of the pixel indices (C++), needed by torch's CSR
    return a


def _torch_csr(m: Any, dtype: torch.dtype) -> torch.Tensor:
    idx = torch.int32 if max(m.nnz, *m.shape) < 2**31 - 1 else torch.int64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "sparse CSR support is in beta state"
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr).to(idx),
                                       torch.from_numpy(m.indices).to(idx),
                                       torch.from_numpy(m.data).to(dtype), size=m.shape,
                                       check_invariants=False)


@lru_cache(maxsize=4)
def _torch_matrices(geometry: CTGeometry, dtype: torch.dtype, device: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    a = system_matrix(geometry)
    at = a.transpose().tocsr()   # linear-time CSR -> CSC conversion: sorted rows per column
    at.sort_indices()
    return _torch_csr(a, dtype).to(device), _torch_csr(at, dtype).to(device)


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------
class _TorchProjector:
    """Sparse-matrix projector: forward = CSR matmul, adjoint = matmul with the transpose."""

    backend = "torch"
    kind = "joseph"

    def __init__(self, geometry: CTGeometry, dtype: torch.dtype, device: torch.device) -> None:
        self.geometry = geometry
        self.a, self.at = _torch_matrices(geometry, dtype, str(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.shape[0]
        y = torch.sparse.mm(self.a, x.reshape(z, self.a.shape[1]).T.contiguous())
        return y.T.reshape(z, *self.geometry.sinogram_shape).contiguous()

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        z = y.shape[0]
        x = torch.sparse.mm(self.at, y.reshape(z, self.at.shape[1]).T.contiguous())
        return x.T.reshape(z, *self.geometry.image_shape).contiguous()


def _astra_geometries(geometry: CTGeometry) -> tuple[dict, dict]:
    import astra

    ny, nx = geometry.image_shape
    hx, hy = nx * geometry.pixel_size / 2, ny * geometry.pixel_size / 2
    vol = astra.create_vol_geom(ny, nx, -hx, hx, -hy, hy)
    if geometry.beam == "parallel":
        proj = astra.create_proj_geom("parallel", geometry.detector_spacing, geometry.n_detectors,
                                      geometry.angles_array)
    else:
        proj = astra.create_proj_geom("fanflat", geometry.detector_spacing, geometry.n_detectors,
                                      geometry.angles_array, geometry.source_origin,
                                      geometry.origin_detector)
    return vol, proj


def _delete_projector(pid: int, three_d: bool) -> None:
    try:
        import astra
        (astra.projector3d if three_d else astra.projector).delete(pid)
    except Exception:  # interpreter shutdown: nothing left to free
        pass


class _AstraProjector:
    """ASTRA 2D projector applied slice by slice (CPU; or CUDA 2D when ``cuda`` is true)."""

    backend = "astra"

    def __init__(self, geometry: CTGeometry, kind: Optional[str], cuda: bool) -> None:
        import astra

        self.geometry = geometry
        vol, proj = _astra_geometries(geometry)
        if cuda:
            kind = "cuda"
        elif kind is None:
            kind = ASTRA_PROJECTORS[geometry.beam][0]
        elif kind not in ASTRA_PROJECTORS[geometry.beam]:
            raise GeometryError(f"ASTRA projector {kind!r} does not support {geometry.beam} beam; "
                                f"choose one of {ASTRA_PROJECTORS[geometry.beam]}")
        self.kind = kind
        self.pid = astra.create_projector(kind, proj, vol)
        self._finalizer = weakref.finalize(self, _delete_projector, self.pid, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import astra

        out = torch.empty((x.shape[0], *self.geometry.sinogram_shape), dtype=torch.float32,
                          device=x.device)
        for z in range(x.shape[0]):
            astra.projector.direct_FP(self.pid, _astra_view(x[z]), out=_astra_view(out[z]))
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        import astra

        out = torch.empty((y.shape[0], *self.geometry.image_shape), dtype=torch.float32,
                          device=y.device)
        for z in range(y.shape[0]):
            astra.projector.direct_BP(self.pid, _astra_view(y[z]), out=_astra_view(out[z]))
        return out


def _astra_view(t: torch.Tensor) -> Any:
    """What ASTRA's direct_FP/BP accept: a numpy view on CPU, the (DLPack) tensor on CUDA."""
    return t.numpy() if t.device.type == "cpu" else t


class _AstraCuda3DParallel:
    """All slices in one ASTRA CUDA call: parallel3d_vec with one detector row per slice.

    Only constructed when ``astra.use_cuda()`` is true (ASTRA 3D without a GPU kills the process).
    The number of slices is part of the ASTRA geometry, so projectors are kept per slice count.
    """

    backend = "astra"
    kind = "cuda3d"

    def __init__(self, geometry: CTGeometry) -> None:
        self.geometry = geometry
        self._pids: dict[int, int] = {}
        self._finalizers: list = []

    def _pid(self, n_slices: int) -> int:
        import astra

        if n_slices not in self._pids:
            g = self.geometry
            ny, nx = g.image_shape
            hx, hy = nx * g.pixel_size / 2, ny * g.pixel_size / 2
            vol = astra.create_vol_geom(ny, nx, n_slices, -hx, hx, -hy, hy,
                                        -n_slices / 2, n_slices / 2)
            th = g.angles_array
            vec = np.zeros((th.size, 12))
            vec[:, 0], vec[:, 1] = np.sin(th), -np.cos(th)
            vec[:, 6], vec[:, 7] = np.cos(th) * g.detector_spacing, np.sin(th) * g.detector_spacing
            vec[:, 11] = 1.0
            proj = astra.create_proj_geom("parallel3d_vec", n_slices, g.n_detectors, vec)
            pid = astra.create_projector("cuda3d", proj, vol)
            self._pids[n_slices] = pid
            self._finalizers.append(weakref.finalize(self, _delete_projector, pid, True))
        return self._pids[n_slices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from astra.experimental import direct_FP3D

        z = x.shape[0]
        out = torch.empty((z, *self.geometry.sinogram_shape), dtype=torch.float32, device=x.device)
        direct_FP3D(self._pid(z), x, out)
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        from astra.experimental import direct_BP3D

        z = y.shape[0]
        out = torch.empty((z, *self.geometry.image_shape), dtype=torch.float32, device=y.device)
        direct_BP3D(self._pid(z), out, y)
        return out


def _cuda3d_agrees(p3d: _AstraCuda3DParallel, geometry: CTGeometry, device: torch.device) -> bool:
    """Self-check of the 3D path against the 2D CUDA projector on a small random stack."""
    p2d = _AstraProjector(geometry, None, cuda=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((2, *geometry.image_shape), generator=gen).to(device)
    a, b = p3d.forward(x), p2d.forward(x)
    return bool((a - b).norm() <= 1e-2 * b.norm())


def astra_cuda_available() -> bool:
    """True when ASTRA was built with CUDA and sees a GPU."""
    try:
        import astra
        return bool(astra.use_cuda())
    except Exception:
        return False


# --------------------------------------------------------------------------------------------
# The operator
# --------------------------------------------------------------------------------------------
class CTOperator(LinearOperator):
    """Slice-wise CT projection ``A``: images ``[Z, Y, X]`` -> sinograms ``[Z, A, D]``.

    Line integrals in ``mm x image units``. Built by :func:`make_ct_operator`; ``backend`` is
    ``"astra"`` or ``"torch"`` and ``projector_kind`` names the projector actually used.
    """

    def __init__(self, geometry: CTGeometry, impl: Any, dtype: torch.dtype,
                 device: torch.device) -> None:
        super().__init__((None, *geometry.image_shape), (None, *geometry.sinogram_shape), dtype,
                         device=device)
        self.geometry = geometry
        self._impl = impl
        self.backend: str = impl.backend
        self.projector_kind: str = impl.kind

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "astra":
            return self._impl.forward(x.to(torch.float32).contiguous()).to(self.in_dtype)
        return self._impl.forward(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self.backend == "astra":
            return self._impl.adjoint(y.to(torch.float32).contiguous()).to(self.in_dtype)
        return self._impl.adjoint(y)

    def __repr__(self) -> str:
        g = self.geometry
        return (f"CTOperator({g.beam}, {g.n_angles} views, {g.n_detectors} bins, "
                f"image {g.image_shape}, backend={self.backend}/{self.projector_kind}, "
                f"{self.in_dtype}, device={self.device})")


def make_ct_operator(geometry: CTGeometry, backend: str = "auto", device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32, projector: Optional[str] = None
                     ) -> CTOperator:
    """Build the CT operator for ``geometry``.

    Args:
        backend: ``"astra"`` (CPU 2D projectors slice by slice; CUDA projectors when the device
            is CUDA and ``astra.use_cuda()``), ``"torch"`` (Joseph sparse matrix, any device),
            ``"auto"``: ASTRA-CUDA on CUDA when available, otherwise torch. On CPU the torch
            backend gives the same parallel-beam projections as ASTRA's Joseph projector (2e-6
            relative) and is 15-20x faster per call at 128x128 (measured: 8 views, 24 slices,
            A^T A in 3 ms vs 47 ms; 90 views: 21 ms vs 478 ms), after a one-time matrix build.
        device: where inputs and outputs live.
        dtype: ``torch.float32`` or ``torch.float64`` (ASTRA computes in float32 either way).
        projector: ASTRA CPU projector kind (``"linear"``, ``"line"``, ``"strip"`` for parallel;
            ``"line_fanflat"``, ``"strip_fanflat"`` for fan). Default: ``"linear"`` /
            ``"line_fanflat"``. Ignored by the torch backend and on CUDA.
    """
    if not isinstance(geometry, CTGeometry):
        raise GeometryError(f"make_ct_operator: expected a CTGeometry, got {type(geometry).__name__}")
    if backend not in BACKENDS:
        raise GeometryError(f"make_ct_operator: backend must be one of {BACKENDS}, got {backend!r}")
    if dtype not in (torch.float32, torch.float64):
        raise GeometryError(f"make_ct_operator: dtype must be float32 or float64, got {dtype}")
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    if backend == "auto":
        backend = "astra" if (on_cuda and astra_cuda_available()) else "torch"
    if backend == "torch":
        impl: Any = _TorchProjector(geometry, dtype, device)
    elif device.type == "cpu":
        impl = _AstraProjector(geometry, projector, cuda=False)
    elif on_cuda and astra_cuda_available():
        impl = None
        if geometry.beam == "parallel":
            p3d = _AstraCuda3DParallel(geometry)
            if _cuda3d_agrees(p3d, geometry, device):
                impl = p3d
        if impl is None:
            impl = _AstraProjector(geometry, None, cuda=True)
    else:
        raise GeometryError(f"make_ct_operator: the ASTRA backend cannot run on {device} "
                            f"(ASTRA CUDA available: {astra_cuda_available()}); use backend='torch'")
    return CTOperator(geometry, impl, dtype, device)
