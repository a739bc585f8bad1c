import pytest
import torch

from matrix_operator import random_matrix_operator
from medrecon.solvers.admm import AdmmTV
from medrecon.solvers.cg import conjugate_gradient
from medrecon.solvers.classical import admm_tv, cgls, sense, sirt
from medrecon.solvers.tv import FiniteDifference, soft_threshold


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("batched", [False, True])
def test_cg_solves_hermitian_system(dtype, batched) -> None:
    gen = torch.Generator().manual_seed(0)
    n = 12
    b = torch.randn(n, n, dtype=dtype, generator=gen)
    m = b.conj().T @ b + 0.5 * torch.eye(n, dtype=dtype)
    rhs = torch.randn(3, n, dtype=dtype, generator=gen)
    x = conjugate_gradient(lambda v: v @ m.T, rhs, iterations=60, batched=batched)
    expected = torch.linalg.solve(m, rhs.T).T
    assert torch.allclose(x, expected, atol=1e-8)


def test_cg_complex_needs_conjugation() -> None:
    """A purely imaginary right-hand side: r^T r without conjugation would be negative."""
    m = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.complex128))
    rhs = 1j * torch.ones(1, 3, dtype=torch.complex128)
    x = conjugate_gradient(lambda v: v @ m.T, rhs, iterations=3)
    assert torch.allclose(x, rhs / torch.tensor([1.0, 2.0, 3.0]), atol=1e-12)


def test_cg_stops_at_tolerance_and_warm_start() -> None:
    m = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    rhs = torch.ones(1, 5, dtype=torch.float64)
    exact = rhs / torch.arange(1.0, 6.0)
    x = conjugate_gradient(lambda v: v @ m.T, rhs, x0=exact, iterations=10, tol=1e-12)
    assert torch.equal(x, exact)


def test_soft_threshold_real_and_complex() -> None:
    v = torch.tensor([-3.0, -0.5, 0.0, 0.5, 2.0])
    assert torch.equal(soft_threshold(v, 1.0), torch.tensor([-2.0, 0.0, 0.0, 0.0, 1.0]))
    c = torch.tensor([3 + 4j, 0.3 + 0.4j])
    out = soft_threshold(c, 1.0)
    assert torch.allclose(out, torch.tensor([2.4 + 3.2j, 0j]))


def test_finite_difference_boundaries() -> None:
    x = torch.arange(4.0).reshape(4, 1, 1)
    neu = FiniteDifference(4, (1, 1), (0,), "neumann").forward(x)
    circ = FiniteDifference(4, (1, 1), (0,), "circular").forward(x)
    assert neu.flatten().tolist() == [1.0, 1.0, 1.0, 0.0]
    assert circ.flatten().tolist() == [1.0, 1.0, 1.0, -3.0]
    with pytest.raises(ValueError, match="boundary"):
        FiniteDifference(4, (1, 1), (0,), "periodic")


def _piecewise_problem(seed: int = 0):
    """A z-piecewise-constant volume seen through a noisy per-slice matrix (TV-z averages the noise)."""
    gen = torch.Generator().manual_seed(seed)
    op = random_matrix_operator(24, (4, 4), torch.float64, seed)
    truth = torch.zeros(12, 4, 4, dtype=torch.float64)
    truth[:6] = torch.rand(4, 4, generator=gen, dtype=torch.float64)
    truth[6:] = torch.rand(4, 4, generator=gen, dtype=torch.float64)
    y = op.forward(truth) + 1.0 * torch.randn(12, 24, generator=gen, dtype=torch.float64)
    return op, truth, y


def test_admm_objective_decreases_and_tv_beats_least_squares() -> None:
    op, truth, y = _piecewise_problem()
    diff = FiniteDifference(12, (4, 4), (0,), dtype=torch.float64)
    solver = AdmmTV(op, y, diff, lam=5.0, rho=5.0, cg_iterations=10)
    x = torch.zeros_like(truth)
    state = solver.init_state(x)
    objectives = []
    for _ in range(60):
        x, state = solver.step(x, state)
        objectives.append(solver.objective(x))
    assert objectives[-1] < objectives[0]
    assert objectives[-1] <= min(objectives[:10])
    ls = cgls(op, y, iterations=50)
    err_tv = float((x - truth).norm() / truth.norm())
    err_ls = float((ls - truth).norm() / truth.norm())
    assert err_tv < 0.5 * err_ls, (err_tv, err_ls)


def test_admm_tv_function_matches_class() -> None:
    op, truth, y = _piecewise_problem(1)
    x = admm_tv(op, y, lam=0.5, rho=1.0, iterations=20, cg_iterations=10)
    diff = FiniteDifference(12, (4, 4), (0,), dtype=torch.float64)
    x2 = AdmmTV(op, y, diff, 0.5, 1.0, 10).run(torch.zeros_like(truth), 20)
    assert torch.allclose(x, x2)


def test_cgls_and_sense_solve_overdetermined_systems() -> None:
    for dtype in (torch.float64, torch.complex128):
        op = random_matrix_operator(30, (3, 4), dtype, 3)
        truth = op.example_input(2, torch.Generator().manual_seed(1))
        y = op.forward(truth)
        assert torch.allclose(cgls(op, y, iterations=40), truth, atol=1e-8)
        assert torch.allclose(sense(op, y, iterations=40), truth, atol=1e-8)


def test_sirt_converges_on_nonnegative_consistent_data() -> None:
    gen = torch.Generator().manual_seed(0)
    mat = torch.rand(40, 16, generator=gen, dtype=torch.float64)
    from matrix_operator import MatrixOperator
    op = MatrixOperator(mat, (4, 4))
    truth = torch.rand(2, 4, 4, generator=gen, dtype=torch.float64)
    x = sirt(op, op.forward(truth), iterations=3000)
    assert float((x - truth).norm() / truth.norm()) < 0.02
    with pytest.raises(ValueError, match="complex"):
        sirt(op, torch.zeros(2, 40, dtype=torch.complex128))


def test_nonnegative_admm_tv_is_feasible_and_helps() -> None:
    """x >= 0 as a second split: the result is non-negative and closer to a non-negative truth."""
    op, truth, y = _piecewise_problem(2)
    truth = truth.clamp(min=0)
    y = op.forward(truth) + 0.3 * torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=y.dtype)
    kw = dict(lam=1.0, rho=2.0, iterations=60, cg_iterations=10)
    free = admm_tv(op, y, **kw)
    nonneg = admm_tv(op, y, nonnegative=True, **kw)
    assert float(nonneg.min()) >= 0.0
    assert float((nonneg - truth).norm()) <= float((free - truth).norm())
    with pytest.raises(ValueError, match="real image"):
        AdmmTV(random_matrix_operator(4, (2, 2), torch.complex128), torch.zeros(1, 4, dtype=torch.complex128),
               FiniteDifference(1, (2, 2), dtype=torch.complex128), 1.0, 1.0, nonnegative=True)
