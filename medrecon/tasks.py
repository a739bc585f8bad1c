"""The three tasks: operator factory, measurement simulation and working units.

Working units
-------------
Every reconstruction (classical or diffusion) runs on an image ``w`` in *working units*, a
[0, 1]-like scale that the shipped priors also use, related to the physical image by an affine map
stored in the measurement (``attrs["scale"]``, ``attrs["offset"]``):

- CT: ``mu = scale * w + offset`` with ``mu`` the linear attenuation in 1/mm. For HU data and the
  default window [-1000, 1000] HU, ``w`` is that window mapped to [0, 1], i.e.
  ``mu = 2 mu_water w`` (offset 0). Phantoms in arbitrary units are taken as ``w`` directly
  (1.0 = +1000 HU, 0.0 = air). Sinograms hold line integrals of ``mu`` (dimensionless), so the
  Poisson model with an incident count ``I0`` is physical.
- MRI: ``image = scale * w`` with ``scale`` the 99.9th percentile of the magnitude of the
  simulated object, so ``|w|`` is about [0, 1]; k-space noise ``sigma`` is in working units.

:func:`data_in_working_units` turns measured data into data for the working image and
:func:`to_volume_units` maps a reconstruction back to the input volume's units (e.g. HU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import torch

from medrecon.errors import DataError, UserError
from medrecon.checks import require_memory
from medrecon.io.measurements import Measurement
from medrecon.physics.operator import LinearOperator
from medrecon.volume import DEFAULT_CT_WINDOW, MU_WATER, Volume

TASKS = ("sparse-view-ct", "limited-angle-ct", "cs-mri")
CT_TASKS = ("sparse-view-ct", "limited-angle-ct")


def views_of(task: Optional[str], op: LinearOperator) -> Optional[int]:
    """The number of projection views of a CT task's operator (data ``[Z, views, detector]``);
    None for other tasks."""
    return int(op.out_shape[-2]) if task in CT_TASKS else None


@dataclass
class CTOptions:
    """Acquisition of the CT tasks (angles in degrees, distances in mm)."""

    views: int = 8                       # sparse view: number of views
    wedge: float = 90.0                  # limited angle: wedge width
    start: float = 0.0                   # limited angle: first angle
    step: float = 1.0                    # limited angle: angular step
    beam: str = "parallel"               # "parallel" or "fan" (flat detector)
    source_origin: float = 500.0         # fan beam: source to rotation axis
    origin_detector: float = 500.0       # fan beam: rotation axis to detector
    detectors: Optional[int] = None      # detector bins (default: covers the image)
    detector_spacing: Optional[float] = None  # mm (default: one pixel at the axis)
    i0: Optional[float] = None           # incident photons per ray (None: noiseless)


@dataclass
class MRIOptions:
    """Acquisition of the multi-coil CS-MRI task."""

    acceleration: float = 4.0
    mask: str = "uniform1d"              # "uniform1d", "gaussian1d" or "poisson2d"
    center_fraction: float = 0.08        # 1D masks: fully sampled centre lines
    calib: int = 24                      # poisson2d: fully sampled calibration square
    coils: int = 8                       # simulated birdcage coils (1: single coil)
    sigma: float = 0.0                   # complex Gaussian noise, working units


# The acquisition options that mean something for each task (the others are recorded with their
# defaults but not shown: a wedge says nothing about a sparse-view scan).
_CT_COMMON = ("beam", "source_origin", "origin_detector", "detectors", "detector_spacing", "i0")
TASK_OPTIONS = {"sparse-view-ct": ("views", *_CT_COMMON),
                "limited-angle-ct": ("wedge", "start", "step", *_CT_COMMON),
                "cs-mri": ("acceleration", "mask", "center_fraction", "calib", "coils", "sigma")}


def task_options(task: str, options: dict) -> dict:
    """The entries of ``options`` that apply to ``task`` (fan-beam distances for fan beam only,
    the calibration square for Poisson-disc masks only)."""
    keep = dict((k, options[k]) for k in TASK_OPTIONS.get(task, tuple(options)) if k in options)
    if keep.get("beam", "fan") != "fan":
        keep.pop("source_origin", None)
        keep.pop("origin_detector", None)
    if "mask" in keep:
        keep.pop("calib" if keep["mask"] != "poisson2d" else "center_fraction", None)
    return keep


def check_task(task: str) -> str:
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return task


def ct_geometry(task: str, image_shape: tuple[int, int], pixel_size: float, opts: CTOptions):
    """The :class:`~medrecon.physics.ct.CTGeometry` of a CT task."""
    from medrecon.physics import ct

    if task == "sparse-view-ct":
        angles = ct.sparse_view_angles(opts.views, opts.beam)
    else:
        angles = ct.limited_angle_angles(opts.wedge, opts.start, opts.step)
    if opts.beam == "parallel":
        return ct.parallel_geometry(image_shape, angles, pixel_size, opts.detectors, opts.detector_spacing)
    if opts.beam == "fan":
        return ct.fan_geometry(image_shape, angles, opts.source_origin, opts.origin_detector, pixel_size,
                               opts.detectors, opts.detector_spacing)
    raise UserError(f"unknown beam {opts.beam!r}; choose parallel or fan")


def ct_working_units(volume: Volume) -> tuple[np.ndarray, float, float, dict]:
    """``(w, scale, offset, window_info)`` with ``mu = scale * w + offset`` (1/mm)."""
    units, window = volume.units, DEFAULT_CT_WINDOW
    if units == "window01":
        if volume.window_units != "HU" or volume.window is None:
            raise UserError(f"a window01 CT volume needs an HU window, got {volume.window_units}")
        window, w = volume.window, volume.array
    elif units == "HU":
        w = (volume.array - window[0]) / (window[1] - window[0])
    elif units == "1/mm":
        w = volume.array / (MU_WATER * (window[1] - window[0]) / 1000.0)
    elif units == "a.u.":
        w = volume.array
    else:
        raise UserError(f"cannot simulate CT from a volume in {units!r}")
    scale = MU_WATER * (window[1] - window[0]) / 1000.0
    offset = MU_WATER * (1.0 + window[0] / 1000.0)
    return np.asarray(w, np.float32), scale, offset, {"window": list(window), "window_units": "HU"}


def simulate(volume: Volume, task: str, seed: int = 0, ct: Optional[CTOptions] = None,
             mri: Optional[MRIOptions] = None, keep_reference: bool = True,
             device: torch.device | str = "cpu") -> Measurement:
    """Simulate a measurement of ``volume`` for ``task`` (seeded; noise per the options)."""
    check_task(task)
    if not np.isrealobj(volume.array):
        raise UserError("simulate expects a real-valued volume (magnitude image)")
    for opts_ in (ct, mri):
        for key, value in (asdict(opts_) if opts_ is not None else {}).items():
            if isinstance(value, float) and not np.isfinite(value):
                raise UserError(f"--{key.replace('_', '-')} must be a finite number, got {value}")
    z, y, x = volume.shape
    attrs: dict[str, Any] = {"seed": int(seed), "volume": _volume_attrs(volume)}
    arrays: dict[str, np.ndarray] = {}
    if keep_reference:
        arrays["reference"] = volume.array.astype(np.float32)
    if task in CT_TASKS:
        from medrecon.physics.ct import make_ct_operator
        from medrecon.physics.noise import poisson_transmission

        opts = ct or CTOptions()
        if abs(volume.spacing[1] - volume.spacing[2]) > 1e-6 * volume.spacing[1]:
            raise UserError(f"CT slices need square pixels, got spacing (dy, dx) = {volume.spacing[1:]}")
        geometry = ct_geometry(task, (y, x), volume.spacing[2], opts)
        w, scale, offset, window = ct_working_units(volume)
        op = make_ct_operator(geometry, device=device)
        mu = torch.from_numpy(scale * w + offset).to(device)
        with torch.no_grad():
            sino = op.forward(mu)
            sino = poisson_transmission(sino, opts.i0, seed)
        attrs.update(scale=scale, offset=offset, options=asdict(opts), **window)
        return Measurement(task=task, data=sino.cpu().numpy().astype(np.float32),
                           geometry=geometry.to_dict(), arrays=arrays, attrs=attrs)

    from medrecon.physics.mri import SenseOperator, birdcage_maps, make_mask

    opts = mri or MRIOptions()
    kw = {"calib": (opts.calib, opts.calib)} if opts.mask == "poisson2d" else {"center_fraction": opts.center_fraction}
    mask = make_mask(opts.mask, (y, x), opts.acceleration, seed=seed, **kw)
    if opts.coils < 1:
        raise UserError(f"--coils must be >= 1, got {opts.coils}")
    maps = birdcage_maps(opts.coils, (y, x), device=device) if opts.coils > 1 else \
        torch.ones(1, y, x, dtype=torch.complex64, device=device)
    scale = float(np.percentile(np.abs(volume.array), 99.9)) or 1.0
    op = SenseOperator(maps, mask.mask, device=device)
    img = torch.from_numpy(np.ascontiguousarray(volume.array)).to(device=device, dtype=torch.complex64)
    with torch.no_grad():
        k = op.forward(img)  # k-space of the image in its own units; sigma is in working units
        if opts.sigma > 0:
            from medrecon.physics.noise import complex_gaussian
            k = complex_gaussian(k, opts.sigma * scale, seed) * op.mask.to(k.device)
    arrays.update(mask=mask.mask.astype(np.uint8), coil_maps=maps.cpu().numpy())
    attrs.update(scale=scale, offset=0.0, options=asdict(opts), acceleration=mask.acceleration,
                 sampled_fraction=mask.sampled_fraction)
    geometry = {"image_shape": [y, x], "n_coils": int(maps.shape[0]), "mask_kind": opts.mask}
    return Measurement(task=task, data=k.cpu().numpy().astype(np.complex64), geometry=geometry,
                       arrays=arrays, attrs=attrs)


def _volume_attrs(volume: Volume) -> dict:
    return {"units": volume.units, "modality": volume.modality, "spacing": list(volume.spacing),
            "affine": np.asarray(volume.affine).tolist(), "window": None if volume.window is None
            else list(volume.window), "window_units": volume.window_units,
            "description": volume.description, "source": {k: v for k, v in volume.source.items()
                                                          if isinstance(v, (str, int, float))}}


def _where(m: Measurement) -> str:
    return str(m.path) if m.path is not None else "measurement"


def ct_geometry_of(m: Measurement):
    """The measurement's :class:`~medrecon.physics.ct.CTGeometry`, checked against the sinogram
    ``[Z, A, D]`` (:class:`DataError` naming the file otherwise)."""
    from medrecon.physics.ct import CTGeometry, GeometryError

    try:
        geometry = CTGeometry.from_dict(m.geometry)
    except (GeometryError, TypeError, ValueError) as exc:
        raise DataError(f"{_where(m)}: {exc}") from None
    _, a, d = m.data.shape
    if geometry.n_angles != a or geometry.n_detectors != d:
        raise DataError(f"{_where(m)}: the sinogram [Z, A, D] is {list(m.data.shape)} but the "
                        f"geometry has {geometry.n_angles} angles and {geometry.n_detectors} "
                        f"detector bins")
    return geometry


def recon_shape(m: Measurement) -> tuple[int, int, int]:
    """``(Z, Y, X)`` of the image a reconstruction of ``m`` produces."""
    if m.task in CT_TASKS:
        return (int(m.data.shape[0]), *ct_geometry_of(m).image_shape)
    return (int(m.data.shape[0]), int(m.data.shape[-2]), int(m.data.shape[-1]))


# Image-sized buffers a reconstruction holds at once (ADMM-TV along z: x, z, u, CG vectors, the
# gradient along z, ...) and data-sized ones (y, residuals); a generous round number.
_IMAGE_BUFFERS, _DATA_BUFFERS = 16, 4


def require_reconstruction_memory(m: Measurement) -> None:
    """Refuse before allocating when the image and its working buffers cannot fit in memory
    (e.g. a corrupt geometry asking for 100000 x 100000 pixels)."""
    z, y, x = recon_shape(m)
    voxel = 8 if m.task == "cs-mri" else 4
    need = float(z) * y * x * voxel * _IMAGE_BUFFERS + float(m.data.nbytes) * _DATA_BUFFERS
    require_memory(need, f"{_where(m)}: reconstructing a {z} x {y} x {x} image")


def _borrow_empty_slice_maps(maps: torch.Tensor, has_signal: np.ndarray) -> torch.Tensor:
    """ESPIRiT maps ``[Z, C, Y, X]`` of slices without any k-space signal are 0/0 (NaN);
    such a slice's image is zero whatever the maps, so it takes those of the nearest slice
    with signal (coil sensitivities vary smoothly along z)."""
    if maps.dim() != 4 or has_signal.all() or not has_signal.any():
        return maps
    full = np.flatnonzero(has_signal)
    maps = maps.clone()
    for k in np.flatnonzero(~has_signal):
        maps[k] = maps[int(full[np.argmin(np.abs(full - k))])]
    return maps


def build_operator(m: Measurement, device: torch.device | str = "cpu", backend: str = "auto") -> LinearOperator:
    """The forward operator of a measurement, on ``device``."""
    check_task(m.task)
    if m.task in CT_TASKS:
        from medrecon.physics.ct import make_ct_operator
        return make_ct_operator(ct_geometry_of(m), backend=backend, device=device)
    from medrecon.physics.mri import SenseOperator, espirit_maps

    if "coil_maps" in m.arrays:
        maps = torch.from_numpy(np.asarray(m.arrays["coil_maps"], np.complex64))
    else:  # measured k-space without maps: calibrate them from the fully sampled centre
        maps = espirit_maps(torch.from_numpy(m.data), device=device)
        maps = _borrow_empty_slice_maps(maps, np.abs(m.data).reshape(m.data.shape[0], -1).max(1) > 0)
        if not bool(torch.isfinite(maps).all()):
            raise DataError(
                f"{_where(m)}: the file has no coil maps, and the ones estimated with ESPIRiT "
                f"from its k-space centre hold NaN/Inf (typical of noise-free or synthetic "
                f"k-space); store coil maps in the file (arrays/coil_maps [C, Y, X])")
    mask = np.asarray(m.arrays["mask"]).astype(bool) if "mask" in m.arrays else np.abs(m.data).sum(axis=(0, 1)) > 0
    return SenseOperator(maps.to(device), mask, device=device)


def data_in_working_units(m: Measurement, op: LinearOperator, device: torch.device | str = "cpu") -> torch.Tensor:
    """Measured data for the working image: ``(y - offset A 1) / scale`` (see module docstring)."""
    scale, offset = float(m.attrs.get("scale", 1.0)), float(m.attrs.get("offset", 0.0))
    y = torch.from_numpy(np.asarray(m.data)).to(device)
    if offset != 0.0:
        ones = torch.ones((y.shape[0], *op.in_shape[1:]), dtype=op.in_dtype, device=op.device)
        with torch.no_grad():
            y = y - offset * op.forward(ones)
    return y / scale


def to_volume_units(w: torch.Tensor | np.ndarray, m: Measurement) -> np.ndarray:
    """Map a working-unit reconstruction back to the units of the simulated/measured volume."""
    arr = w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
    vol = m.attrs.get("volume", {})
    units = vol.get("units", "a.u.")
    scale, offset = float(m.attrs.get("scale", 1.0)), float(m.attrs.get("offset", 0.0))
    if m.task not in CT_TASKS:
        return (arr * scale).astype(np.float32)
    mu = scale * arr + offset
    if units == "HU":
        return (1000.0 * (mu / MU_WATER - 1.0)).astype(np.float32)
    if units == "1/mm":
        return mu.astype(np.float32)
    if units == "window01":
        lo, hi = vol["window"]
        return ((1000.0 * (mu / MU_WATER - 1.0) - lo) / (hi - lo)).astype(np.float32)
    return arr.astype(np.float32)  # a.u.: the working units themselves


def output_volume(array: np.ndarray, m: Measurement, description: str = "") -> Volume:
    """A :class:`Volume` with the geometry and identity recorded in the measurement."""
    vol = m.attrs.get("volume", {})
    affine = np.asarray(vol["affine"]) if vol.get("affine") is not None else None
    return Volume(array=array, spacing=tuple(vol.get("spacing", (1.0, 1.0, 1.0))), affine=affine,
                  modality=vol.get("modality", "OT"), units=vol.get("units", "a.u."),
                  window=tuple(vol["window"]) if vol.get("window") else None,
                  window_units=vol.get("window_units"), source=dict(vol.get("source", {})),
                  description=description)
