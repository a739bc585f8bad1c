"""Filtered backprojection for parallel beam and flat-detector fan beam, in torch (any device).

Units: the sinogram holds line integrals in ``mm x image units`` (as produced by
:class:`medrecon.physics.ct.CTOperator`), and the result is in image units, so that
``fbp(A x) ~ x``.

- Filter: the band-limited ramp of Kak & Slaney (spatial kernel ``h(0) = 1 / (4 d^2)``,
  ``h(n odd) = -1 / (pi n d)^2``, transformed with the FFT; ``d`` the detector spacing), times a
  window of the normalised frequency ``nu`` (1 = Nyquist): ram-lak 1, shepp-logan
  ``sinc(nu / 2)``, cosine ``cos(pi nu / 2)``, hamming ``0.54 + 0.46 cos(pi nu)``, hann
  ``0.5 + 0.5 cos(pi nu)``. ``frequency_scaling`` f in (0, 1] evaluates the window at ``nu / f``
  and zeroes frequencies above ``f``. Each detector row is zero-padded to at least twice its
  length (a power of two, >= 64) before the FFT.
- Parallel beam: ``x = sum_a dtheta * q_a(x cos theta_a + y sin theta_a)`` with linear
  interpolation on the detector (pixel-driven backprojection).
- Fan beam, flat detector (full 360 degree scan): the detector is rescaled to a virtual detector
  through the rotation axis (spacing ``d * Rs / (Rs + Rd)``), each ray is pre-weighted by
  ``Rs / sqrt(Rs^2 + s^2)``, filtered with half the ramp, and backprojected with the distance
  weight ``1 / U^2``, ``U = (Rs - r . e_s) / Rs`` (Kak & Slaney, equispaced collinear detectors).

Every view is weighted by ``dtheta`` = the median angular gap between consecutive views (modulo
180 degrees for parallel, 360 for fan): 180/A or 360/A degrees for uniform full scans, the
step for a limited-angle wedge (which FBP cannot fill in).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from medrecon.errors import UserError
from medrecon.physics.ct import CTGeometry
from medrecon.physics.operator import LinearOperator

if TYPE_CHECKING:  # annotations only
    import scipy.sparse

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")


def _window(name: str, nu: torch.Tensor) -> torch.Tensor:
    if name == "ram-lak":
        return torch.ones_like(nu)
    if name == "shepp-logan":
        return torch.sinc(nu / 2)          # torch.sinc(t) = sin(pi t) / (pi t)
    if name == "cosine":
        return torch.cos(math.pi * nu / 2)
    if name == "hamming":
        return 0.54 + 0.46 * torch.cos(math.pi * nu)
    if name == "hann":
        return 0.5 + 0.5 * torch.cos(math.pi * nu)
    raise UserError(f"unknown FBP filter {name!r}; choose one of {', '.join(FILTERS)}")


def padded_length(n_detectors: int) -> int:
    """FFT length: the next power of two >= 2 * n_detectors (at least 64)."""
    return max(64, 1 << int(math.ceil(math.log2(2 * n_detectors))))


def ramp_filter(n_detectors: int, spacing: float, filter: str = "ram-lak",
                frequency_scaling: float = 1.0) -> torch.Tensor:
    """Frequency response (float64, ``[L // 2 + 1]`` for ``torch.fft.rfft``) of the windowed ramp.

    Includes the quadrature factor ``spacing``: filtering a row ``p`` (mm x units) gives
    ``(p * h)`` in units / mm, ready for backprojection over angles.
    """
    if filter not in FILTERS:
        raise UserError(f"unknown FBP filter {filter!r}; choose one of {', '.join(FILTERS)}")
    if not (0 < frequency_scaling <= 1):
        raise UserError(f"FBP frequency_scaling must be in (0, 1], got {frequency_scaling!r}")
    length = padded_length(n_detectors)
    n = torch.arange(length, dtype=torch.float64)
    n = torch.where(n <= length // 2, n, n - length)          # circular (signed) index
    h = torch.zeros(length, dtype=torch.float64)
    odd = (n.abs() % 2) == 1
    h[odd] = -1.0 / (math.pi * n[odd] * spacing) ** 2
    h[0] = 1.0 / (4 * spacing ** 2)
    response = torch.fft.rfft(h).real * spacing
    nu = torch.arange(response.numel(), dtype=torch.float64) / (length // 2)
    window = torch.where(nu <= frequency_scaling, _window(filter, nu / frequency_scaling),
                         torch.zeros_like(nu))
    return response * window


def filter_sinogram(sinogram: torch.Tensor, spacing: float, filter: str = "ram-lak",
                    frequency_scaling: float = 1.0) -> torch.Tensor:
    """Ramp-filter every detector row of ``[..., D]`` (zero-padded FFT convolution)."""
    d = sinogram.shape[-1]
    length = padded_length(d)
    response = ramp_filter(d, spacing, filter, frequency_scaling).to(
        device=sinogram.device, dtype=sinogram.dtype)
    spectrum = torch.fft.rfft(sinogram, n=length, dim=-1) * response
    return torch.fft.irfft(spectrum, n=length, dim=-1)[..., :d].contiguous()


def angular_weight(geometry: CTGeometry) -> float:
    """Quadrature weight per view: the median circular gap between sorted view angles, radians."""
    period = math.pi if geometry.beam == "parallel" else 2 * math.pi
    a = np.sort(np.mod(geometry.angles_array, period))
    if a.size == 1:
        return period
    gaps = np.diff(np.concatenate([a, a[:1] + period]))
    return float(np.median(gaps))


def _pixel_coordinates(geometry: CTGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    ny, nx = geometry.image_shape
    ps = geometry.pixel_size
    x = (torch.arange(nx, dtype=torch.float64) - (nx - 1) / 2) * ps
    y = ((ny - 1) / 2 - torch.arange(ny, dtype=torch.float64)) * ps
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return xx.reshape(-1), yy.reshape(-1)


def backprojection_matrix(geometry: CTGeometry, weight: float,
                          max_elements: int = 1 << 21) -> "scipy.sparse.csr_matrix":
    """Pixel-driven backprojector as a scipy CSR float64 matrix ``[Y * X, A * D]``.

    Row = pixel ``r * X + c``; for every view two entries (linear interpolation between the
    detector bins around the pixel's projection; bins beyond the detector read zero) weighted by
    ``weight`` (parallel) or ``weight / U^2`` (fan).
    """
    import scipy.sparse as sp

    xx, yy = _pixel_coordinates(geometry)
    n_pix, d = xx.numel(), geometry.n_detectors
    theta = torch.from_numpy(geometry.angles_array)[None, :]
    cos, sin = torch.cos(theta), torch.sin(theta)
    view_offset = (torch.arange(geometry.n_angles) * d)[None, :, None]
    chunk = max(1, max_elements // geometry.n_angles)
    counts, cols, vals = [], [], []
    for p0 in range(0, n_pix, chunk):
        x, y = xx[p0:p0 + chunk, None], yy[p0:p0 + chunk, None]
        along_u = x * cos + y * sin                                     # r . e_u, [P, A]
        if geometry.beam == "parallel":
            s, w = along_u, torch.full_like(along_u, weight)
        else:
            rs = geometry.source_origin
            dist = rs - (x * sin - y * cos)                              # Rs - r . e_s
            s = along_u * (rs + geometry.origin_detector) / dist
            w = weight * (rs / dist) ** 2
        u = s / geometry.detector_spacing + (d - 1) / 2
        i0 = torch.floor(u)
        f = u - i0
        idx = torch.stack((i0, i0 + 1), -1).long()                      # [P, A, 2]
        wt = torch.stack((1 - f, f), -1) * w[..., None]
        ok = (idx >= 0) & (idx < d) & (wt != 0)
        counts.append(ok.reshape(ok.shape[0], -1).sum(1))
        cols.append((idx + view_offset)[ok])                            # sorted within a row
        vals.append(wt[ok])
    indptr = np.zeros(n_pix + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(torch.cat(counts).numpy())
    return sp.csr_matrix((torch.cat(vals).numpy(), torch.cat(cols).numpy(), indptr),
                         shape=(n_pix, geometry.n_angles * d))


@lru_cache(maxsize=2)
def _backprojector(geometry: CTGeometry, weight: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    m = backprojection_matrix(geometry, weight)
    idx = torch.int32 if max(m.nnz, *m.shape) < 2**31 - 1 else torch.int64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "sparse CSR support is in beta state"
        b = torch.sparse_csr_tensor(torch.from_numpy(m.indptr).to(idx),
                                    torch.from_numpy(m.indices).to(idx),
                                    torch.from_numpy(m.data).to(dtype), size=m.shape,
                                    check_invariants=False)
    return b.to(device)


def backproject(q: torch.Tensor, geometry: CTGeometry, weight: float) -> torch.Tensor:
    """Pixel-driven backprojection of filtered rows ``q [Z, A, D]`` to ``[Z, Y, X]``.

    Parallel: ``sum_a weight * q_a(s)`` at ``s = x cos + y sin``. Fan: ``sum_a weight * q_a(s) /
    U^2`` at the detector position of the ray through the pixel. The sparse backprojection
    matrix is cached per (geometry, weight, dtype, device); runs on q's device and dtype.
    """
    b = _backprojector(geometry, float(weight), q.dtype, str(q.device))
    z = q.shape[0]
    x = torch.sparse.mm(b, q.reshape(z, b.shape[1]).T.contiguous())
    return x.T.reshape(z, *geometry.image_shape).contiguous()


def fbp(sinogram: torch.Tensor, geometry: CTGeometry, filter: str = "ram-lak",
        frequency_scaling: float = 1.0, operator: Optional[LinearOperator] = None) -> torch.Tensor:
    """Filtered backprojection ``[Z, A, D] -> [Z, Y, X]`` on the sinogram's device and dtype.

    Args:
        sinogram: line integrals (mm x image units), real float tensor ``[Z, A, D]``.
        geometry: the :class:`~medrecon.physics.ct.CTGeometry` of the sinogram.
        filter: one of ``FILTERS``; frequency_scaling: relative cut-off in (0, 1].
        operator: optional CT operator of this geometry. For parallel beam its adjoint is then
            used as the backprojector (``dtheta * d / pixel_size^2 * A^T q``, e.g. to reuse a
            CUDA projector); fan beam always uses the distance-weighted pixel-driven
            backprojector (the adjoint has no ``1 / U^2`` weight), so it is unused there.
    Returns:
        The image stack in image units.
    """
    if not isinstance(sinogram, torch.Tensor) or sinogram.dim() != 3:
        shape = getattr(sinogram, "shape", None)
        raise UserError(f"fbp expects a sinogram tensor [Z, A, D], got shape {shape}")
    if sinogram.is_complex() or not sinogram.is_floating_point():
        raise UserError(f"fbp expects a real floating-point sinogram, got {sinogram.dtype}")
    if tuple(sinogram.shape[1:]) != geometry.sinogram_shape:
        raise UserError(f"fbp: sinogram shape {tuple(sinogram.shape[1:])} does not match the "
                        f"geometry's (views, bins) = {geometry.sinogram_shape}")
    weight = angular_weight(geometry)
    if geometry.beam == "parallel":
        q = filter_sinogram(sinogram, geometry.detector_spacing, filter, frequency_scaling)
        if operator is not None:
            return _adjoint_backprojection(q, geometry, weight, operator)
        return backproject(q, geometry, weight)
    rs, sdd = geometry.source_origin, geometry.source_origin + geometry.origin_detector
    virtual = torch.from_numpy(geometry.detector_positions() * rs / sdd)
    pre = (rs / torch.sqrt(rs ** 2 + virtual ** 2)).to(device=sinogram.device, dtype=sinogram.dtype)
    q = filter_sinogram(sinogram * pre, geometry.detector_spacing * rs / sdd, filter,
                        frequency_scaling)
    return backproject(q, geometry, 0.5 * weight)


def _adjoint_backprojection(q: torch.Tensor, geometry: CTGeometry, weight: float,
                            operator: LinearOperator) -> torch.Tensor:
    op_geometry = getattr(operator, "geometry", None)
    if op_geometry != geometry:
        raise UserError("fbp: the operator's geometry differs from the sinogram's geometry")
    scale = weight * geometry.detector_spacing / geometry.pixel_size ** 2
    data = q.to(device=operator.device, dtype=operator.out_dtype)
    with torch.no_grad():
        return (operator.adjoint(data) * scale).to(device=q.device, dtype=q.dtype)
