"""What a sampler is handed: the measurement checked against the operator and the prior, the
whole volume's shape (also when it holds one z-slab of a distributed run), and the data residual."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from medrecon.distributed.reduce import volume_norm
from medrecon.errors import UserError
from medrecon.physics.operator import LinearOperator, OperatorShapeError
from medrecon.prior.denoiser import Denoiser

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab


def check_problem(op: LinearOperator, y: torch.Tensor, denoiser: Denoiser) -> int:
    """Validate ``y`` against ``op`` and the prior's image size; return the number of slices."""
    if not isinstance(y, torch.Tensor):
        raise UserError(f"measurement must be a torch tensor, got {type(y).__name__}")
    try:
        with torch.no_grad():
            op.adjoint(y)
    except OperatorShapeError as exc:
        raise UserError(f"measurement does not fit the operator: {exc}") from None
    image = tuple(int(s) for s in op.in_shape[1:])
    size = int(getattr(denoiser, "image_size", 0) or 0)
    fixed = bool(getattr(denoiser, "fixed_size", True))
    if fixed and size and (len(image) != 2 or image != (size, size)):
        raise UserError(f"the prior was trained on {size}x{size} slices but the operator's "
                        f"slices are {'x'.join(map(str, image))}; resample the volume or choose "
                        "a prior of that size")
    return int(y.shape[0])


def volume_shape(y: torch.Tensor, slab: Optional["Slab"] = None) -> list[int]:
    """The whole volume's data shape: ``y``'s, with every slice counted when ``y`` is one slab
    of a distributed run (checked against the slab)."""
    shape = [int(s) for s in y.shape]
    if slab is not None and slab.distributed:
        if shape[0] != slab.count:
            raise UserError(f"the data hold {shape[0]} slices but {slab} expects {slab.count}")
        shape[0] = slab.n
    return shape


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for complex64, float64 for complex128, else ``dtype``."""
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def global_norm(t: torch.Tensor, slab: Optional["Slab"] = None) -> float:
    """``||t||`` of the whole volume (an ordered reduction over a distributed ``slab``)."""
    return volume_norm(t, slab)


@torch.no_grad()
def data_residual(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, y_norm: float,
                  slab: Optional["Slab"] = None) -> float:
    """Relative data residual ``||A x - y|| / ||y||`` (of the whole volume)."""
    return global_norm(op.forward(x) - y, slab) / max(y_norm, 1e-30)
