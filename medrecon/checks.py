"""Checks every entry point applies to what it reads: finite values, memory that fits.

``require_finite`` is the one test for NaN / Inf in volumes, measurements, k-space, coil maps,
prior weights and training slices; its :class:`~medrecon.errors.DataError` names the thing, how
many values are bad and where the first one is. ``require_memory`` refuses an allocation that
cannot fit before it is attempted (a corrupt header asking for 100000 x 100000 pixels must not
take the machine down).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import numpy as np

from medrecon.errors import DataError


def count_nonfinite(array: Any) -> tuple[int, int, Optional[tuple[int, ...]]]:
    """``(NaN count, Inf count, index of the first non-finite value or None)`` of a NumPy array
    or a torch tensor (any device; complex values count when either part is non-finite)."""
    if hasattr(array, "detach"):  # torch tensor: checked where it lives, no copy to the host
        import torch

        t = array.detach()
        if not (t.is_floating_point() or t.is_complex()):
            return 0, 0, None
        finite = torch.isfinite(t)
        if bool(finite.all()):
            return 0, 0, None
        nan = int(torch.isnan(t).sum())
        first = tuple(int(i) for i in torch.nonzero(~finite)[0].tolist())
        return nan, int((~finite).sum()) - nan, first
    a = np.asarray(array)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)):
        return 0, 0, None
    finite = np.isfinite(a)
    if finite.all():
        return 0, 0, None
    nan = int(np.isnan(a).sum())
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    return nan, int((~finite).sum()) - nan, first


def require_finite(array: Any, what: str, remedy: str = "") -> None:
    """Raise :class:`DataError` when ``array`` (NumPy or torch, real or complex) holds NaN or
    Inf. ``what`` names it, e.g. ``"/data/scan.nii.gz: voxel data"``."""
    nan, inf, first = count_nonfinite(array)
    if first is None:
        return
    kinds = ", ".join(k for k, n in (("NaN", nan), ("Inf", inf)) if n)
    size = int(np.prod(np.shape(array))) or 1
    raise DataError(f"{what} holds {nan + inf} non-finite value(s) ({kinds}; "
                    f"{100.0 * (nan + inf) / size:.3g} % of {size}), the first at index "
                    f"{list(first)}" + (f"; {remedy}" if remedy else ""))


def require_finite_tensors(tensors: Iterable[tuple[str, Any]], what: str) -> None:
    """:func:`require_finite` over named tensors (e.g. a state dict); names the first bad one."""
    for name, tensor in tensors:
        nan, inf, first = count_nonfinite(tensor)
        if first is not None:
            raise DataError(f"{what}: tensor {name} holds {nan + inf} non-finite value(s) "
                            f"(NaN {nan}, Inf {inf}); the weights are unusable (a diverged or "
                            f"damaged training run?)")


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TiB"


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else the
    physical memory), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def require_memory(nbytes: float, what: str, fraction: float = 0.9) -> None:
    """Refuse (:class:`DataError`) work that needs about ``nbytes`` of memory when more than
    ``fraction`` of the available memory; ``what`` says what would be allocated and why."""
    avail = available_memory()
    if avail is not None and nbytes > fraction * avail:
        raise DataError(f"{what} needs about {format_bytes(nbytes)} of memory, but only "
                        f"{format_bytes(avail)} is available; refusing before allocating")


__all__ = ["count_nonfinite", "require_finite", "require_finite_tensors", "require_memory",
           "available_memory", "format_bytes"]
