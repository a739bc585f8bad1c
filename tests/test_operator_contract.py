"""The generic suite every linear operator passes: adjointness, linearity, shapes, autograd.

Operators register themselves in ``tests/cases_*.py`` files, each defining
``CASES: dict[str, Callable[[], LinearOperator]]``; this file collects all of them and adds the
adjoint operator object ``A.H`` of each (``adjoint-of-<name>``), which must pass the same suite.

Bars are the precision an operator computes in: 1e-6 (relative) for float32/complex64 and for
ASTRA (float32 inside, whatever the dtype), 1e-12 for float64/complex128 (measured: <= 3e-8 and
<= 5e-17 for adjointness).
"""

from __future__ import annotations

import importlib
import pathlib
import sys

import pytest
import torch

from medrecon.physics.operator import AdjointOperator, LinearOperator, OperatorShapeError, inner
from medrecon.solvers.tv import FiniteDifference

sys.path.insert(0, str(pathlib.Path(__file__).parent))
CASES: dict = {}
for path in sorted(pathlib.Path(__file__).parent.glob("cases_*.py")):
    CASES.update(importlib.import_module(path.stem).CASES)

BASE = sorted(CASES)
NAMES = BASE + [f"adjoint-of-{name}" for name in BASE]
ADJOINT_BAR = {torch.float32: 1e-6, torch.complex64: 1e-6, torch.float64: 1e-12,
               torch.complex128: 1e-12}
LINEARITY_BAR = {torch.float32: 2e-6, torch.complex64: 2e-6, torch.float64: 1e-12,
                 torch.complex128: 1e-12}


def _make(name: str) -> LinearOperator:
    if name.startswith("adjoint-of-"):
        return CASES[name[len("adjoint-of-"):]]().H
    return CASES[name]()


def _working_dtype(op: LinearOperator) -> torch.dtype:
    """The dtype an operator computes in: ASTRA computes in float32 whatever its dtype."""
    base = op.op if isinstance(op, AdjointOperator) else op
    if getattr(base, "backend", None) == "astra":
        return torch.float32
    return op.in_dtype


@pytest.fixture(params=NAMES)
def op(request) -> LinearOperator:
    return _make(request.param)


def _pair(op: LinearOperator, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return op.example_input(3, gen), op.example_output(3, gen)


def test_adjointness(op: LinearOperator) -> None:
    x, y = _pair(op)
    lhs = inner(op.forward(x), y)
    rhs = inner(x, op.adjoint(y))
    scale = op.forward(x).norm() * y.norm()
    bar = ADJOINT_BAR[_working_dtype(op)]
    assert float((lhs - rhs).abs() / scale) < bar, f"{op}: <Ax,y>={lhs} <x,A^H y>={rhs}"


def test_linearity(op: LinearOperator) -> None:
    x1, _ = _pair(op, 1)
    x2, _ = _pair(op, 2)
    a, b = 0.7, -1.3
    lhs = op.forward(a * x1 + b * x2)
    rhs = a * op.forward(x1) + b * op.forward(x2)
    assert float((lhs - rhs).norm() / rhs.norm()) < LINEARITY_BAR[_working_dtype(op)]


def test_shapes_dtype_device(op: LinearOperator) -> None:
    x, y = _pair(op)
    out = op.forward(x)
    assert out.shape == y.shape and out.dtype == op.out_dtype and out.device.type == op.device.type
    back = op.adjoint(y)
    assert back.shape == x.shape and back.dtype == op.in_dtype and back.device.type == op.device.type
    assert op.normal(x).shape == x.shape


def test_rejects_wrong_shape(op: LinearOperator) -> None:
    x, _ = _pair(op)
    with pytest.raises(OperatorShapeError, match="shape"):
        op.forward(x[..., :-1])
    with pytest.raises(OperatorShapeError, match="dtype"):
        op.forward(x.to(torch.complex128) if not x.is_complex() else x.abs().double())


def test_backward_is_adjoint(op: LinearOperator) -> None:
    x, y = _pair(op)
    x = x.clone().requires_grad_(True)
    loss = inner(op.forward(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    expected = op.adjoint(y)
    assert float((grad - expected).norm() / expected.norm()) < 1e-5


@pytest.mark.parametrize("name", BASE)
def test_adjoint_operator_is_involution(name: str) -> None:
    op = _make(name)
    x, y = _pair(op)
    assert torch.equal(op.H.forward(y), op.adjoint(y)) and torch.equal(op.H.adjoint(x), op.forward(x))
    assert op.H.H is op


def test_subset_acts_on_its_slices(op: LinearOperator) -> None:
    """``subset(1:3)`` applied to slices 1..2 equals the full operator's slices 1..2, forward
    and adjoint (slice-wise operators; D_z couples slices and has no subset)."""
    base = op.op if isinstance(op, AdjointOperator) else op
    if isinstance(base, FiniteDifference) and 0 in base.axes:
        with pytest.raises(ValueError, match="couples the slices"):
            op.subset(slice(1, 3))
        return
    n = op.in_shape[0] or 4
    gen = torch.Generator().manual_seed(3)
    x, y = op.example_input(n, gen), op.example_output(n, gen)
    sub = op.subset(slice(1, 3))
    bar = ADJOINT_BAR[_working_dtype(op)]
    for got, want in ((sub.forward(x[1:3]), op.forward(x)[1:3]),
                      (sub.adjoint(y[1:3]), op.adjoint(y)[1:3])):
        assert got.shape == want.shape
        assert float((got - want).norm() / want.norm()) < bar    # batched BLAS/FFT: round-off
