"""The published networks behind medrecon's one :class:`~medrecon.prior.denoiser.Denoiser` interface.

* :class:`NCSNppDenoiser`: NCSN++ is a VE score model ``s(x, sigma)``; ``D(x, sigma) = x + sigma^2 s``.
* :class:`ADMDenoiser`: ADM is a VP epsilon model on timesteps of the linear-beta DDPM schedule.
  Given ``sigma``: ``abar = 1 / (1 + sigma^2)``, the fractional timestep ``t(abar)`` interpolates
  ``log abar`` linearly between the discrete steps, the network sees ``x_vp = sqrt(abar) x`` and
  ``D = x - sigma * eps`` (``eps`` = the first ``in_channels`` output channels).

Images are ``[B, C, H, W]`` in the prior's units (see the model card), ``sigma`` is ``[B]``.
"""

from __future__ import annotations

import torch

from medrecon.prior.denoiser import Denoiser
from medrecon.published.adm import ADMUNet
from medrecon.published.inference import autocast_context, use_channels_last
from medrecon.published.ncsnpp import NCSNpp


def _sigma_vector(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or ``[B]`` sigma to a float32 ``[B]`` tensor on ``x``'s device."""
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
    if s.numel() == 1:
        s = s.expand(x.shape[0])
    if s.numel() != x.shape[0]:
        raise ValueError(f"sigma has {s.numel()} values for a batch of {x.shape[0]}")
    return s


def linear_beta_log_alpha_bar(beta_start: float, beta_end: float, timesteps: int) -> torch.Tensor:
    """``log alpha_bar[t] = sum_{s<=t} log(1 - beta_s)``, ``beta`` linear; ``[T]`` float64, decreasing."""
    betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    return torch.cumsum(torch.log1p(-betas), dim=0)


def vp_sigma_range(beta_start: float, beta_end: float, timesteps: int) -> tuple[float, float]:
    """VE noise levels ``sigma = sqrt((1 - abar) / abar)`` at ``t = 0`` and ``t = T - 1``."""
    la = linear_beta_log_alpha_bar(beta_start, beta_end, timesteps)
    s = torch.sqrt(torch.expm1(-la[[0, -1]]))
    return float(s[0]), float(s[1])


class _PublishedDenoiser(Denoiser):
    """Shared precision handling: autocast + channels-last on CUDA (``precision="auto"``)."""

    def __init__(self, net: torch.nn.Module, precision: str = "auto"):
        super().__init__()
        if precision not in ("auto", "fp32"):
            raise ValueError(f"precision must be 'auto' or 'fp32', not {precision!r}")
        self.net = net
        self.precision = precision

    def _run(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Network output in float32; reduced precision only on CUDA with ``precision="auto"``."""
        fast = self.precision == "auto"
        if fast and use_channels_last(x.device):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(x.device, enabled=fast):
            out = self.net(x, cond)
        return out.float().contiguous()


class NCSNppDenoiser(_PublishedDenoiser):
    """VE denoiser from the NCSN++ score network (sigma-conditioned, ``[0, 1]`` data units)."""

    def __init__(self, net: NCSNpp, precision: str = "auto"):
        super().__init__(net, precision)
        cfg = net.config
        self.image_size = cfg.image_size
        self.sigma_min = float(cfg.sigma_min)
        self.sigma_max = float(cfg.sigma_max)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The network output itself: ``grad log p_sigma(x)`` ``[B, C, H, W]``."""
        return self._run(x, _sigma_vector(sigma, x)).to(x.dtype)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Tweedie: ``x + sigma^2 * score(x, sigma)``."""
        s = _sigma_vector(sigma, x)
        return x + (s**2).to(x.dtype).reshape(-1, 1, 1, 1) * self.score(x, s)


class ADMDenoiser(_PublishedDenoiser):
    """VE denoiser from the ADM epsilon network on the linear-beta VP schedule (fractional timesteps)."""

    SNAP = 1e-3   # timesteps this close to an integer are taken as that integer

    def __init__(self, net: ADMUNet, beta_start: float = 1e-4, beta_end: float = 0.02,
                 timesteps: int = 1000, precision: str = "auto"):
        super().__init__(net, precision)
        log_abar = linear_beta_log_alpha_bar(beta_start, beta_end, timesteps)
        self.register_buffer("log_alpha_bar", log_abar, persistent=False)
        self.eps_channels = net.config.in_channels
        self.image_size = net.config.image_size
        self.sigma_min, self.sigma_max = vp_sigma_range(beta_start, beta_end, timesteps)

    @property
    def alpha_bar(self) -> torch.Tensor:
        """``alpha_bar[t]`` for the integer timesteps ``t = 0 .. T-1`` (float64)."""
        return torch.exp(self.log_alpha_bar)

    def timestep(self, alpha_bar: torch.Tensor) -> torch.Tensor:
        """Fractional timestep ``[B]`` (float64) with ``alpha_bar(t) = alpha_bar``, clamped to ``[0, T-1]``.

        Piecewise linear in ``log alpha_bar`` between the discrete steps, exact at integer steps.
        Values within ``SNAP`` of an integer are snapped to it, so a float32 ``alpha_bar[t]`` of the
        discrete schedule gives exactly the published integer timestep ``t``.
        """
        la = self.log_alpha_bar.to(alpha_bar.device)
        target = torch.log(alpha_bar.to(torch.float64).reshape(-1))
        # la is decreasing; searchsorted needs increasing, so work with -la.
        idx = torch.searchsorted(-la, -target, right=False).clamp(1, la.numel() - 1)
        lo, hi = la[idx - 1], la[idx]
        t = (idx - 1).to(torch.float64) + (lo - target) / (lo - hi)
        nearest = t.round()
        t = torch.where((t - nearest).abs() < self.SNAP, nearest, t)
        return t.clamp(0.0, float(la.numel() - 1))

    def eps_at_timestep(self, x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Raw epsilon ``[B, C, H, W]`` at (possibly fractional) timesteps ``t`` ``[B]``."""
        out = self._run(x_vp, t.to(device=x_vp.device, dtype=torch.float32).reshape(-1))
        return out[:, : self.eps_channels].to(x_vp.dtype)

    def eps_vp(self, x_vp: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """Epsilon for ``x_vp = sqrt(abar) x0 + sqrt(1 - abar) eps`` (the network's own convention)."""
        a = torch.as_tensor(alpha_bar, device=x_vp.device).reshape(-1)
        if a.numel() == 1:
            a = a.expand(x_vp.shape[0])
        return self.eps_at_timestep(x_vp, self.timestep(a))

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``D(x, sigma) = x - sigma * eps(sqrt(abar) x, t(abar))`` with ``abar = 1 / (1 + sigma^2)``."""
        s = _sigma_vector(sigma, x).to(torch.float64)
        abar = 1.0 / (1.0 + s**2)
        x_vp = x * torch.sqrt(abar).to(x.dtype).reshape(-1, 1, 1, 1)
        eps = self.eps_at_timestep(x_vp, self.timestep(abar))
        return x - s.to(x.dtype).reshape(-1, 1, 1, 1) * eps

