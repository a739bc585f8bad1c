"""The Volume type and medrecon's one place for intensity conventions.

Geometry
--------
``Volume.array`` is ``[Z, Y, X]``: Z indexes slices, Y rows, X columns. ``Volume.affine`` is a
4x4 matrix mapping a voxel index to **DICOM patient coordinates (LPS, millimetres)**::

    [L, P, S, 1]^T = affine @ [z, y, x, 1]^T

so column 0 is the step between slices, column 1 the step between rows (DICOM column
direction times the row spacing) and column 2 the step between columns (DICOM row direction
times the column spacing); column 3 is the centre of voxel (0, 0, 0), the
ImagePositionPatient of the first slice. ``spacing = (dz, dy, dx)`` equals the norms of the
first three columns. NIfTI files store RAS and index order (i, j, k) = (x, y, z); the conversion
happens only in :mod:`medrecon.io.nifti` (``nifti_affine = diag(-1, -1, 1, 1) @ affine @ P``
with ``P`` the index permutation). Default geometry (``from_array``): axial slices, x towards
patient left, y towards posterior, z towards superior, origin at 0.

Intensities
-----------
- CT Hounsfield units and linear attenuation mu (1/mm):
  ``HU = 1000 (mu - mu_water) / mu_water`` (air taken as mu = 0), with
  ``MU_WATER = 0.0192 /mm``: water at about 70 keV, the effective energy of a 120 kVp spectrum
  (NIST XCOM: 0.1929 /cm at 70 keV). Attenuation images are what a CT sinogram measures:
  line integrals of mu times mm.
- A ``[0, 1]`` window: ``x01 = (x - lo) / (hi - lo)``. The window ``(lo, hi)`` is stored in the
  volume (``units = "window01"``, ``window_units`` = the units of lo and hi) so that any result
  computed in window units maps back to HU with :meth:`Volume.from_window`.
All conversion functions work on floats, NumPy arrays and torch tensors alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

import numpy as np

MU_WATER = 0.0192
"""Linear attenuation of water in 1/mm at ~70 keV (effective energy of a 120 kVp CT spectrum)."""

UNITS = ("HU", "1/mm", "a.u.", "window01")
MODALITIES = ("CT", "MR", "OT")
DEFAULT_CT_WINDOW = (-1000.0, 1000.0)
"""HU window used when a CT volume is mapped to [0, 1] and no other window is given."""


def hu_to_mu(hu: Any, mu_water: float = MU_WATER) -> Any:
    """Hounsfield units -> linear attenuation in 1/mm: ``mu = mu_water (1 + HU / 1000)``."""
    return mu_water * (1.0 + hu / 1000.0)


def mu_to_hu(mu: Any, mu_water: float = MU_WATER) -> Any:
    """Linear attenuation in 1/mm -> Hounsfield units: ``HU = 1000 (mu / mu_water - 1)``."""
    return 1000.0 * (mu / mu_water - 1.0)


def _check_window(window: Sequence[float]) -> tuple[float, float]:
    if window is None or len(window) != 2:
        raise ValueError(f"window must be (lo, hi), got {window!r}")
    lo, hi = float(window[0]), float(window[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"window must have finite lo < hi, got ({lo}, {hi})")
    return lo, hi


def to_window(x: Any, window: Sequence[float], clip: bool = True) -> Any:
    """Map intensities to ``(x - lo) / (hi - lo)``; clipped to [0, 1] when ``clip``."""
    lo, hi = _check_window(window)
    y = (x - lo) / (hi - lo)
    if not clip:
        return y
    if hasattr(y, "clamp"):  # torch tensor
        return y.clamp(0.0, 1.0)
    return np.clip(y, 0.0, 1.0)


def from_window(x01: Any, window: Sequence[float]) -> Any:
    """Inverse of :func:`to_window` (without clipping): ``lo + x01 (hi - lo)``."""
    lo, hi = _check_window(window)
    return lo + x01 * (hi - lo)


def geometry_mismatch(a: np.ndarray, b: np.ndarray, rtol: float = 1e-3) -> Optional[str]:
    """Why two (z, y, x) -> LPS affines do not describe the same voxel grid, or None.

    Tolerances: voxel sizes to ``rtol`` relative, axis directions to ``rtol`` (about 0.06
    degrees), origins to ``rtol`` of the smallest voxel size plus 1e-4 mm (NIfTI stores
    affines in float32)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sa, sb = np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)
    if not np.allclose(sa, sb, rtol=rtol, atol=0):
        return (f"voxel sizes (dz, dy, dx) {np.round(sa, 4).tolist()} vs "
                f"{np.round(sb, 4).tolist()} mm")
    da, db = a[:3, :3] / sa, b[:3, :3] / sb
    if np.abs(da - db).max() > rtol:
        names = ("z", "y", "x")
        k = int(np.argmax(np.abs(da - db).max(axis=0)))
        return (f"the {names[k]} axis points along {np.round(da[:, k], 3).tolist()} vs "
                f"{np.round(db[:, k], 3).tolist()} (LPS): flipped or rotated")
    shift = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    if shift > rtol * float(min(sa.min(), sb.min())) + 1e-4:
        return f"origins {np.round(a[:3, 3], 3).tolist()} vs {np.round(b[:3, 3], 3).tolist()} mm"
    return None


def default_affine(spacing: Sequence[float]) -> np.ndarray:
    """Affine (z, y, x) -> LPS for an axial stack at the origin: x->L, y->P, z->S."""
    dz, dy, dx = (float(s) for s in spacing)
    aff = np.zeros((4, 4), dtype=np.float64)
    aff[2, 0], aff[1, 1], aff[0, 2], aff[3, 3] = dz, dy, dx, 1.0
    return aff


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor on any device
        array = array.detach().cpu().numpy()
    return np.asarray(array)


@dataclass
class Volume:
    """A 3D image with geometry and provenance.

    array: ``[Z, Y, X]`` float32 (complex64 allowed for complex MR images).
    spacing: ``(dz, dy, dx)`` in mm, the norms of the affine's first three columns.
    affine: 4x4, voxel index (z, y, x) -> patient LPS mm (see module docstring).
    modality: "CT", "MR" or "OT". units: "HU", "1/mm", "a.u." or "window01".
    window: for ``units == "window01"`` the (lo, hi) in ``window_units`` the data were mapped
    from; otherwise an optional display window in the volume's own units (None if unknown).
    source: identity of the originating study for derived DICOM (PatientID, PatientName,
    PatientBirthDate, PatientSex, StudyInstanceUID, StudyID, StudyDate, StudyTime,
    StudyDescription, AccessionNumber, FrameOfReferenceUID, SeriesInstanceUID, SeriesNumber,
    Modality, Manufacturer, ..., plus "files" and "path" where it was read from).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    affine: Optional[np.ndarray] = None
    modality: str = "OT"
    units: str = "a.u."
    window: Optional[tuple[float, float]] = None
    source: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    window_units: Optional[str] = None

    def __post_init__(self) -> None:
        arr = _as_numpy(self.array)
        if arr.ndim != 3:
            raise ValueError(f"Volume array must be [Z, Y, X], got shape {arr.shape}")
        arr = arr.astype(np.complex64 if np.iscomplexobj(arr) else np.float32, copy=False)
        self.array = np.ascontiguousarray(arr)
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be three positive mm values, got {self.spacing!r}")
        if self.affine is None:
            self.affine = default_affine(spacing)
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4) or not np.allclose(aff[3], [0, 0, 0, 1]):
            raise ValueError(f"affine must be a 4x4 homogeneous matrix, got {aff!r}")
        norms = np.linalg.norm(aff[:3, :3], axis=0)
        if not np.allclose(norms, spacing, rtol=1e-4, atol=1e-6):
            raise ValueError(f"spacing {spacing} disagrees with the affine's column norms "
                             f"{tuple(norms.round(6))}")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise ValueError("affine is singular")
        self.affine, self.spacing = aff, spacing
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.units not in UNITS:
            raise ValueError(f"units must be one of {UNITS}, got {self.units!r}")
        if self.window is not None:
            self.window = _check_window(self.window)
        if self.units == "window01":
            if self.window is None or self.window_units is None:
                raise ValueError("a window01 volume needs window=(lo, hi) and window_units")
        self.source = dict(self.source or {})

    # construction ---------------------------------------------------------------------------
    @classmethod
    def from_array(cls, array: Any, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   modality: str = "OT", units: str = "a.u.", **kwargs: Any) -> "Volume":
        """A volume with the default axial geometry (:func:`default_affine`) unless ``affine``
        is given in ``kwargs``; ``array`` may be a NumPy array or a torch tensor."""
        return cls(array=_as_numpy(array), spacing=tuple(spacing), modality=modality,
                   units=units, **kwargs)

    def with_array(self, array: Any, **changes: Any) -> "Volume":
        """Same geometry and provenance with a new ``[Z, Y, X]`` array (same shape); other
        fields (units, window, description, ...) can be changed by keyword."""
        arr = _as_numpy(array)
        if arr.shape != self.array.shape:
            raise ValueError(f"with_array needs shape {self.array.shape}, got {arr.shape}")
        return replace(self, array=arr, affine=self.affine.copy(), source=dict(self.source),
                       **changes)

    # geometry ---------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def origin(self) -> np.ndarray:
        """LPS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def directions(self) -> np.ndarray:
        """3x3 unit vectors (rows: slice normal z, column direction y, row direction x) in LPS."""
        return (self.affine[:3, :3] / np.asarray(self.spacing)).T.copy()

    def slice_affine(self, k: int) -> np.ndarray:
        """LPS position of the first voxel of slice ``k`` (DICOM ImagePositionPatient)."""
        return (self.affine @ np.array([k, 0, 0, 1.0]))[:3]

    def orientation_codes(self) -> str:
        """Where the +x, +y, +z index axes point, as LPS letters (e.g. "LPS" for axial;
        R/A/I for the opposite directions), from the dominant component of each axis."""
        pos, neg = "LPS", "RAI"
        codes = []
        for axis in (2, 1, 0):  # x, y, z columns
            v = self.affine[:3, axis]
            i = int(np.argmax(np.abs(v)))
            codes.append(pos[i] if v[i] > 0 else neg[i])
        return "".join(codes)

    def to_tensor(self, device: Any = "cpu") -> Any:
        """The array as a torch tensor ``[Z, Y, X]`` on ``device``."""
        import torch
        return torch.from_numpy(self.array.copy()).to(device)

    # intensities ------------------------------------------------------------------------------
    def to_units(self, units: str, mu_water: float = MU_WATER) -> "Volume":
        """Convert between "HU" and "1/mm" (CT); identity when already in ``units``."""
        if units == self.units:
            return self.with_array(self.array.copy())
        if (self.units, units) == ("HU", "1/mm"):
            return self.with_array(hu_to_mu(self.array, mu_water), units="1/mm",
                                   window=None if self.window is None else
                                   tuple(hu_to_mu(np.asarray(self.window), mu_water)))
        if (self.units, units) == ("1/mm", "HU"):
            return self.with_array(mu_to_hu(self.array, mu_water), units="HU",
                                   window=None if self.window is None else
                                   tuple(mu_to_hu(np.asarray(self.window), mu_water)))
        if self.units == "window01":
            return self.from_window().to_units(units, mu_water)
        raise ValueError(f"cannot convert {self.units} to {units}")

    def to_window(self, window: Optional[Sequence[float]] = None,
                  clip: bool = True) -> "Volume":
        """Map to [0, 1] with ``window`` in the volume's units (default: its own window, or
        :data:`DEFAULT_CT_WINDOW` for HU). The window is recorded for :meth:`from_window`."""
        if self.units == "window01":
            raise ValueError("volume is already in window01 units")
        if window is None:
            window = self.window or (DEFAULT_CT_WINDOW if self.units == "HU" else None)
        if window is None:
            raise ValueError(f"no window given for a {self.units} volume")
        win = _check_window(window)
        return self.with_array(to_window(self.array, win, clip=clip), units="window01",
                               window=win, window_units=self.units)

    def from_window(self) -> "Volume":
        """Map a window01 volume back to the units its window was recorded in (e.g. HU)."""
        if self.units != "window01":
            raise ValueError(f"volume is in {self.units}, not window01")
        assert self.window is not None and self.window_units is not None
        return self.with_array(from_window(self.array, self.window), units=self.window_units,
                               window=self.window, window_units=None)

    def summary(self) -> str:
        """One line: shape, spacing, orientation, modality, units."""
        z, y, x = self.shape
        dz, dy, dx = self.spacing
        win = f", window {self.window[0]:g}..{self.window[1]:g}" if self.window else ""
        mag = np.abs(self.array) if np.iscomplexobj(self.array) else self.array
        return (f"{self.modality} volume [Z, Y, X] = [{z}, {y}, {x}], spacing (dz, dy, dx) = "
                f"({dz:.4g}, {dy:.4g}, {dx:.4g}) mm, index axes x,y,z -> "
                f"{self.orientation_codes()}, units {self.units}{win}, "
                f"range {float(mag.min()):.4g}..{float(mag.max()):.4g}")


def reslice_axial(volume: Volume) -> Volume:
    """The same voxels reordered (axis permutation and flips, no interpolation) so that index z
    runs towards superior, y towards posterior and x towards patient left: coronal or sagittal
    acquisitions become axial stacks. Each index axis goes to the patient axis it points along
    most; the affine is updated so every voxel keeps its LPS position."""
    aff = volume.affine
    # patient axis (0 = L, 1 = P, 2 = S) of each index axis (0 = z, 1 = y, 2 = x)
    patient = [int(np.argmax(np.abs(aff[:3, a]))) for a in range(3)]
    if sorted(patient) != [0, 1, 2]:
        raise ValueError(f"cannot reslice: two index axes point along the same patient axis "
                         f"({volume.orientation_codes()})")
    order = [patient.index(2), patient.index(1), patient.index(0)]  # new z, y, x from old axes
    array = np.transpose(volume.array, order)
    new = np.eye(4)
    new[:3, 3] = aff[:3, 3]
    for new_axis, old_axis in enumerate(order):
        col = aff[:3, old_axis].copy()
        if col[(2, 1, 0)[new_axis]] < 0:  # flip so the index runs towards S, P, L
            n = volume.array.shape[old_axis]
            new[:3, 3] += col * (n - 1)
            col = -col
            array = np.flip(array, axis=new_axis)
        new[:3, new_axis] = col
    spacing = tuple(float(volume.spacing[a]) for a in order)
    return replace(volume, array=np.ascontiguousarray(array), affine=new, spacing=spacing,
                   source=dict(volume.source))


__all__ = ["Volume", "reslice_axial", "MU_WATER", "DEFAULT_CT_WINDOW", "hu_to_mu", "mu_to_hu", "to_window",
           "from_window", "default_affine", "geometry_mismatch"]
