"""Rectified flow / flow matching: the straight Gaussian path from data to noise, as one more noise schedule.

The process (Liu et al. 2023 "Flow Straight and Fast"; Lipman et al. 2023 "Flow Matching for Generative Modeling",
section 4.1, eq. 20-22 with sigma_min = 0 and time reversed; Esser et al. 2024 "Scaling Rectified Flow
Transformers", section 3, "Flow Trajectories": Rectified Flow):

    x_t = (1 - t) x0 + t eps,   t in [0, 1],   eps ~ N(0, I)
    alpha_t = 1 - t,   sigma_t = t              signal and noise scales (the a_t, s_t of parameterization.py)
    v = dx_t / dt = eps - x0                    the velocity, the network's target (prediction_type="flow")
    x0 = x_t - t v,   eps = x_t + (1 - t) v

The denoiser view every sampler steps (denoiser.py): x_t / alpha_t = x0 + (t / (1 - t)) eps, so

    VE sigma = t / (1 - t),   t = sigma / (1 + sigma),   network input x_t = x_sigma / (1 + sigma),

and the VP process with the same sigma has alpha_bar = 1 / (1 + sigma^2) = (1 - t)^2 / ((1 - t)^2 + t^2): the flow's
x_t is that VP x_t times c_t = sqrt((1 - t)^2 + t^2). Both share x_sigma, hence E[x0 | x_sigma], the
probability-flow ODE and (up to the scale c) the DDPM chain; that is why every sampler runs on a flow model
unchanged. Euler in sigma is Euler on dx_t/dt = v in t (and deterministic DDIM): with x0_hat, eps_hat held
fixed, x_t = (1 - t) x0_hat + t eps_hat is affine in t, so both land on (1 - t') x0_hat + t' eps_hat.

Design: discrete t. The wrappers take integer steps (their sinusoidal embedding is of the step index, and
ModelDenoiser snaps sigma to a trained step); loss weights, sigma <-> t and the step grids index per-step
tensors; checkpoints store a schedule's config. So RectifiedFlow is a NoiseSchedule on T levels, the midpoints
t_i = (i + 1/2) / T of T equal cells of [0, 1] (t never reaches 0 or 1, where sigma would be 0 or infinite).
Its betas/alpha_bars/sigmas are the VP-equivalent ones above and it overrides only what differs:
``signal_scales``/``noise_scales`` (read by q_sample, ModelDenoiser, TimeViewModel and DDPM), ``input_scale``
(generate_samples' start and trajectories), ``sample_time_steps`` and ``prediction_types``. Continuous t would
need float-t wrappers and float t wherever a step indexes a tensor, a second stack for cells 1/T = 1e-3 wide.

Training: the conditional flow-matching loss of this path, E_{t, x0, eps} ||v_theta(x_t, t) - (eps - x0)||^2
(Lipman et al. 2023, eq. 23 with sigma_min = 0 in their time direction; eq. 9 in general), which is
``denoising_loss`` with a ``prediction_type="flow"`` wrapper. t is drawn from ``time_distribution``: "uniform"
(t ~ U[0, 1], as Lipman et al. and Liu et al.) or "logit_normal" (Esser et al. 2024, section 3.1: t = sigmoid(u),
u ~ N(m, s^2), more draws mid-path where the velocity is hardest to predict); a draw t trains the step of its
cell, floor(t T).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from diffusion_playground.checks import check_real
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule, _check_time_steps, alpha_bar_from_sigma

TimeDistribution = Literal["uniform", "logit_normal"]
TIME_DISTRIBUTIONS: tuple[str, ...] = ("uniform", "logit_normal")


class RectifiedFlow(NoiseSchedule):
    """x_t = (1 - t) x0 + t eps on the T levels t_i = (i + 1/2) / T (see the module docstring).

    Args:
        time_steps: T, the number of levels t_i (the wrappers' ``num_time_steps``).
        time_distribution: how training draws t: ``"uniform"`` or ``"logit_normal"`` (Esser et al. 2024, section 3.1).
        logit_normal_mean, logit_normal_std: m and s of logit(t) ~ N(m, s^2), their defaults 0 and 1; only with
            ``time_distribution="logit_normal"``.

    Attributes:
        times: (T,) float32, the levels t_i.
        signal_scales, noise_scales: (T,) float32, alpha_t = 1 - t_i and sigma_t = t_i.
        betas, alpha_bars, sigmas, snr, posterior_*: the VP-equivalent chain (its x_t is the flow's x_t / c_t),
            alpha_bar_i = (1 - t_i)^2 / ((1 - t_i)^2 + t_i^2), sigma_i = t_i / (1 - t_i).

    Raises:
        ValueError / TypeError: for T not an integer >= 1, an unknown ``time_distribution``, logit_normal_std <= 0,
            or logit-normal parameters given with the uniform distribution.
    """

    prediction_types = ("eps", "x0", "flow")  # flow: x0 = x_t - s v and eps = x_t + a v need a + s = 1

    def __init__(
        self,
        time_steps: int = 1000,
        *,
        time_distribution: TimeDistribution = "uniform",
        logit_normal_mean: float = 0.0,
        logit_normal_std: float = 1.0,
    ) -> None:
        _check_time_steps(time_steps)
        if time_distribution not in TIME_DISTRIBUTIONS:
            raise ValueError(f"time_distribution must be one of {TIME_DISTRIBUTIONS}; got {time_distribution!r}")
        mean = check_real("logit_normal_mean", logit_normal_mean)
        std = check_real("logit_normal_std", logit_normal_std, minimum=0.0, strict=True)
        if time_distribution == "uniform" and (mean, std) != (0.0, 1.0):
            raise ValueError(
                f"logit_normal_mean={mean:g} / logit_normal_std={std:g} shape the logit-normal time distribution; "
                "pass time_distribution='logit_normal' with them"
            )
        self.time_distribution, self.logit_normal_mean, self.logit_normal_std = time_distribution, mean, std
        self._times64 = (torch.arange(time_steps, dtype=torch.float64) + 0.5) / time_steps  # t_i, (T,)
        alpha_bars = alpha_bar_from_sigma(self._times64 / (1.0 - self._times64))  # (1 - t)^2 / ((1 - t)^2 + t^2)
        alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
        super().__init__(1.0 - alpha_bars / alpha_bars_prev)  # the VP-equivalent betas

    def _build(self, device: torch.device) -> None:
        super()._build(device)
        self.times = self._times64.to(device=device, dtype=torch.float32)
        self.signal_scales = (1.0 - self._times64).to(device=device, dtype=torch.float32)  # alpha_t = 1 - t
        self.noise_scales = self.times  # sigma_t = t

    def input_scale(self, sigma: Tensor) -> Tensor:
        """x_t = x_sigma / (1 + sigma) = (1 - t) x_sigma: alpha_t at t = sigma / (1 + sigma)."""
        return 1.0 / (1.0 + sigma)

    def sample_time_steps(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Tensor:
        """The (batch_size,) int64 steps of a training batch: t from ``time_distribution``, as its cell floor(t T)."""
        if self.time_distribution == "uniform":
            return super().sample_time_steps(batch_size, device, generator)  # t ~ U[0, 1]: every cell equally likely
        u = torch.randn(batch_size, device=device, generator=generator)  # (B,)
        t = torch.sigmoid(self.logit_normal_mean + self.logit_normal_std * u)  # logit(t) ~ N(m, s^2)
        return (t * self.T).long().clamp(max=self.T - 1)  # sigmoid may round to 1.0 in float32

    def config(self) -> dict[str, Any]:
        return {
            "name": "rectified_flow", "time_steps": self.T, "time_distribution": self.time_distribution,
            "logit_normal_mean": self.logit_normal_mean, "logit_normal_std": self.logit_normal_std,
        }  # fmt: skip

    def __repr__(self) -> str:
        shape = f", m={self.logit_normal_mean:g}, s={self.logit_normal_std:g}"
        levels = f"t=[{self.times[0].item():.2e}, {self.times[-1].item():.4f}]"
        return f"RectifiedFlow(T={self.T}, {levels}, {self.time_distribution}{shape if self.time_distribution != 'uniform' else ''})"


__all__ = ["TIME_DISTRIBUTIONS", "RectifiedFlow", "TimeDistribution"]
