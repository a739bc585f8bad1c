import torch

from matrix_operator import random_matrix_operator
from medrecon.solvers.tv import FiniteDifference

CASES = {
    "diff-z-neumann": lambda: FiniteDifference(5, (4, 6), (0,), "neumann"),
    "diff-z-circular": lambda: FiniteDifference(5, (4, 6), (0,), "circular"),
    "diff-3d-neumann": lambda: FiniteDifference(5, (4, 6), (0, 1, 2), "neumann"),
    "diff-3d-complex": lambda: FiniteDifference(4, (3, 5), (0, 2), "neumann", torch.complex64),
    "dense-matrix": lambda: random_matrix_operator(10, (3, 4), torch.float32),
    "dense-matrix-complex": lambda: random_matrix_operator(10, (3, 4), torch.complex64),
}
CASES.update({
    "diff-z-neumann-f64": lambda: FiniteDifference(5, (4, 6), (0,), "neumann", torch.float64),
    "dense-matrix-f64": lambda: random_matrix_operator(10, (3, 4), torch.float64),
    "dense-matrix-complex128": lambda: random_matrix_operator(10, (3, 4), torch.complex128),
})
