"""Tri-planar comparison figures: one row per volume (axial, coronal, sagittal centre slices)
and, when a reference is given, one error-map row per reconstruction."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from medrecon.io.atomic import atomic_path


def _centre_slices(vol: np.ndarray) -> list[np.ndarray]:
    z, y, x = vol.shape
    return [vol[z // 2], vol[:, y // 2], vol[:, :, x // 2]]


def triplanar_figure(volumes: Mapping[str, np.ndarray], path: str | Path, reference: Optional[np.ndarray] = None,
                     data_range: Optional[float] = None, overwrite: bool = False,
                     spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Path:
    """Write a PNG comparing ``volumes`` (name -> [Z, Y, X]) in the three planes.

    Grey levels span the reference's range (or the first volume's); error maps show
    ``|recon - reference|`` on ``[0, data_range / 5]``. ``spacing`` (dz, dy, dx) mm sets the aspect.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(volumes)
    first = np.abs(np.asarray(volumes[names[0]]))
    ref = None if reference is None else np.abs(np.asarray(reference))
    lo, hi = (float(ref.min()), float(ref.max())) if ref is not None else (float(first.min()), float(first.max()))
    err_names = [n for n in names if ref is not None and volumes[n] is not reference and n != "reference"]
    rows = len(names) + len(err_names)
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
    dz, dy, dx = spacing
    aspects = [dy / dx, dz / dx, dz / dy]
    for r, name in enumerate(names):
        for c, (img, aspect) in enumerate(zip(_centre_slices(np.abs(np.asarray(volumes[name]))), aspects)):
            axes[r, c].imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
            axes[r, c].set_title(f"{name} {('axial', 'coronal', 'sagittal')[c]}", fontsize=9)
    vmax = (data_range or (hi - lo) or 1.0) / 5
    for r, name in enumerate(err_names, start=len(names)):
        err = np.abs(np.abs(np.asarray(volumes[name])) - ref)
        for c, (img, aspect) in enumerate(zip(_centre_slices(err), aspects)):
            axes[r, c].imshow(img, cmap="magma", vmin=0, vmax=vmax, aspect=aspect)
            axes[r, c].set_title(f"|{name} - ref| {('axial', 'coronal', 'sagittal')[c]}", fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path, overwrite=overwrite, what="figure") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(path)
