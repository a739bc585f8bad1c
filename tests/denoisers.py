"""Analytic denoisers for sampler tests: exact MMSE denoisers of simple 2D priors (no network).

- :class:`GaussianFourierDenoiser`: a stationary Gaussian prior ``x = mean + F^H (sqrt(P) F w)``
  (``w`` white, ``F`` the orthonormal 2D FFT, ``P`` a symmetric power spectrum), whose exact
  denoiser is the Wiener filter ``D(x, s) = mean + F^H [P / (P + s^2)] F (x - mean)``.
- :class:`GaussianMixtureDenoiser`: equal-weight isotropic mixture ``sum_k N(mu_k, tau^2 I)``;
  ``D(x, s) = sum_k w_k(x) (s^2 mu_k + tau^2 x) / (tau^2 + s^2)`` with posterior weights
  ``w_k ~ exp(-||x - mu_k||^2 / (2 (tau^2 + s^2)))``.
"""

from __future__ import annotations

import torch

from medrecon.prior.denoiser import Denoiser


def smooth_power_spectrum(size: int, corr: float = 3.0, variance: float = 0.02) -> torch.Tensor:
    """A Gaussian-shaped power spectrum ``[size, size]`` (unshifted FFT order) with correlation
    length ``corr`` pixels and per-pixel prior variance ``variance``."""
    k = torch.fft.fftfreq(size, dtype=torch.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    p = torch.exp(-2 * (torch.pi * corr) ** 2 * k2)
    return p * (variance * size * size / p.sum())


def smooth_template(size: int) -> torch.Tensor:
    """A deterministic smooth image in [0, 1] ``[size, size]`` (a bright disc with two blobs)."""
    c = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    img = 0.6 * torch.sigmoid((0.75 - torch.sqrt(xx**2 + yy**2)) * 12)
    img += 0.3 * torch.exp(-((xx - 0.3) ** 2 + (yy + 0.2) ** 2) / 0.02)
    img += 0.2 * torch.exp(-((xx + 0.35) ** 2 + (yy - 0.25) ** 2) / 0.05)
    return img


class GaussianFourierDenoiser(Denoiser):
    """Exact MMSE denoiser of the stationary Gaussian prior ``N(mean, F^H diag(P) F)``."""

    def __init__(self, mean: torch.Tensor, power: torch.Tensor, sigma_min: float = 1e-3,
                 sigma_max: float = 200.0) -> None:
        super().__init__()
        self.register_buffer("mean", mean.to(torch.float32))
        self.register_buffer("power", power.to(torch.float32))
        self.image_size = int(mean.shape[-1])
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s2 = (sigma.reshape(-1, 1, 1, 1).to(torch.float64)) ** 2
        p = self.power.to(torch.float64)
        r = torch.fft.fft2((x.to(torch.float64) - self.mean.to(torch.float64)), norm="ortho")
        out = self.mean.to(torch.float64) + torch.fft.ifft2(r * (p / (p + s2)), norm="ortho").real
        return out.to(x.dtype)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` prior samples ``[n, H, W]`` (float64)."""
        h = self.image_size
        w = torch.randn(n, h, h, dtype=torch.float64, generator=generator)
        f = torch.fft.fft2(w, norm="ortho") * torch.sqrt(self.power.to(torch.float64))
        return self.mean.to(torch.float64) + torch.fft.ifft2(f, norm="ortho").real

    def eps_vp_exact(self, x_vp: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        """``E[eps | x_vp]`` for ``x_vp = sqrt(a) x0 + sqrt(1 - a) eps``, derived directly in VP."""
        a = torch.tensor(alpha_bar, dtype=torch.float64)
        p = self.power.to(torch.float64)
        r = torch.fft.fft2(x_vp.to(torch.float64) - a.sqrt() * self.mean.to(torch.float64),
                           norm="ortho")
        # Cov(eps, x_vp) = sqrt(1-a) I, Var(x_vp) = a P + (1 - a) per frequency.
        gain = (1 - a).sqrt() / (a * p + (1 - a))
        return torch.fft.ifft2(r * gain, norm="ortho").real.to(x_vp.dtype)


class GaussianMixtureDenoiser(Denoiser):
    """Exact MMSE denoiser of ``(1/K) sum_k N(mu_k, tau^2 I)`` on ``[H, W]`` images."""

    def __init__(self, means: torch.Tensor, tau: float = 0.05, sigma_min: float = 1e-3,
                 sigma_max: float = 200.0) -> None:
        super().__init__()
        self.register_buffer("means", means.to(torch.float32))
        self.tau = float(tau)
        self.image_size = int(means.shape[-1])
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        xd = x.to(torch.float64)[:, 0]                               # [B, H, W]
        mu = self.means.to(torch.float64)                             # [K, H, W]
        s2 = sigma.to(torch.float64).reshape(-1, 1) ** 2              # [B, 1]
        t2 = self.tau**2
        d2 = ((xd[:, None] - mu[None]) ** 2).flatten(2).sum(-1)       # [B, K]
        w = torch.softmax(-d2 / (2 * (t2 + s2)), dim=1)               # [B, K]
        s2i = s2.reshape(-1, 1, 1)
        comp = (s2i[:, None] * mu[None] + t2 * xd[:, None]) / (t2 + s2i[:, None])  # [B, K, H, W]
        out = (w[:, :, None, None] * comp).sum(1)
        return out[:, None].to(x.dtype)


# -- small test problems ---------------------------------------------------------------------
def template_set(n: int, with_zero: bool = False) -> torch.Tensor:
    """Four smooth templates ``[K, n, n]`` (float64), plus an all-zero image when asked."""
    t0 = smooth_template(n)
    ts = [t0, t0.flip(0), t0.flip(1), t0.T.flip(0)]
    if with_zero:
        ts.append(torch.zeros_like(t0))
    return torch.stack(ts)


def coherent_volume(template: torch.Tensor, n_slices: int, amplitude: float = 0.05,
                    seed: int = 0) -> torch.Tensor:
    """``[Z, n, n]`` float32: ``template`` plus a perturbation that varies linearly along z."""
    gen = torch.Generator().manual_seed(seed)
    pert = amplitude * torch.randn(2, *template.shape, dtype=torch.float64, generator=gen)
    w = torch.linspace(0, 1, n_slices, dtype=torch.float64)[:, None, None]
    return (template + (1 - w) * pert[0] + w * pert[1]).to(torch.float32)


def ct_problem(views: int = 4, n: int = 32, n_slices: int = 4, tau: float = 0.02):
    """Sparse-view parallel-beam CT (ASTRA CPU) of a z-coherent template volume with the exact
    mixture prior: ``(op, y, truth, denoiser)``."""
    from medrecon.physics.ct import make_ct_operator, parallel_geometry, sparse_view_angles

    templates = template_set(n)
    truth = coherent_volume(templates[0], n_slices, tau)
    op = make_ct_operator(parallel_geometry((n, n), sparse_view_angles(views)), backend="astra")
    return op, op(truth), truth, GaussianMixtureDenoiser(templates, tau=tau)


def mri_problem(acceleration: float = 8, n: int = 24, n_slices: int = 4, tau: float = 0.02):
    """4-coil Cartesian MRI (uniform 1D mask) of a complex z-coherent volume whose real part is a
    template and imaginary part near 0, with the exact mixture prior (templates and a zero image):
    ``(op, y, truth, denoiser)``."""
    from medrecon.physics.mri import SenseOperator, birdcage_maps, uniform_1d

    templates = template_set(n, with_zero=True)
    truth = torch.complex(coherent_volume(templates[1], n_slices, tau),
                          coherent_volume(templates[4], n_slices, tau, seed=1))
    op = SenseOperator(birdcage_maps(4, (n, n)), uniform_1d((n, n), acceleration, 0.08, seed=0))
    return op, op(truth), truth, GaussianMixtureDenoiser(templates, tau=tau)


def benchmark_prior(name: str, device: str = "cpu") -> GaussianFourierDenoiser:
    """A stand-in for the shipped priors in benchmark tests (``--prior-factory``): the Wiener
    denoiser of a smooth stationary Gaussian prior around 0.3, for any slice size up to 32."""
    del name
    return GaussianFourierDenoiser(torch.full((32, 32), 0.3), smooth_power_spectrum(32)).to(device)
