"""A dense per-slice matrix operator for solver tests: y[k] = M x[k] (flattened slices)."""

import torch

from medrecon.physics.operator import LinearOperator


class MatrixOperator(LinearOperator):
    def __init__(self, matrix: torch.Tensor, image_shape: tuple[int, int]) -> None:
        m = matrix.shape[0]
        super().__init__((None, *image_shape), (None, m), matrix.dtype, matrix.dtype, matrix.device)
        self.matrix = matrix

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) @ self.matrix.T

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self.matrix.conj()).reshape(y.shape[0], *self.in_shape[1:])


def random_matrix_operator(m: int, shape: tuple[int, int], dtype=torch.float64, seed: int = 0) -> MatrixOperator:
    gen = torch.Generator().manual_seed(seed)
    mat = torch.randn(m, shape[0] * shape[1], dtype=dtype, generator=gen)
    return MatrixOperator(mat, shape)
