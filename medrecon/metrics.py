"""Image quality: PSNR and SSIM over the whole volume and per plane.

Volumes are ``[Z, Y, X]`` (numpy or torch, real or complex; complex inputs are compared as
magnitudes). The data range is always explicit: PSNR = 10 log10(range^2 / MSE).

Per plane, a metric is computed on every 2D slice of that plane and averaged over slices, as the
DiffusionMBIR paper reports it: axial slices are ``vol[z]``, coronal ``vol[:, y]``, sagittal
``vol[:, :, x]``. Slices where the reference is constant (e.g. all air outside the object) are
left out of the plane average: their PSNR says nothing about the object and would inflate it.

The convention (one for every command, script and benchmark; :func:`convention_for`)
---------------------------------------------------------------------------------------
- CT: both volumes mapped through the prior's HU window, or the default window [-1000, 1000] HU
  without a prior, to ``(x - lo) / (hi - lo)`` (not clipped), data range 1: PSNR equals PSNR in HU
  with data range = the window's width (2000 HU), and SSIM is the same whether the volumes are in
  HU, 1/mm or medrecon's working units (SSIM is not shift-invariant, so the window fixes the zero).
- MR (and any other real or complex data): the magnitude normalised by the 99.9th percentile of
  the reference's magnitude, data range 1.
- Optional body mask (:func:`body_mask`): PSNR and SSIM averaged over the voxels inside the
  object only, so that the air around it does not inflate the numbers.
Every metrics JSON states the convention it used (:func:`score` adds it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from skimage.metrics import structural_similarity

from medrecon.volume import DEFAULT_CT_WINDOW, MU_WATER, hu_to_mu, mu_to_hu

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
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")


def _as_mask(mask: Optional[ArrayLike], shape: tuple[int, ...]) -> Optional[np.ndarray]:
    if mask is None:
        return None
    m = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} differs from the volume shape {shape}")
    return m


def psnr(x: ArrayLike, ref: ArrayLike, data_range: float, mask: Optional[ArrayLike] = None) -> float:
    """PSNR in dB of ``x`` against ``ref`` over all voxels, or over the voxels of ``mask``
    (inf when identical; NaN for an empty mask)."""
    a, b = _as_numpy(x), _as_numpy(ref)
    _check_pair(a, b, data_range)
    m = _as_mask(mask, a.shape)
    diff = (a - b) if m is None else (a - b)[m]
    if diff.size == 0:
        return math.nan
    mse = float(np.mean(diff ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(x: ArrayLike, ref: ArrayLike, data_range: float, mask: Optional[ArrayLike] = None) -> float:
    """SSIM (Wang et al. 2004, uniform window of 7 or the largest odd size that fits, scikit-image)
    of ``x`` against ``ref``, any dimension: the mean of the SSIM map over all voxels, or over the
    voxels of ``mask``. Volumes with an axis shorter than 3 voxels are scored as the mean SSIM of
    their 2D slices along that axis; NaN if no axis allows a window or the mask is empty."""
    a, b = _as_numpy(x), _as_numpy(ref)
    _check_pair(a, b, data_range)
    m = _as_mask(mask, a.shape)
    short = [k for k, n in enumerate(a.shape) if n < 3]
    if short:
        if a.ndim <= 2 or len(short) == a.ndim:
            return math.nan
        axis = short[0]
        values = [ssim(np.take(a, i, axis), np.take(b, i, axis), data_range,
                       None if m is None else np.take(m, i, axis)) for i in range(a.shape[axis])]
        if m is not None:  # weight each slice by its masked voxels
            weights = [int(np.take(m, i, axis).sum()) for i in range(a.shape[axis])]
            pairs = [(v, w) for v, w in zip(values, weights) if w > 0 and not math.isnan(v)]
            return float(np.average([v for v, _ in pairs], weights=[w for _, w in pairs])) if pairs else math.nan
        return float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else math.nan
    win = min(7, *[n if n % 2 else n - 1 for n in a.shape])
    if m is None:
        return float(structural_similarity(a, b, data_range=data_range, win_size=win))
    if not m.any():
        return math.nan
    _, smap = structural_similarity(a, b, data_range=data_range, win_size=win, full=True)
    return float(np.mean(smap[m]))


MIN_MASK_FRACTION = 0.01
"""With a mask, a plane's slice counts when the mask covers at least this fraction of it."""


def plane_metrics(x: ArrayLike, ref: ArrayLike, data_range: float, plane: str,
                  mask: Optional[ArrayLike] = None) -> dict[str, float]:
    """PSNR and SSIM averaged over the 2D slices of ``plane`` (axial, coronal or sagittal).
    Without a mask, slices where the reference is constant are left out; with a mask, slices
    where it covers less than :data:`MIN_MASK_FRACTION` are left out and each slice is scored
    inside the mask."""
    if plane not in _AXIS:
        raise ValueError(f"unknown plane {plane!r}; choose from {PLANES}")
    a, b = _as_numpy(x), _as_numpy(ref)
    _check_pair(a, b, data_range)
    if a.ndim != 3:
        raise ValueError(f"per-plane metrics need a [Z, Y, X] volume, got shape {a.shape}")
    m = _as_mask(mask, a.shape)
    a, b = np.moveaxis(a, _AXIS[plane], 0), np.moveaxis(b, _AXIS[plane], 0)
    if m is None:
        keep = [k for k in range(b.shape[0]) if np.ptp(b[k]) > 0]
        if keep:
            a, b = a[keep], b[keep]
        masks: list = [None] * a.shape[0]
    else:
        m = np.moveaxis(m, _AXIS[plane], 0)
        keep = [k for k in range(b.shape[0]) if m[k].mean() >= MIN_MASK_FRACTION and m[k].any()]
        a, b, masks = a[keep], b[keep], list(m[keep])
        if not keep:
            return {"psnr": math.nan, "ssim": math.nan}
    psnrs = [psnr(s, r, data_range, k) for s, r, k in zip(a, b, masks)]
    finite = [p for p in psnrs if math.isfinite(p)]
    mean_psnr = float(np.mean(finite)) if finite else math.inf
    ssims = [v for v in (ssim(s, r, data_range, k) for s, r, k in zip(a, b, masks)) if not math.isnan(v)]
    return {"psnr": mean_psnr, "ssim": float(np.mean(ssims)) if ssims else math.nan}


def volume_metrics(x: ArrayLike, ref: ArrayLike, data_range: float, mask: Optional[ArrayLike] = None) -> dict:
    """Whole-volume and per-plane metrics (inside ``mask`` when given):
    ``{"psnr", "ssim", "data_range", "planes": {"axial": {"psnr", "ssim"}, "coronal": ..., "sagittal": ...}}``."""
    return {
        "psnr": psnr(x, ref, data_range, mask),
        "ssim": ssim(x, ref, data_range, mask),
        "data_range": float(data_range),
        "planes": {p: plane_metrics(x, ref, data_range, p, mask) for p in PLANES},
    }


# --------------------------------------------------------------------------------------------
# The convention: which quantity and data range every medrecon number uses
# --------------------------------------------------------------------------------------------
MR_PERCENTILE = 99.9
BODY_THRESHOLD_HU = -500.0
BODY_THRESHOLD_MR = 0.1   # fraction of the MR data range


@dataclass(frozen=True)
class Convention:
    """How PSNR/SSIM are scored. ``data_range`` and ``window`` are in ``units`` (the volume's).

    kind: "ct-window" (CT values, data range = the HU window's width) or "magnitude" (magnitude,
    data range = the reference's 99.9th percentile of magnitude) or "explicit" (a data range the
    user gave)."""

    kind: str
    data_range: float
    units: str
    window: Optional[tuple[float, float]] = None      # CT: the HU window in the volume's units
    window_hu: Optional[tuple[float, float]] = None   # CT: the same window in HU
    source: str = ""                                   # where the window came from

    def normalise(self, x: ArrayLike) -> np.ndarray:
        """The scored quantity: CT ``(x - lo) / (hi - lo)``; magnitude ``|x| / data_range``;
        explicit: ``x`` as it is (scored with ``data_range``)."""
        a = _as_numpy(x)
        if self.kind == "ct-window":
            return (a - self.window[0]) / self.data_range
        if self.kind == "magnitude":
            return a / self.data_range
        return a

    @property
    def scored_range(self) -> float:
        """The data range of :meth:`normalise`'s output."""
        return self.data_range if self.kind == "explicit" else 1.0

    def describe(self) -> str:
        if self.kind == "ct-window":
            return (f"CT: {self.units} values mapped through the HU window [{self.window_hu[0]:g}, "
                    f"{self.window_hu[1]:g}] ({self.source}) to [0, 1], not clipped; data range 1 = "
                    f"{self.data_range:g} {self.units}")
        if self.kind == "magnitude":
            return (f"magnitude normalised by the reference's {MR_PERCENTILE:g}th percentile "
                    f"({self.data_range:.6g} {self.units}); data range 1")
        return f"{self.units} values, data range {self.data_range:g} {self.units} ({self.source or 'given explicitly'})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["description"] = self.describe()
        return d


def hu_window_in_units(window_hu: Sequence[float], units: str,
                       volume_window: Optional[Sequence[float]] = None) -> tuple[float, float]:
    """An HU window expressed in a CT volume's units: HU; 1/mm (``mu = mu_water (1 + HU/1000)``);
    window01 (the volume's own HU window ``volume_window`` mapped to [0, 1]); a.u. (medrecon's
    CT working units: [-1000, 1000] HU mapped to [0, 1])."""
    lo, hi = (float(v) for v in window_hu)
    if units == "HU":
        return lo, hi
    if units == "1/mm":
        return float(hu_to_mu(lo, MU_WATER)), float(hu_to_mu(hi, MU_WATER))
    base = tuple(volume_window) if units == "window01" and volume_window else DEFAULT_CT_WINDOW
    width = float(base[1]) - float(base[0])
    return (lo - float(base[0])) / width, (hi - float(base[0])) / width


def prior_hu_window(card: Optional[Mapping[str, Any]]) -> Optional[tuple[float, float]]:
    """The HU window of a CT prior's model card (units "HU" or "1/mm"), else None."""
    intensity = (card or {}).get("intensity") or {}
    window, units = intensity.get("window"), intensity.get("units")
    if not window or intensity.get("convention", "window01") != "window01":
        return None
    if units == "HU":
        return float(window[0]), float(window[1])
    if units == "1/mm":
        return float(mu_to_hu(float(window[0]))), float(mu_to_hu(float(window[1])))
    return None


def ct_convention(units: str, prior_card: Optional[Mapping[str, Any]] = None,
                  volume_window: Optional[Sequence[float]] = None,
                  window_hu: Optional[Sequence[float]] = None) -> Convention:
    """The CT convention for a volume in ``units``: the HU window ``window_hu`` if given, else the
    prior's HU window, else [-1000, 1000] HU."""
    if window_hu is not None:
        window_hu, source = (float(window_hu[0]), float(window_hu[1])), "given window"
        if not window_hu[1] > window_hu[0]:
            raise ValueError(f"the HU window must have lo < hi, got {list(window_hu)}")
    else:
        window_hu = prior_hu_window(prior_card)
        source = f"prior {prior_card.get('name', '?')}" if window_hu else "default window"
        window_hu = window_hu or DEFAULT_CT_WINDOW
    window = hu_window_in_units(window_hu, units, volume_window)
    return Convention("ct-window", window[1] - window[0], units, window, tuple(window_hu), source)


def magnitude_convention(reference: ArrayLike, units: str) -> Convention:
    """The MR convention: data range = the 99.9th percentile of ``|reference|``."""
    ref = _as_numpy(reference)
    value = float(np.percentile(np.abs(ref), MR_PERCENTILE)) if ref.size else 0.0
    if not value > 0:
        value = float(np.max(np.abs(ref))) if ref.size else 0.0
    if not value > 0:
        raise ValueError("the reference is zero everywhere: no data range for PSNR/SSIM")
    return Convention("magnitude", value, units, source=f"p{MR_PERCENTILE:g} of |reference|")


def explicit_convention(data_range: float, units: str) -> Convention:
    if not data_range > 0:
        raise ValueError(f"data range must be positive, got {data_range}")
    return Convention("explicit", float(data_range), units, source="--data-range")


def convention_for(reference: ArrayLike, is_ct: bool, units: str, prior_card: Optional[Mapping[str, Any]] = None,
                   volume_window: Optional[Sequence[float]] = None) -> Convention:
    """The convention of the module docstring for a reference volume: CT when ``is_ct`` (a CT
    task, or a volume of modality CT or in HU / 1/mm), else magnitude."""
    if is_ct:
        return ct_convention(units, prior_card, volume_window)
    return magnitude_convention(reference, units)


def measurement_convention(m: Any, reference: ArrayLike, prior_card: Optional[Mapping[str, Any]] = None) -> Convention:
    """The convention for the reference of a measurement ``m`` (a :class:`medrecon.io.Measurement`
    or anything with ``task`` and ``attrs``): CT for the CT tasks, in the units of the volume it
    was simulated from; magnitude for CS-MRI."""
    volume = (getattr(m, "attrs", None) or {}).get("volume", {})
    units = volume.get("units", "a.u.")
    window = volume.get("window") if units == "window01" else None
    return convention_for(reference, m.task != "cs-mri", units, prior_card, window)


def body_mask(reference: ArrayLike, convention: Convention) -> np.ndarray:
    """The object inside the air: the reference above -500 HU (CT) or above 10 % of the data
    range (magnitude), holes filled slice by slice (lungs, ventricles), largest 3D component."""
    from scipy import ndimage

    ref = _as_numpy(reference)
    if convention.kind == "ct-window" and convention.window_hu is not None:
        lo_hu, hi_hu = convention.window_hu
        lo, hi = convention.window
        if convention.units == "1/mm":
            threshold = float(hu_to_mu(BODY_THRESHOLD_HU, MU_WATER))
        else:  # an affine map of HU (HU itself, a.u., window01)
            threshold = lo + (BODY_THRESHOLD_HU - lo_hu) * (hi - lo) / (hi_hu - lo_hu)
    else:
        threshold = BODY_THRESHOLD_MR * convention.data_range
    inside = ref > threshold
    if ref.ndim == 3:
        inside = np.stack([ndimage.binary_fill_holes(s) for s in inside])
    labels, n = ndimage.label(inside)
    if n > 1:
        sizes = ndimage.sum_labels(inside, labels, index=np.arange(1, n + 1))
        inside = labels == (1 + int(np.argmax(sizes)))
    return inside


def score(x: ArrayLike, ref: ArrayLike, convention: Convention, mask: Optional[ArrayLike] = None) -> dict:
    """:func:`volume_metrics` under ``convention`` (inside ``mask`` when given), with the
    convention and the mask stated: the block every metrics JSON carries."""
    result = volume_metrics(convention.normalise(x), convention.normalise(ref), convention.scored_range, mask)
    result["data_range"] = convention.data_range  # in the volumes' units
    result["convention"] = convention.to_dict()
    if mask is not None:
        m = np.asarray(mask, bool)
        result["mask"] = {"kind": "body", "voxels": int(m.sum()), "fraction": float(m.mean())}
    else:
        result["mask"] = None
    return result


def format_table(rows: dict[str, dict]) -> str:
    """A plain-text table of ``volume_metrics`` results keyed by method name."""
    head = f"{'method':<16} {'PSNR':>7} {'SSIM':>6}" + "".join(
        f" {p[:3] + ' PSNR':>9} {p[:3] + ' SSIM':>9}" for p in PLANES)
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        line = f"{name:<16} {m['psnr']:7.2f} {m['ssim']:6.3f}"
        line += "".join(f" {m['planes'][p]['psnr']:9.2f} {m['planes'][p]['ssim']:9.3f}" for p in PLANES)
        lines.append(line)
    return "\n".join(lines)
