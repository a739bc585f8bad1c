"""One linear-operator contract for all of medrecon's physics.

Every operator maps torch tensors to torch tensors and is batched over slices: an image
stack has shape ``(Z, *image_shape)`` (``(Z, Y, X)`` for 2D slices) and the measurement has
shape ``(Z, *data_shape)``. ``Z`` may be fixed by the operator (when it holds per-slice data,
such as coil maps) or free (``in_shape[0] is None``), in which case any number of slices is
accepted. :meth:`LinearOperator.subset` restricts an operator to a range of slices, which is
how samplers process a volume in memory-sized chunks.

``forward`` is differentiable: the backward pass of ``forward`` is ``adjoint`` (and vice
versa), so operators can be used inside autograd.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from medrecon.distributed.reduce import volume_norm

if TYPE_CHECKING:
    from medrecon.distributed.slab import Slab

Shape = tuple[Optional[int], ...]


class OperatorShapeError(ValueError):
    """An input does not have the shape, dtype or device an operator expects."""


class _Apply(torch.autograd.Function):
    """Applies ``op._forward`` (or ``op._adjoint``); the backward pass is the other one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, op: "LinearOperator", adjoint: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.op, ctx.adjoint = op, adjoint
        with torch.no_grad():
            return op._adjoint(x) if adjoint else op._forward(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        op: LinearOperator = ctx.op
        out = op.adjoint(grad) if not ctx.adjoint else op.forward(grad)
        return out, None, None


def _check(t: torch.Tensor, shape: Shape, dtype: torch.dtype, device: torch.device, what: str,
           name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise OperatorShapeError(f"{name}: {what} must be a torch.Tensor, got {type(t).__name__}")
    expected = tuple(t.shape[0] if s is None else s for s in shape)
    if t.dim() != len(shape) or tuple(t.shape) != expected:
        shown = tuple("Z" if s is None else s for s in shape)
        raise OperatorShapeError(f"{name}: {what} has shape {tuple(t.shape)}, expected {shown}")
    if t.dtype != dtype:
        raise OperatorShapeError(f"{name}: {what} has dtype {t.dtype}, expected {dtype}")
    if t.device.type != device.type or (device.index is not None and t.device != device):
        raise OperatorShapeError(f"{name}: {what} is on {t.device}, operator is on {device}")


class LinearOperator(ABC):
    """A linear map ``A`` from images ``in_shape`` to data ``out_shape``.

    Subclasses implement ``_forward`` and ``_adjoint`` (exact adjoint with respect to the
    real inner product ``Re <a, b>`` summed over all entries) and call ``super().__init__``.
    """

    def __init__(self, in_shape: Sequence[Optional[int]], out_shape: Sequence[Optional[int]],
                 in_dtype: torch.dtype = torch.float32, out_dtype: Optional[torch.dtype] = None,
                 device: torch.device | str = "cpu") -> None:
        self.in_shape: Shape = tuple(in_shape)
        self.out_shape: Shape = tuple(out_shape)
        if (self.in_shape[0] is None) != (self.out_shape[0] is None):
            raise ValueError("in_shape and out_shape must both fix or both free the slice axis")
        self.in_dtype = in_dtype
        self.out_dtype = out_dtype if out_dtype is not None else in_dtype
        self.device = torch.device(device)

    # -- to implement ---------------------------------------------------------------------
    @abstractmethod
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` of shape ``(Z, *in_shape[1:])``."""

    @abstractmethod
    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^H y`` for ``y`` of shape ``(Z, *out_shape[1:])``."""

    def _subset(self, sl: slice) -> "LinearOperator":
        """The operator restricted to slices ``sl``; override when holding per-slice data."""
        return self

    # -- public API -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``y = A x``: image stack ``(Z, *in_shape[1:])`` to data ``(Z, *out_shape[1:])``."""
        _check(x, self.in_shape, self.in_dtype, self.device, "input image", self.name)
        return _Apply.apply(x, self, False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^H y``: data ``(Z, *out_shape[1:])`` to image stack ``(Z, *in_shape[1:])``."""
        _check(y, self.out_shape, self.out_dtype, self.device, "input data", self.name)
        return _Apply.apply(y, self, True)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``."""
        return self.adjoint(self.forward(x))

    __call__ = forward

    @property
    def H(self) -> "LinearOperator":
        """The adjoint operator ``A^H`` as an operator."""
        return AdjointOperator(self)

    def subset(self, sl: slice) -> "LinearOperator":
        """The operator acting on slices ``sl`` of the volume only (for chunked processing)."""
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise ValueError(f"{self.name}.subset expects a contiguous slice, got {sl!r}")
        return self._subset(sl)

    def example_input(self, n_slices: int = 3, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A random input of the right shape, dtype and device (for tests and norm estimates)."""
        return _random(self.in_shape, self.in_dtype, self.device, n_slices, generator)

    def example_output(self, n_slices: int = 3, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A random data tensor of the right shape, dtype and device."""
        return _random(self.out_shape, self.out_dtype, self.device, n_slices, generator)

    def __repr__(self) -> str:
        return (f"{self.name}(in={self.in_shape} {self.in_dtype}, out={self.out_shape} "
                f"{self.out_dtype}, device={self.device})")


class AdjointOperator(LinearOperator):
    """``A^H`` of an operator ``A``, itself an operator."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(op.out_shape, op.in_shape, op.out_dtype, op.in_dtype, op.device)
        self.op = op

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op._adjoint(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op._forward(y)

    def _subset(self, sl: slice) -> LinearOperator:
        return AdjointOperator(self.op.subset(sl))

    @property
    def H(self) -> LinearOperator:
        return self.op


def _random(shape: Shape, dtype: torch.dtype, device: torch.device, n_slices: int,
            generator: Optional[torch.Generator]) -> torch.Tensor:
    concrete = tuple(n_slices if s is None else s for s in shape)
    return torch.randn(concrete, dtype=dtype, generator=generator).to(device)


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real inner product ``Re <a, b> = Re sum(conj(a) * b)`` (a scalar tensor)."""
    return torch.vdot(a.reshape(-1), b.reshape(-1)).real if a.is_complex() else (a * b).sum()


@torch.no_grad()
def operator_norm(op: LinearOperator, n_slices: int = 1, iterations: int = 30, seed: int = 0,
                  slab: Optional["Slab"] = None) -> float:
    """Largest singular value of ``op`` (per slice) by power iteration on ``A^H A``.

    An operator with a fixed number of slices is iterated on its whole volume. When that volume
    is shared out over processes (``slab``, ``op`` holding this rank's slices), every rank draws
    the whole volume's start vector and keeps its rows, and the norms are ordered reductions
    (:mod:`medrecon.distributed.reduce`), so the iteration is the single-process one, bit for
    bit. A slice-independent operator needs no communication.
    """
    gen = torch.Generator().manual_seed(seed)
    if slab is None or not slab.distributed or op.in_shape[0] is None:
        x = op.example_input(n_slices, gen)
        slab = None
    else:
        full = _random((slab.n, *op.in_shape[1:]), op.in_dtype, torch.device("cpu"), slab.n, gen)
        x = slab.take(full).clone().to(op.device)
        del full
    x = x / volume_norm(x, slab)
    value = 0.0
    for _ in range(iterations):
        y = op.normal(x)
        value = volume_norm(y, slab)
        if value == 0.0:
            return 0.0
        x = y / value
    return value ** 0.5
