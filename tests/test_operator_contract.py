"""The generic suite every linear operator passes: adjointness, linearity, shapes, autograd.

Operators register themselves in ``tests/cases_*.py`` files, each defining
``CASES: dict[str, Callable[[], LinearOperator]]``; this file collects all of them.
"""

from __future__ import annotations

import importlib
import pathlib
import sys

import pytest
import torch

from medrecon.physics.operator import LinearOperator, OperatorShapeError, inner

sys.path.insert(0, str(pathlib.Path(__file__).parent))
CASES: dict = {}
for path in sorted(pathlib.Path(__file__).parent.glob("cases_*.py")):
    CASES.update(importlib.import_module(path.stem).CASES)

NAMES = sorted(CASES)


@pytest.fixture(params=NAMES)
def op(request) -> LinearOperator:
    return CASES[request.param]()


def _pair(op: LinearOperator, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return op.example_input(3, gen), op.example_output(3, gen)


def test_adjointness(op: LinearOperator) -> None:
    x, y = _pair(op)
    lhs = inner(op.forward(x), y)
    rhs = inner(x, op.adjoint(y))
    scale = op.forward(x).norm() * y.norm()
    assert float((lhs - rhs).abs() / scale) < 1e-4, f"{op}: <Ax,y>={lhs} <x,A^H y>={rhs}"


def test_linearity(op: LinearOperator) -> None:
    x1, _ = _pair(op, 1)
    x2, _ = _pair(op, 2)
    a, b = 0.7, -1.3
    lhs = op.forward(a * x1 + b * x2)
    rhs = a * op.forward(x1) + b * op.forward(x2)
    assert float((lhs - rhs).norm() / rhs.norm()) < 1e-4


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


def test_adjoint_operator_is_involution(op: LinearOperator) -> None:
    x, y = _pair(op)
    assert torch.allclose(op.H.forward(y), op.adjoint(y))
    assert op.H.H is op
