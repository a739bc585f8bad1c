"""medrecon from Python: the five calls behind the command line.

    import medrecon

    volume = medrecon.load("study/")                                    # DICOM folder, NIfTI, NRRD
    m = medrecon.simulate(volume, "sparse-view-ct", views=8, size=128, slices=(40, 64))
    recon = medrecon.reconstruct(m, "dds")                              # prior chosen from the data
    print(medrecon.evaluate(volume, recon)["psnr"])                     # reference resampled to recon
    for p in medrecon.list_priors():
        print(p.name, p.modality, p.pixel_spacing_mm)

Volumes are :class:`medrecon.volume.Volume`: ``array`` ``[Z, Y, X]`` (Z = slices), ``spacing``
``(dz, dy, dx)`` in mm, ``affine`` (voxel index (z, y, x) -> patient LPS mm), ``modality`` and
``units`` (CT: HU; MR: a.u.). Measurements are :class:`medrecon.io.measurements.Measurement`:
a sinogram ``[Z, views, detectors]`` (line integrals of the attenuation in 1/mm times mm) or
multi-coil k-space ``[Z, coils, ky, kx]`` (complex64), with everything needed to rebuild the
operator. The ``medrecon`` commands call these same functions.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from medrecon.errors import UserError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def _device(device: Any) -> Any:
    """A torch device from ``"auto"`` / ``"cpu"`` / ``"cuda[:N]"`` or a torch device."""
    import torch

    from medrecon.device import resolve_device
    return device if isinstance(device, torch.device) else resolve_device(str(device))


def load(path: PathLike, *, series: Optional[str] = None, units: Optional[str] = None,
         modality: Optional[str] = None, allow_incomplete: bool = False) -> Any:
    """Read a volume or a measurement file.

    Args:
        path: a DICOM series folder (or file), a NIfTI (``.nii``, ``.nii.gz``) or NRRD file: a
            :class:`~medrecon.volume.Volume` ``[Z, Y, X]`` (DICOM: slices sorted along the slice
            normal, rescaled to HU for CT); or an HDF5 measurement (``.h5``, from
            :func:`simulate` or fastMRI k-space): a :class:`~medrecon.io.measurements.Measurement`.
        series: DICOM: SeriesInstanceUID or index when the folder holds several series.
        units: for files that record none (dcm2niix / Slicer NIfTI, NRRD): ``"HU"``, ``"1/mm"``
            or ``"a.u."``; default: what the file records, else ``"a.u."``.
        modality: ``"CT"``, ``"MR"`` or ``"OT"`` for files that record none.
        allow_incomplete: DICOM: skip unusable files and interpolate missing slices (recorded in
            ``volume.source``) instead of refusing the series.

    Raises:
        UserError / DataError: a one-line message naming the file and the problem.
    """
    from medrecon import units as units_module
    from medrecon.io import load_volume
    from medrecon.io.measurements import is_measurement_file, load_measurement

    p = Path(path)
    if p.is_file() and (is_measurement_file(p) or p.suffix.lower() in (".h5", ".hdf5")):
        if units is not None or modality is not None:
            raise UserError(f"{p}: a measurement file records its units; units= and modality= apply to volumes")
        return load_measurement(p)
    volume = load_volume(p, series=series, allow_incomplete=allow_incomplete)
    return units_module.declare(volume, units, modality, where=str(p))


def simulate(volume: Any, task: str, *, slices: Optional[Union[str, Sequence[int]]] = None,
             size: Optional[int] = None, seed: int = 0, device: str = "cpu", where: Optional[str] = None,
             ct: Any = None, mri: Any = None, **options: Any) -> Any:
    """Simulate a measurement of ``volume``.

    Args:
        volume: a real-valued :class:`~medrecon.volume.Volume` ``[Z, Y, X]`` (CT in HU, 1/mm or
            a.u. = medrecon's working window; MR magnitude in any units), or a path for :func:`load`.
        task: ``"sparse-view-ct"``, ``"limited-angle-ct"`` or ``"cs-mri"``.
        slices: keep the slab of slices ``A..B-1`` first: ``(A, B)`` or ``"A:B"``; default all.
        size: resample every slice to ``size x size`` pixels first (pixel spacing grows in
            proportion; the affine follows); default: keep the size.
        seed: seed of every random choice (noise, sampling mask).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        where: how to name the volume in error messages (default: its file).
        ct: a :class:`~medrecon.tasks.CTOptions` (all CT acquisition options at once).
        mri: a :class:`~medrecon.tasks.MRIOptions` (all MRI acquisition options at once).
        **options: single fields of those instead, e.g. ``views=8`` (sparse view; default 8),
            ``wedge=90.0`` (limited angle, degrees), ``i0=1e5`` (Poisson noise, photons per ray;
            default noiseless), ``acceleration=4.0``, ``mask="uniform1d"``, ``coils=8``,
            ``sigma=0.0`` (complex k-space noise in working units).

    Returns:
        A :class:`~medrecon.io.measurements.Measurement` holding the data, the operator's
        geometry and, in ``arrays["reference"]``, the (sliced, resampled) volume ``[Z, Y, X]``.
    """
    from dataclasses import replace

    from medrecon.datasets import select_and_resample
    from medrecon.tasks import CTOptions, MRIOptions, check_task
    from medrecon.tasks import simulate as simulate_task

    if isinstance(volume, (str, os.PathLike)):
        where = where or str(volume)
        volume = load(volume)
    where = where or str(volume.source.get("path") or "the volume")
    check_task(task)
    if not np.isrealobj(volume.array):
        raise UserError(f"{where} holds complex values ({volume.array.dtype}); simulate needs a real-valued "
                        f"volume (for complex MR images, pass the magnitude)")
    ct_fields = {f.name for f in fields(CTOptions)}
    mri_fields = {f.name for f in fields(MRIOptions)}
    unknown = sorted(set(options) - ct_fields - mri_fields)
    if unknown:
        raise UserError(f"unknown simulation option(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(sorted(ct_fields | mri_fields))}")
    ct = replace(ct or CTOptions(), **{k: v for k, v in options.items() if k in ct_fields})
    mri = replace(mri or MRIOptions(), **{k: v for k, v in options.items() if k in mri_fields})
    if slices is not None and not isinstance(slices, str):
        a, b = slices
        slices = f"{int(a)}:{int(b)}"
    volume = select_and_resample(volume, slices, size)
    return simulate_task(volume, task, seed=seed, ct=ct, mri=mri, device=_device(device))


def reconstruct(measurement: Any, method: str, *, prior: Optional[str] = None,
                settings: Optional[Any] = None, device: str = "cpu", progress: bool = False,
                backend: str = "auto", run_method: Optional[Callable[..., Any]] = None) -> Any:
    """Reconstruct a measurement; returns a :class:`~medrecon.volume.Volume` ``[Z, Y, X]``
    float32 in the units of the volume it was simulated from (CT: HU for DICOM/HU input; MR: the
    magnitude), on the measurement's grid (its affine), with ``source["reconstruction"]`` saying
    what ran (method, prior and why, seconds).

    Args:
        measurement: a :class:`~medrecon.io.measurements.Measurement` or its file.
        method: CT: ``"fbp"``, ``"sirt"``, ``"cgls"``, ``"tv"``; MRI: ``"zero-filled"``,
            ``"sense"``, ``"cgls"``, ``"tv"``; diffusion: ``"dds"`` (50 steps, warm-started from
            ADMM-TV) or ``"mbir"`` (DiffusionMBIR).
        prior: diffusion methods: a shipped prior name (:func:`list_priors`) or a prior folder.
            Default None: the shipped prior that fits the data's modality and pixel spacing
            (:func:`medrecon.prior.catalog.default_prior`; CT in HU: ``chest-ct`` at 1.9-4.04 mm
            pixels; MR: ``brain-mri`` at 1.3-2.4 mm; CT in a.u.: ``phantom``); refused with the
            choices listed when none fits. A prior of the other modality is refused.
        settings: the method's settings: None (the task's defaults, ``configs/<method>_<task>.yaml``)
            or a dict of overrides, e.g. ``{"iterations": 50}``, ``{"steps": 20, "seed": 1}``.
            DDS: when the prior does not fit the measurement and the dict sets none of
            ``start_sigma``, ``steps``, ``adapt*``, the run takes the safe start
            (:mod:`medrecon.samplers.prior_fit`); setting them keeps them.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        progress: show progress bars (labelled with the method and stage).
        backend: CT projector: ``"auto"``, ``"astra"`` or ``"torch"``.
        run_method: the function that computes (default :func:`medrecon.methods.run_method`;
            the command line passes a distributed one under torchrun).
    """
    from medrecon.config import make_settings
    from medrecon.methods import DIFFUSION
    from medrecon.prior.catalog import resolve_default_prior
    from medrecon.tasks import output_volume, to_volume_units

    if isinstance(measurement, (str, os.PathLike)):
        from medrecon.io.measurements import load_measurement
        measurement = load_measurement(measurement)
    if run_method is None:
        from medrecon.methods import run_method
    if settings is None or isinstance(settings, dict):
        values = dict(settings or {})
        if prior is not None:
            if method not in DIFFUSION:
                raise UserError(f"prior={prior!r}: method {method!r} uses no prior")
            values["prior"] = str(prior)
        settings = make_settings(method, values, task=measurement.task)
    choice = resolve_default_prior(measurement, settings) if method in DIFFUSION else None
    start = time.perf_counter()
    x = run_method(measurement, method, settings, device=_device(device), progress=progress,
                   backend=backend)
    seconds = time.perf_counter() - start
    volume = output_volume(to_volume_units(x, measurement), measurement,
                           description=f"medrecon {method} {measurement.task}")
    record: dict[str, Any] = {"method": method, "task": measurement.task, "seconds": round(seconds, 3)}
    if method in DIFFUSION:
        record.update(prior=settings.prior, prior_chosen="default" if choice else "named",
                      **({"prior_reason": choice.reason} if choice else {}))
    volume.source["reconstruction"] = record
    return volume


def _as_volume(value: Any, where: str) -> tuple[Any, str]:
    """``(volume, how it was read)`` from a Volume, a Measurement (its stored reference) or a path."""
    from medrecon.io.measurements import Measurement
    from medrecon.volume import Volume

    if isinstance(value, (str, os.PathLike)):
        value = load(value)
    if isinstance(value, Volume):
        return value, "the reference volume"
    if isinstance(value, Measurement):
        from medrecon.tasks import output_volume
        ref = value.arrays.get("reference")
        if ref is None:
            raise UserError(f"{where}: the measurement file holds no reference volume")
        return output_volume(np.asarray(ref, np.float32), value, "reference stored in the measurement"), \
            "the reference stored in the measurement file"
    raise UserError(f"{where}: expected a Volume, a Measurement or a file, got {type(value).__name__}")


def evaluate(reference: Any, recon: Any, *, mask: str = "none", window: Optional[Sequence[float]] = None,
             data_range: Optional[float] = None, units: Optional[str] = None, modality: Optional[str] = None,
             match_grid: str = "resample", names: Sequence[str] = ("reference", "recon")) -> dict:
    """PSNR and SSIM of ``recon`` against ``reference``: whole volume and per plane.

    Args:
        reference: a :class:`~medrecon.volume.Volume`, a measurement (its stored reference) or a
            file / DICOM folder. When it lies on another voxel grid than ``recon`` (e.g. the
            original 512 x 512 study against a 128 x 128 reconstruction of a slab of it), it is
            resampled onto ``recon``'s grid from the two affines (:mod:`medrecon.resample`).
        recon: the reconstruction (Volume or file), ``[Z, Y, X]``.
        mask: ``"none"`` or ``"body"`` (inside the body: the reference above -500 HU for CT or
            10 % of its range for MR, holes filled, largest component).
        window: CT: the HU window ``(lo, hi)`` whose width is the data range (default
            ``(-1000, 1000)``); MR: magnitudes over the reference's 99.9th percentile, range 1.
        data_range: an explicit data range in the volumes' units instead of the convention.
        units: declared units of both volumes when their files record none (``"HU"``, ``"1/mm"``, ``"a.u."``).
        modality: declared modality (``"CT"``, ``"MR"``) when the files record none.
        match_grid: ``"resample"`` (default) or ``"strict"`` (refuse other grids) or
            ``"ignore"`` (compare the arrays as stored; shapes must match).
        names: how to name the two inputs in messages (the CLI passes its options).

    Returns:
        ``{"psnr", "ssim", "planes": {"axial"|"coronal"|"sagittal": {"psnr", "ssim"}},
        "convention", "mask", "reference_grid"}`` (PSNR in dB, None with ``"identical": True``
        for identical volumes); ``reference_grid`` says whether the reference was used as
        stored or resampled.
    """
    from medrecon import units as units_module
    from medrecon.metrics import body_mask, ct_convention, explicit_convention, magnitude_convention, score
    from medrecon.resample import resample_onto
    from medrecon.volume import geometry_mismatch

    ref_where, rec_where = names
    ref, how = _as_volume(reference, ref_where)
    rec, _ = _as_volume(recon, rec_where)
    ref = units_module.declare(ref, units, modality, where=ref_where)
    rec = units_module.declare(rec, units, modality, where=rec_where)
    if match_grid not in ("resample", "strict", "ignore"):
        raise UserError(f"match_grid must be resample, strict or ignore, got {match_grid!r}")
    why = geometry_mismatch(ref.affine, rec.affine) if ref.array.shape == rec.array.shape else "shapes differ"
    grid = f"{how}, on the reconstruction's grid"
    if why and match_grid == "ignore":
        if ref.array.shape != rec.array.shape:
            raise UserError(f"{rec_where} has shape {rec.array.shape}, but {ref_where} has shape "
                            f"{ref.array.shape}; the arrays cannot be compared as stored")
        grid = f"{how}, arrays compared as stored (geometry ignored: {why})"
    elif why:
        detail = why if why != "shapes differ" else f"shapes {list(ref.array.shape)} vs {list(rec.array.shape)}"
        if match_grid == "strict":
            raise UserError(f"{rec_where} and {ref_where} are on different voxel grids ({detail})")
        try:
            ref = resample_onto(ref, rec.array.shape, rec.affine, where=ref_where)
        except UserError as exc:
            raise UserError(f"{rec_where} and {ref_where} are on different voxel grids ({detail}) and "
                            f"{exc}") from None
        grid = (f"{how}, resampled onto the reconstruction's grid from the two affines "
                f"({detail}; area means where the reconstruction's voxels are larger)")
    if rec.units != ref.units:
        raise UserError(f"{rec_where} is in {rec.units} but {ref_where} is in {ref.units}; declare the "
                        f"units of the one that records none")
    is_ct = ref.modality == "CT" or ref.units in ("HU", "1/mm")
    try:
        if data_range is not None:
            convention = explicit_convention(data_range, ref.units)
        elif is_ct:
            convention = ct_convention(ref.units, volume_window=ref.window if ref.units == "window01" else None,
                                       window_hu=window)
        else:
            convention = magnitude_convention(ref.array, ref.units)
    except ValueError as exc:
        raise UserError(f"{ref_where}: {exc}; pass a data range") from None
    mask_array = body_mask(ref.array, convention) if mask == "body" else None
    metrics = score(rec.array, ref.array, convention, mask_array)
    return {**metrics, "reference_grid": grid}


def list_priors(extra: Sequence[PathLike] = ()) -> list:
    """The priors on hand: every shipped prior, then the prior folders in ``extra``.

    Returns a list of :class:`medrecon.prior.catalog.PriorInfo`: ``name``, ``modality``
    (``"CT"``, ``"MR"`` or ``"a.u."``), ``units`` (intensity units of the card), ``pixel_spacing_mm``
    (``(lo, hi)`` mm per pixel it was trained on, or None), ``image_size`` and ``any_image_size``
    (fully convolutional priors apply to any slice size), ``parameters``, ``training`` (data in
    short), ``shipped``.
    """
    from medrecon.prior.catalog import list_priors as catalog_list

    return catalog_list([str(p) for p in extra])


__all__ = ["load", "simulate", "reconstruct", "evaluate", "list_priors"]
