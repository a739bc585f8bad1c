"""Tri-planar comparison figures a reader can take in from the picture alone.

One column per volume (the reference, then each reconstruction); rows: the axial, coronal and
sagittal centre slices (or chosen slices), then the signed error ``recon - reference`` of each.

- CT is shown through a window in the volume's own units (HU for DICOM): the prior's (or the
  default [-1000, 1000] HU), soft tissue (W 400 / L 40), lung (W 1500 / L -600) or bone
  (W 1800 / L 400); values are never folded by ``abs``. Other real data are shown as they are
  (grey scale from the reference's minimum to its maximum); complex MR images as magnitudes.
- Error maps show the difference of the displayed quantity (HU, or magnitude) on one symmetric
  scale for every panel, stated on the colour bar (the 99th percentile of ``|error|`` over the
  shown slices, rounded up to 1, 2 or 5 times a power of ten).
- Panels keep their physical aspect (voxel spacing): row heights and column widths are in mm, so
  a 24-slice slab is as wide as its axial slice and as tall as it is thick. A slab thinner than
  a quarter of its width is stretched along z by an integer factor, stated on every such panel.
- With the volumes' affine, panels are in the radiological orientation (anterior up, the
  patient's left on the right of the image, the head up).
- Every panel names its plane and slice index; every reconstruction panel states the PSNR/SSIM of
  that slice under the metrics convention (:mod:`medrecon.metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from medrecon.io.atomic import atomic_path

CT_WINDOWS_HU = {
    "soft-tissue": (-160.0, 240.0),   # W 400, L 40
    "lung": (-1350.0, 150.0),         # W 1500, L -600
    "bone": (-500.0, 1300.0),         # W 1800, L 400
}
WINDOW_CHOICES = ("prior", *CT_WINDOWS_HU)
PLANES = ("axial", "coronal", "sagittal")
MIN_ASPECT = 0.25
"""Coronal and sagittal panels thinner than this (height / width) are stretched along z (stated)."""


@dataclass(frozen=True)
class Display:
    """How volumes are shown: grey levels from ``lo`` to ``hi`` in ``units``; ``magnitude``:
    complex values are shown as ``|x|`` (MR), otherwise values are shown as they are."""

    lo: float
    hi: float
    units: str
    label: str
    magnitude: bool = False

    def prepare(self, array: Any) -> np.ndarray:
        """The displayed quantity of ``array``: its values, or its magnitude if complex (MR)."""
        a = np.asarray(array)
        if np.iscomplexobj(a):
            if not self.magnitude:
                raise ValueError("a complex volume needs a magnitude display (MR)")
            a = np.abs(a)
        return a.astype(np.float32, copy=False)


def ct_display(units: str, window: str | Sequence[float] = "prior", prior_card: Optional[Mapping] = None,
               volume_window: Optional[Sequence[float]] = None) -> Display:
    """A CT window: a name from :data:`WINDOW_CHOICES` ("prior": the prior's HU window, else
    [-1000, 1000] HU) or an HU pair ``(lo, hi)``; mapped into the volume's ``units``."""
    from medrecon.metrics import hu_window_in_units, prior_hu_window
    from medrecon.volume import DEFAULT_CT_WINDOW

    if isinstance(window, str):
        if window == "prior":
            hu = prior_hu_window(prior_card)
            name = f"prior {prior_card.get('name')}" if hu else "default"
            hu = hu or DEFAULT_CT_WINDOW
        elif window in CT_WINDOWS_HU:
            hu, name = CT_WINDOWS_HU[window], window
        else:
            raise ValueError(f"unknown CT window {window!r}; choose from {', '.join(WINDOW_CHOICES)}")
    else:
        hu, name = (float(window[0]), float(window[1])), "given"
    lo, hi = hu_window_in_units(hu, units, volume_window)
    label = f"HU window [{hu[0]:g}, {hu[1]:g}] ({name})"
    if units != "HU":
        label += f" = [{lo:.4g}, {hi:.4g}] {units}"
    return Display(lo, hi, units, label)


def data_display(reference: Any, units: str, quantity: str = "values") -> Display:
    """Non-CT data: magnitude for complex volumes, values as they are otherwise; grey scale from
    the reference's minimum to its maximum. ``quantity`` names what is shown."""
    ref = np.asarray(reference)
    mag = np.abs(ref) if np.iscomplexobj(ref) else ref
    lo, hi = float(np.min(mag)), float(np.max(mag))
    if not hi > lo:
        hi = lo + 1.0
    kind = "magnitude" if np.iscomplexobj(ref) else quantity
    return Display(lo, hi, units, f"{kind} [{lo:.4g}, {hi:.4g}] {units}", magnitude=True)


def display_for(reference: Any, is_ct: bool, units: str, window: str | Sequence[float] = "prior",
                prior_card: Optional[Mapping] = None, volume_window: Optional[Sequence[float]] = None) -> Display:
    """:func:`ct_display` for CT, :func:`data_display` otherwise."""
    if is_ct:
        return ct_display(units, window, prior_card, volume_window)
    return data_display(reference, units)


def measurement_display(m: Any, reference: Any, window: str | Sequence[float] = "prior",
                        prior_card: Optional[Mapping] = None) -> Display:
    """The display for volumes of a measurement ``m`` (in the units of the volume it was
    simulated from): a CT window for the CT tasks, the MR magnitude for CS-MRI."""
    volume = (getattr(m, "attrs", None) or {}).get("volume", {})
    units = volume.get("units", "a.u.")
    if m.task != "cs-mri":
        return ct_display(units, window, prior_card, volume.get("window") if units == "window01" else None)
    return data_display(reference, units, quantity="magnitude")


def nice_ceil(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is >= ``value`` (> 0)."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 5.0, 10.0):
        if step * power >= value * (1 - 1e-4):  # float32 round-off
            return step * power
    return 10.0 * power


def _cut(vol: np.ndarray, plane: str, index: int) -> np.ndarray:
    return {"axial": lambda: vol[index], "coronal": lambda: vol[:, index],
            "sagittal": lambda: vol[:, :, index]}[plane]()


def _extent_mm(shape: Sequence[int], spacing: Sequence[float], plane: str) -> tuple[float, float]:
    """(width, height) in mm of a plane's slice."""
    z, y, x = shape
    dz, dy, dx = spacing
    return {"axial": (x * dx, y * dy), "coronal": (x * dx, z * dz), "sagittal": (y * dy, z * dz)}[plane]


def comparison_figure(reference: Any, recons: Mapping[str, Any], display: Display,
                      spacing: Sequence[float] = (1.0, 1.0, 1.0), convention: Any = None,
                      mask: Optional[np.ndarray] = None, slices: Optional[Sequence[int]] = None,
                      affine: Optional[np.ndarray] = None, title: str = "", column_inches: float = 3.4,
                      min_aspect: float = MIN_ASPECT):
    """The figure of the module docstring (a matplotlib Figure; nothing is written).

    reference: ``[Z, Y, X]`` (None: no error maps, no metrics); recons: name -> ``[Z, Y, X]``;
    spacing: ``(dz, dy, dx)`` mm; convention: a :class:`medrecon.metrics.Convention` for the
    per-slice PSNR/SSIM (None: not stated); mask: the metrics' body mask; slices: ``(z, y, x)``
    indices (default: centres); affine: the volumes' affine (index -> LPS); when given, the
    volumes are shown in the radiological orientation (:func:`medrecon.volume.reslice_axial`:
    anterior up, patient left on the right, head up) and ``spacing`` is taken from it.
    min_aspect: a slab thinner than this fraction of its width is stretched along z by the
    smallest integer factor that reaches it, and every such panel says so ("z x4").
    """
    from matplotlib import colors
    from matplotlib.figure import Figure

    from medrecon.metrics import psnr, ssim

    vols = {name: display.prepare(v) for name, v in recons.items()}
    ref = display.prepare(reference) if reference is not None else None
    if affine is not None:
        ref, vols, mask, spacing = _radiological(ref, vols, mask, affine)
    first = ref if ref is not None else next(iter(vols.values()), None)
    if first is None or first.ndim != 3:
        raise ValueError("need a [Z, Y, X] reference or reconstruction to show")
    for name, v in vols.items():
        if v.shape != first.shape:
            raise ValueError(f"{name}: shape {v.shape} differs from {first.shape}")
    shape = first.shape
    idx = list(slices) if slices is not None else [n // 2 for n in shape]
    index_of = dict(zip(PLANES, idx))
    axis_name = {"axial": "z", "coronal": "y", "sagittal": "x"}
    extents = {p: _extent_mm(shape, spacing, p) for p in PLANES}
    col_mm = max(extents["axial"][0], extents["sagittal"][0])
    thinnest = min(extents[p][1] / extents[p][0] for p in ("coronal", "sagittal"))
    stretch = 1 if thinnest >= min_aspect else int(math.ceil(min_aspect / thinnest))
    heights = [extents["axial"][1]] + [stretch * extents[p][1] for p in ("coronal", "sagittal")]
    errors = {} if ref is None else {
        name: {p: _cut(v, p, index_of[p]) - _cut(ref, p, index_of[p]) for p in PLANES} for name, v in vols.items()}
    shown = [e for per in errors.values() for e in per.values()]
    err_scale = nice_ceil(float(np.percentile(np.abs(np.concatenate([e.ravel() for e in shown])), 99))
                          if shown else 1.0)

    columns = ([("reference", ref)] if ref is not None else []) + list(vols.items())
    n_cols = len(columns)
    rows = PLANES + (PLANES if errors else ())
    row_mm = heights + (heights if errors else [])
    inch_per_mm = column_inches / col_mm
    title_pad = 0.55  # inches per row for the panel titles
    fig_h = inch_per_mm * sum(row_mm) + title_pad * len(rows) + (0.5 if title else 0.2)
    fig_w = column_inches * n_cols + 1.3
    fig = Figure(figsize=(fig_w, fig_h), layout="constrained")  # no pyplot: no backend, no global state
    gs = fig.add_gridspec(len(rows), n_cols + 1, height_ratios=row_mm,
                          width_ratios=[col_mm] * n_cols + [0.07 * col_mm])
    grey = dict(cmap="gray", vmin=display.lo, vmax=display.hi, interpolation="nearest")
    diverging = dict(cmap="RdBu_r", norm=colors.Normalize(-err_scale, err_scale), interpolation="nearest")
    origin = {"axial": "upper", "coronal": "lower", "sagittal": "lower"}  # z towards the head: up
    dz, dy, dx = spacing
    aspect = {"axial": dy / dx, "coronal": stretch * dz / dx, "sagittal": stretch * dz / dy}
    n_slices = {"axial": shape[0], "coronal": shape[1], "sagittal": shape[2]}

    def where(plane: str) -> str:
        text = f"{plane} {axis_name[plane]}={index_of[plane]}/{n_slices[plane]}"
        return text + (f" (z x{stretch})" if stretch > 1 and plane != "axial" else "")

    def slice_metrics(a: np.ndarray, b: np.ndarray, plane: str) -> str:
        if convention is None:
            return ""
        m = None if mask is None else _cut(np.asarray(mask, bool), plane, index_of[plane])
        a, b = convention.normalise(a), convention.normalise(b)
        p = psnr(a, b, convention.scored_range, m)
        s = ssim(a, b, convention.scored_range, m)
        return f"\nPSNR {p:.2f} dB, SSIM {s:.3f}"

    image = None
    for c, (name, vol) in enumerate(columns):
        for r, plane in enumerate(PLANES):
            ax = fig.add_subplot(gs[r, c])
            img = _cut(vol, plane, index_of[plane])
            image = ax.imshow(img, origin=origin[plane], aspect=aspect[plane], **grey)
            ax.set_label(f"{name}/{plane}")
            text = f"{name}: {where(plane)}"
            if ref is not None and name != "reference":
                text += slice_metrics(img, _cut(ref, plane, index_of[plane]), plane)
            ax.set_title(text, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "reference":  # where the other two planes cut this one
                _mark_cuts(ax, plane, index_of)
    if image is not None:
        bar = fig.colorbar(image, cax=fig.add_subplot(gs[0:3, n_cols]))
        bar.set_label(display.label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    err_image = None
    for c, name in enumerate(errors, start=1):
        for r, plane in enumerate(PLANES, start=3):
            ax = fig.add_subplot(gs[r, c])
            err_image = ax.imshow(errors[name][plane], origin=origin[plane], aspect=aspect[plane], **diverging)
            ax.set_label(f"{name}-error/{plane}")
            ax.set_title(f"{name} - reference: {where(plane)}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    if err_image is not None:
        bar = fig.colorbar(err_image, cax=fig.add_subplot(gs[3:6, n_cols]))
        bar.set_label(f"recon - reference ({display.units}), scale +-{err_scale:g}", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        note = fig.add_subplot(gs[3:6, 0])
        note.axis("off")
        lines = ["Error maps: recon - reference", f"of the displayed {display.units} values;",
                 f"colour scale +-{err_scale:g} {display.units}", "(99th percentile of |error|,",
                 "rounded up). Red: too bright,", "blue: too dark.", ""]
        if convention is not None:
            lines += ["PSNR/SSIM of each shown slice:", *_wrap(convention.describe(), 34)]
            if mask is not None:
                lines.append("inside the body mask")
        note.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace",
                  transform=note.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _radiological(ref: Optional[np.ndarray], vols: dict, mask: Optional[np.ndarray], affine: np.ndarray):
    """Reorder (permutations and flips only) every volume so that z runs to the head, y to the
    back and x to the patient's left; returns the arrays, the mask and the new spacing."""
    from medrecon.volume import Volume, reslice_axial

    affine = np.asarray(affine, float)
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    turned: dict = {}

    def turn(a: np.ndarray) -> np.ndarray:
        volume = reslice_axial(Volume(array=np.asarray(a, np.float32), spacing=spacing, affine=affine))
        turned["spacing"] = volume.spacing
        return volume.array

    ref = None if ref is None else turn(ref)
    vols = {k: turn(v) for k, v in vols.items()}
    mask = None if mask is None else turn(np.asarray(mask, np.float32)) > 0.5
    return ref, vols, mask, turned.get("spacing", spacing)


def _mark_cuts(ax: Any, plane: str, index_of: Mapping[str, int]) -> None:
    """Dashed lines on a reference panel where the other two planes cut it."""
    style = dict(color="yellow", lw=0.6, ls="--", alpha=0.7)
    if plane == "axial":
        ax.axhline(index_of["coronal"], **style)
        ax.axvline(index_of["sagittal"], **style)
    elif plane == "coronal":
        ax.axhline(index_of["axial"], **style)
        ax.axvline(index_of["sagittal"], **style)
    else:
        ax.axhline(index_of["axial"], **style)
        ax.axvline(index_of["coronal"], **style)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap
    return textwrap.wrap(text, width)


def triplanar_figure(reference: Any, recons: Mapping[str, Any], path: str | Path, display: Display,
                     spacing: Sequence[float] = (1.0, 1.0, 1.0), convention: Any = None,
                     mask: Optional[np.ndarray] = None, overwrite: bool = False, dpi: int = 110,
                     **kwargs: Any) -> Path:
    """Write :func:`comparison_figure` as a PNG, atomically (refuses an existing file unless
    ``overwrite``)."""
    fig = comparison_figure(reference, recons, display, spacing, convention, mask, **kwargs)
    with atomic_path(path, overwrite=overwrite, what="figure") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)


__all__ = ["Display", "ct_display", "data_display", "display_for", "comparison_figure", "triplanar_figure",
           "CT_WINDOWS_HU", "WINDOW_CHOICES", "nice_ceil"]
