"""Independent reference implementations of the diffusion samplers, for trajectory tests.

Written from the published equations (ALGORITHMS.md sections 1-3, 6), not from medrecon's code:
DDS in VP variables (DDIM with eta on the linear-beta DDPM schedule, epsilon from the exact VP
posterior of a Gaussian prior), DiffusionMBIR as the VE predictor-corrector of score_sde, ADMM-TV
along z with a dense ``D_z`` matrix and textbook conjugate gradients. Everything is computed in
float64 from the sampler's own noise source (``NoiseSource(seed)``, drawn in the published order),
so the only differences to the sampler are round-off.

Each reference returns a list of per-step dicts whose keys match the samplers' ``trace`` names,
with every image quantity in the *sampler's* variables (VE prior batches ``[B, Y, X]``; the data
consistency output as a volume ``[Z, Y, X]``), converted here from the VP ones.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from medrecon.physics.operator import LinearOperator
from medrecon.prior.denoiser import Denoiser
from medrecon.samplers.noise import NoiseSource

F64, C128 = torch.float64, torch.complex128


# --------------------------------------------------------------------------------------------
# A closed-form prior that records what it is asked
# --------------------------------------------------------------------------------------------
class RecordingWiener(Denoiser):
    """Exact MMSE denoiser of the Gaussian prior ``N(mean, F^H diag(P) F)`` (Wiener filter),
    ``D(x, s) = mean + F^H [P / (P + s^2)] F (x - mean)``; every call's input ``x`` ``[B, Y, X]``
    and ``sigma`` ``[B]`` are kept in :attr:`calls`. Buffers in ``dtype`` (the network dtype the
    samplers cast to); the filter itself is evaluated in float64."""

    def __init__(self, mean: torch.Tensor, power: torch.Tensor, dtype: torch.dtype = F64,
                 sigma_min: float = 1e-4, sigma_max: float = 200.0) -> None:
        super().__init__()
        self.register_buffer("mean", mean.to(dtype))
        self.register_buffer("power", power.to(dtype))
        self.image_size = int(mean.shape[-1])
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls.append((x[:, 0].detach().clone(), sigma.detach().clone()))
        s2 = sigma.to(F64).reshape(-1, 1, 1, 1) ** 2
        p = self.power.to(F64)
        r = torch.fft.fft2(x.to(F64) - self.mean.to(F64), norm="ortho")
        return (self.mean.to(F64) + torch.fft.ifft2(r * (p / (p + s2)), norm="ortho").real).to(x.dtype)

    def recorded_inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image the prior was given and its sigma, in call order, grouped by sampler
        evaluation of ``batch`` images (the samplers call in chunks): ``[E, batch, Y, X]``, ``[E, batch]``."""
        x = torch.cat([c[0] for c in self.calls])
        s = torch.cat([c[1] for c in self.calls])
        return x.reshape(-1, batch, *x.shape[1:]), s.reshape(-1, batch)


def wiener_eps_vp(mean: torch.Tensor, power: torch.Tensor, x_vp: torch.Tensor, abar: float
                  ) -> torch.Tensor:
    """``E[eps | x_vp]`` for ``x_vp = sqrt(a) x0 + sqrt(1 - a) eps``, ``x0 ~ N(mean, P)``:
    per frequency ``Cov(eps, x_vp) / Var(x_vp) = sqrt(1 - a) / (a P + 1 - a)`` (derived in VP,
    independently of the VE denoiser). ``x_vp`` real ``[B, Y, X]``."""
    a = float(abar)
    r = torch.fft.fft2(x_vp.to(F64) - math.sqrt(a) * mean.to(F64), norm="ortho")
    gain = math.sqrt(1.0 - a) / (a * power.to(F64) + (1.0 - a))
    return torch.fft.ifft2(r * gain, norm="ortho").real


# --------------------------------------------------------------------------------------------
# Schedules (published formulas)
# --------------------------------------------------------------------------------------------
def ddpm_alpha_bars(beta_start: float = 1e-4, beta_end: float = 0.02, T: int = 1000) -> list[float]:
    """``abar_t = prod_{s <= t} (1 - beta_s)``, linear betas (Ho et al. 2020), as Python floats."""
    out, prod = [], 1.0
    for k in range(T):
        beta = beta_start + (beta_end - beta_start) * k / (T - 1)
        prod *= 1.0 - beta
        out.append(prod)
    return out


def ddim_timesteps_published(steps: int, T: int = 1000) -> list[int]:
    """``reversed(range(0, T, T // steps))``: 980, 960, ..., 0 for 50 steps (``steps`` must
    divide ``T``, else the published list has more than ``steps`` entries)."""
    ts = list(reversed(range(0, T, T // steps)))
    assert len(ts) == steps, f"{steps} does not divide {T}"
    return ts


def warm_timesteps(steps: int, abar: list[float], start_sigma: float) -> list[int]:
    """A warm start at noise level ``start_sigma``: ``steps`` timesteps evenly spread (rounded)
    on ``[0, t_top]`` with ``t_top`` the largest ``t`` whose VE level ``sqrt((1 - a) / a)`` is
    at most ``start_sigma``."""
    top = max(t for t, a in enumerate(abar) if math.sqrt((1 - a) / a) <= start_sigma)
    return [int(round(top - i * top / (steps - 1))) for i in range(steps)]


def ve_geometric(sigma_min: float, sigma_max: float, n: int) -> list[float]:
    """score_sde's VE levels ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, t from 1 to 0."""
    return [sigma_min * (sigma_max / sigma_min) ** (1.0 - i / (n - 1)) for i in range(n)]


# --------------------------------------------------------------------------------------------
# ADMM-TV(z) and CG, written out
# --------------------------------------------------------------------------------------------
def dz_matrix(n: int, circular: bool = False) -> torch.Tensor:
    """Forward difference along z as a dense ``[n, n]`` matrix: ``(D v)_k = v_{k+1} - v_k``; the
    last row is 0 (Neumann) or couples the last slice to the first (circular)."""
    d = torch.zeros(n, n, dtype=F64)
    for k in range(n - 1):
        d[k, k], d[k, k + 1] = -1.0, 1.0
    if circular:
        d[n - 1, n - 1], d[n - 1, 0] = -1.0, 1.0
    return d


def apply_z(mat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``mat`` applied along the slice axis of ``v`` ``[Z, ...]``."""
    return torch.einsum("ij,j...->i...", mat.to(v.dtype), v)


def vdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.vdot(a.reshape(-1), b.reshape(-1)).real


def cg_textbook(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Hestenes-Stiefel conjugate gradients from ``x`` (``<a, b> = Re sum conj(a) b``)."""
    r = b - matvec(x)
    p = r.clone()
    rr = vdot(r, r)
    for _ in range(iterations):
        mp = matvec(p)
        alpha = rr / vdot(p, mp)
        x = x + alpha * p
        r = r - alpha * mp
        rr_new = vdot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def soft(v: torch.Tensor, t: float) -> torch.Tensor:
    """``sign(v) max(|v| - t, 0)`` (complex: the magnitude is shrunk, the phase kept)."""
    mag = v.abs()
    return v * torch.clamp(mag - t, min=0) / torch.where(mag > 0, mag, torch.ones_like(mag))


class AdmmReference:
    """``min ||y - A x||^2 / 2 + lam ||D_z x||_1 (+ w ||x - x0||^2 / 2)``, one iteration per call:
    ``x = CG[(A^H A + rho D^T D + w I) x = A^H y + rho D^T (z - u) + w x0]`` from ``x_start``,
    ``z = soft(D x + u, lam / rho)``, ``u = u + D x - z``. ``A`` is applied in float64 through
    ``apply`` / ``adjoint`` (the caller's exact operator)."""

    def __init__(self, A: Callable, AT: Callable, y: torch.Tensor, n: int, lam: float, rho: float,
                 cg_iterations: int, circular: bool = False) -> None:
        self.A, self.AT, self.lam, self.rho, self.k = A, AT, lam, rho, cg_iterations
        self.aty = AT(y)
        self.D = dz_matrix(n, circular)

    def step(self, x_start: torch.Tensor, z: torch.Tensor, u: torch.Tensor,
             w: float = 0.0, anchor: Optional[torch.Tensor] = None):
        D, rho = self.D, self.rho
        rhs = self.aty + rho * apply_z(D.T, z - u)
        if w:
            rhs = rhs + w * anchor

        def normal(v):
            out = self.AT(self.A(v)) + rho * apply_z(D.T, apply_z(D, v))
            return out + w * v if w else out

        x = cg_textbook(normal, rhs, x_start, self.k)
        dx = apply_z(D, x)
        z_new = soft(dx + u, self.lam / rho)
        return x, z_new, u + dx - z_new


def slice_cg(A: Callable, AT: Callable, y: torch.Tensor, x_start: torch.Tensor, iterations: int,
             w: float = 0.0, anchor: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-slice CG on ``(A^H A + w I) x = A^H y + w x0`` (each slice its own system)."""
    out = []
    for k in range(x_start.shape[0]):
        yk, xk = y[k:k + 1], x_start[k:k + 1]
        rhs = AT(yk) + (w * anchor[k:k + 1] if w else 0.0)
        normal = (lambda v: AT(A(v)) + w * v) if w else (lambda v: AT(A(v)))
        out.append(cg_textbook(normal, rhs, xk, iterations))
    return torch.cat(out)


def exact(op: LinearOperator) -> tuple[Callable, Callable]:
    """``A`` and ``A^H`` of ``op`` evaluated in float64/complex128 (the operator's own matrix,
    from its float64 forward when it has one, else through its dtype)."""
    dt = op.in_dtype

    def A(v):
        return op.forward(v.to(dt)).to(C128 if v.is_complex() else F64)

    def AT(r):
        return op.adjoint(r.to(op.out_dtype)).to(C128 if r.is_complex() else F64)

    return A, AT


# --------------------------------------------------------------------------------------------
# Prior batch layout (real and imaginary parts as separate images, slice-major)
# --------------------------------------------------------------------------------------------
def to_batch(v: torch.Tensor) -> torch.Tensor:
    if not v.is_complex():
        return v
    return torch.stack((v.real, v.imag), dim=1).reshape(2 * v.shape[0], *v.shape[1:])


def from_batch(b: torch.Tensor, complex_: bool) -> torch.Tensor:
    if not complex_:
        return b
    return torch.complex(b[0::2], b[1::2])


# --------------------------------------------------------------------------------------------
# DDS (VP DDIM with eta) and DiffusionMBIR (VE predictor-corrector)
# --------------------------------------------------------------------------------------------
def dds_reference(op: LinearOperator, y: torch.Tensor, mean: torch.Tensor, power: torch.Tensor, *,
                  steps: int, eta: float, lam: float, rho: float, cg_iterations: int, tv_z: bool,
                  seed: int, w: float = 0.0, x_init: Optional[torch.Tensor] = None,
                  start_sigma: float = 0.0, init_noise: bool = True) -> list[dict]:
    """DDS step by step. VP: ``eps = E[eps | x_t]``, ``x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)``,
    ``x0' = DC(x0)``, ``x_t' = sqrt(a') x0' + sqrt(1 - a') (eta z + sqrt(1 - eta^2) eps)``.
    Returns per step ``x`` (VE input), ``x0_hat``, ``eps``, ``x0_dc``, ``noise``, ``x_next`` (VE)."""
    A, AT = exact(op)
    cplx = op.in_dtype.is_complex
    n = y.shape[0]
    shape = ((2 * n) if cplx else n, *op.in_shape[1:])
    y = y.to(C128 if cplx else F64)
    abar = ddpm_alpha_bars()
    ts = warm_timesteps(steps, abar, start_sigma) if start_sigma > 0 else ddim_timesteps_published(steps)
    noise = NoiseSource(seed)
    draw = lambda: noise.normal(shape, torch.float32, torch.device("cpu")).to(F64)  # noqa: E731
    a0 = abar[ts[0]]
    if x_init is not None:            # q(x_t | x_init) = N(sqrt(a) x_init, (1 - a) I)
        x_vp = math.sqrt(a0) * to_batch(x_init.to(C128 if cplx else F64)) + math.sqrt(1 - a0) * draw()
    elif init_noise:
        x_vp = draw()
    else:
        x_vp = torch.zeros(shape, dtype=F64)
    admm = AdmmReference(A, AT, y, n, lam, rho, cg_iterations) if tv_z else None
    if admm is not None:
        z = (apply_z(admm.D, x_init.to(C128 if cplx else F64)) if x_init is not None
             else torch.zeros((n, *op.in_shape[1:]), dtype=C128 if cplx else F64))
        u = torch.zeros_like(z)
    out = []
    for k, t in enumerate(ts):
        a = abar[t]
        a_next = abar[ts[k + 1]] if k + 1 < len(ts) else 1.0
        eps = wiener_eps_vp(mean, power, x_vp, a)
        x0 = (x_vp - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x0v = from_batch(x0, cplx)
        if admm is not None:
            x0dc, z, u = admm.step(x0v, z, u, w, x0v)
        else:
            x0dc = slice_cg(A, AT, y, x0v, cg_iterations, w, x0v)
        zn = draw() if (eta > 0 and k + 1 < len(ts)) else None
        x_next_vp = math.sqrt(a_next) * to_batch(x0dc)
        if a_next < 1.0:
            x_next_vp = x_next_vp + math.sqrt(1 - a_next) * math.sqrt(1 - eta * eta) * eps
            if zn is not None:
                x_next_vp = x_next_vp + math.sqrt(1 - a_next) * eta * zn
        out.append({"t": t, "x": x_vp / math.sqrt(a), "x0_hat": x0, "eps": eps, "x0_dc": x0dc,
                    "noise": zn, "x_next": x_next_vp / math.sqrt(a_next)})
        x_vp = x_next_vp
    return out


def mbir_reference(op: LinearOperator, y: torch.Tensor, mean: torch.Tensor, power: torch.Tensor,
                   *, steps: int, sigma_min: float, sigma_max: float, snr: float, lam: float,
                   rho: float, cg_iterations: int, seed: int, chunk_norms: Optional[int] = None,
                   circular: bool = False) -> tuple[list[dict], torch.Tensor]:
    """DiffusionMBIR step by step: ``x_N = sigma_0 n``; per level ``s_i`` (next ``s_{i+1}``, 0
    after the last): reverse-diffusion predictor, one Langevin corrector with
    ``e = 2 (snr ||z|| / ||score||)^2``, one ADMM-TV(z) iteration (z, u from 0, shared across
    steps); no noise in the last step. Returns the steps and the final SIRT-like step
    ``x + A^T (y - A x) / A^T A 1``."""
    A, AT = exact(op)
    n = y.shape[0]
    shape = (n, *op.in_shape[1:])
    y = y.to(F64)
    sig = ve_geometric(sigma_min, sigma_max, steps)
    noise = NoiseSource(seed)
    draw = lambda: noise.normal(shape, torch.float32, torch.device("cpu")).to(F64)  # noqa: E731
    m, p = mean.to(F64), power.to(F64)

    def score(x, s):   # grad log of N(mean, P + s^2 I): -(P + s^2)^-1 (x - mean), per frequency
        r = torch.fft.fft2(x - m, norm="ortho")
        return -torch.fft.ifft2(r / (p + s * s), norm="ortho").real

    def norms(v):
        g = v.flatten(1).norm(dim=1)
        if chunk_norms:
            g = torch.cat([g[i:i + chunk_norms].mean().repeat(len(g[i:i + chunk_norms]))
                           for i in range(0, len(g), chunk_norms)])
        return g

    admm = AdmmReference(A, AT, y, n, lam, rho, cg_iterations, circular)
    z = torch.zeros(shape, dtype=F64)
    u = torch.zeros_like(z)
    x = sig[0] * draw()
    out = []
    for i, s in enumerate(sig):
        s_next = sig[i + 1] if i + 1 < steps else 0.0
        last = i + 1 == steps
        g = score(x, s)
        zp = draw()
        xp = x + (s * s - s_next * s_next) * g + (0.0 if last else math.sqrt(s * s - s_next * s_next)) * zp
        gc = score(xp, s)
        zc = draw()
        e = (2.0 * (snr * norms(zc) / norms(gc)) ** 2).reshape(-1, 1, 1)
        xc = xp + e * gc + (0.0 if last else torch.sqrt(2.0 * e) * zc)
        xn, z, u = admm.step(xc, z, u)
        out.append({"x": x, "score": g, "noise": zp, "x_predictor": xp, "score_corrector": gc,
                    "noise_corrector": zc, "step_size": e, "x_corrector": xc, "x_next": xn})
        x = xn
    col = AT(A(torch.ones(shape, dtype=F64)))
    final = x + torch.where(col > 1e-8, 1.0 / col, torch.zeros_like(col)) * AT(y - A(x))
    return out, final
