"""Discrete-time variance-preserving noise schedules.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", section 2):

    beta_t                    variance added at step t           q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    alpha_t    = 1 - beta_t
    alpha_bar_t = prod_{s<=t} alpha_s                             q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    snr_t      = alpha_bar_t / (1 - alpha_bar_t)                  signal-to-noise ratio (Kingma et al. 2021)
    sigma_t    = sqrt((1 - alpha_bar_t) / alpha_bar_t) = snr_t^{-1/2}
                                                                  noise level of the "variance exploding" view
                                                                  x_t / sqrt(alpha_bar_t) = x_0 + sigma_t * eps (Karras et al. 2022)

Time steps are integers t in [0, T): index 0 is the first (least noisy) step and T - 1 the last.
Training draws t uniformly from [0, T) and sampling walks t = T-1, ..., 0, so both use the same
indices (the original DiffusionLab trained on [0, T-1] but sampled on [1, T]).

Every Gaussian process the package trains is a NoiseSchedule: x_t = a_t x0 + s_t eps on the T steps, with
(a_t, s_t) = (``signal_scales``, ``noise_scales``). For the VP schedules here (a_t, s_t) = (sqrt(alpha_bar_t),
sqrt(1 - alpha_bar_t)); another process (rectified_flow.py: a_t = 1 - t, s_t = t) keeps betas/alpha_bars/sigmas
as its VP-equivalent (same sigma_t = s_t / a_t) and overrides the scales, :meth:`NoiseSchedule.input_scale` and
:meth:`NoiseSchedule.sample_time_steps`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from diffusion_playground.checks import check_integer, check_real

if TYPE_CHECKING:
    from diffusion_playground.diffusion.categorical import CategoricalDiffusion
    from diffusion_playground.diffusion.edm import EDMDiffusion
    from diffusion_playground.diffusion.multimodal import MultimodalDiffusion


class NoiseSchedule:
    """A schedule defined by its betas; every other view is derived from them.

    Attributes (besides betas, alphas, alpha_bars, snr, sigmas and the posterior coefficients, all (T,) float32):
        signal_scales, noise_scales: a_t and s_t of x_t = a_t x0 + s_t eps, the network's input; here
            sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) (the same tensors as ``sqrt_alpha_bars`` and
            ``sqrt_one_minus_alpha_bars``).
        prediction_types: the network targets whose conversions hold for this process (parameterization.py).

    Args:
        betas: 1-D tensor of the T variances beta_t, each in (0, 1).

    Raises:
        ValueError: if there is no step, a beta lies outside (0, 1), or alpha_bar is not
            strictly decreasing (which would make some step remove noise).
    """

    prediction_types: tuple[str, ...] = ("eps", "x0", "v")  # v = a eps - s x0 inverts only when a^2 + s^2 = 1

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(
                f"a noise schedule needs T >= 1 steps given as a 1-D tensor of betas; got shape {tuple(betas.shape)}"
            )
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
            bad = betas[~((betas > 0) & (betas < 1))]
            raise ValueError(
                f"every beta_t must lie in the open interval (0, 1); got {bad[:5].tolist()} "
                f"(min {betas.min().item():.3g}, max {betas.max().item():.3g})"
            )
        alpha_bars = torch.cumprod(1.0 - betas, dim=0)
        if (alpha_bars[1:] >= alpha_bars[:-1]).any():
            raise ValueError(
                "alpha_bar_t must be strictly decreasing in t (each step adds noise); "
                "it is not for these betas"
            )
        # Everything is computed in float64 once, then stored as float32 for use with models.
        self._betas64 = betas
        self._device = torch.device("cpu")
        self._build(torch.device("cpu"))

    def _build(self, device: torch.device) -> None:
        betas = self._betas64
        alphas = 1.0 - betas
        alpha_bars = torch.cumprod(alphas, dim=0)
        alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])

        def f32(x: Tensor) -> Tensor:
            return x.to(device=device, dtype=torch.float32)

        self.betas = f32(betas)
        self.alphas = f32(alphas)
        self.alpha_bars = f32(alpha_bars)
        self.alpha_bars_prev = f32(alpha_bars_prev)  # alpha_bar_{t-1}, with alpha_bar_{-1} = 1
        self.sqrt_alpha_bars = f32(alpha_bars.sqrt())
        self.sqrt_one_minus_alpha_bars = f32((1.0 - alpha_bars).sqrt())
        self.snr = f32(alpha_bars / (1.0 - alpha_bars))
        self.sigmas = f32(((1.0 - alpha_bars) / alpha_bars).sqrt())
        self.signal_scales, self.noise_scales = self.sqrt_alpha_bars, self.sqrt_one_minus_alpha_bars  # a_t, s_t
        # Posterior q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, beta_tilde_t I)  (Ho et al. 2020, eq. 6-7)
        self.posterior_variance = f32(betas * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars))
        self.posterior_mean_coef_x0 = f32(betas * alpha_bars_prev.sqrt() / (1.0 - alpha_bars))
        self.posterior_mean_coef_xt = f32((1.0 - alpha_bars_prev) * alphas.sqrt() / (1.0 - alpha_bars))
        self._device = device

    @property
    def alpha_bars_float64(self) -> Tensor:
        """alpha_bar_t in float64 on the CPU, for coefficients that must not lose precision (strided steps)."""
        return torch.cumprod(1.0 - self._betas64, dim=0)

    @property
    def sigma_min(self) -> float:
        """sigma_0, the smallest noise level the model was trained on."""
        return float(sigma_from_alpha_bar(self.alpha_bars_float64[0]))

    @property
    def sigma_max(self) -> float:
        """sigma_{T-1}, the largest noise level the model was trained on."""
        return float(sigma_from_alpha_bar(self.alpha_bars_float64[-1]))

    @property
    def time_steps(self) -> int:
        """T, the number of diffusion steps."""
        return self._betas64.numel()

    @property
    def T(self) -> int:  # noqa: N802 - the paper's symbol
        return self.time_steps

    @property
    def device(self) -> torch.device:
        return self._device

    def input_scale(self, sigma: Tensor) -> Tensor:
        """s(sigma) with x_t = s(sigma) x_sigma: the network's input from the samplers' VE variable (Karras et al.
        2022, eq. 4); here s = sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2) (:func:`vp_scale`)."""
        return vp_scale(sigma)

    def sample_time_steps(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Tensor:
        """t ~ Uniform{0, ..., T-1} (Ho et al. 2020, Algorithm 1, line 3): the (batch_size,) int64 steps of a training batch."""
        return torch.randint(0, self.T, (batch_size,), device=device, generator=generator)

    def to(self, device: torch.device | str) -> "NoiseSchedule":
        """Move every derived tensor to ``device`` (in place) and return self."""
        self._build(torch.device(device))
        return self

    def config(self) -> dict[str, Any]:
        """Arguments that rebuild this schedule with :func:`schedule_from_config`."""
        return {"name": "custom", "betas": self._betas64.tolist()}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(T={self.T}, beta=[{self.betas[0].item():.2e}, {self.betas[-1].item():.2e}], "
            f"alpha_bar_T-1={self.alpha_bars[-1].item():.2e})"
        )


class LinearNoiseSchedule(NoiseSchedule):
    """beta_t linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020, section 4: 1e-4 to 0.02, T = 1000)."""

    def __init__(self, time_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        _check_time_steps(time_steps)
        beta_start, beta_end = check_real("beta_start", beta_start), check_real("beta_end", beta_end)
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1; got beta_start={beta_start}, beta_end={beta_end}"
            )
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        super().__init__(torch.linspace(beta_start, beta_end, time_steps, dtype=torch.float64))

    @classmethod
    def scaled(cls, time_steps: int) -> "LinearNoiseSchedule":
        """Ho et al.'s endpoints scaled by 1000 / T, so that sum_t beta_t, and hence alpha_bar_{T-1} ~ 0,
        stay about the same for any T (the "linear" schedule of Nichol & Dhariwal 2021's code)."""
        _check_time_steps(time_steps)
        if time_steps < 20:  # 0.02 * 1000 / T would reach 1: beta_t = 1 destroys the signal in one step
            raise ValueError(f"LinearNoiseSchedule.scaled needs time_steps >= 20 (beta_end = 0.02 * 1000 / T < 1); got {time_steps}")
        scale = 1000 / time_steps
        return cls(time_steps, beta_start=1e-4 * scale, beta_end=0.02 * scale)

    def config(self) -> dict[str, Any]:
        return {"name": "linear", "time_steps": self.T, "beta_start": self.beta_start, "beta_end": self.beta_end}


class CosineNoiseSchedule(NoiseSchedule):
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    alpha_bar(t) = f(t) / f(0),  f(t) = cos^2( (t/T + s) / (1 + s) * pi/2 ),
    beta_t = 1 - alpha_bar(t) / alpha_bar(t-1), clipped at ``max_beta`` = 0.999 to avoid the
    singularity at t = T. Our step index t in [0, T) is their step t + 1.
    """

    def __init__(self, time_steps: int, s: float = 0.008, max_beta: float = 0.999) -> None:
        _check_time_steps(time_steps)
        if not check_real("the cosine offset s", s) >= 0:
            raise ValueError(f"the cosine offset s must be >= 0; got s={s}")
        if not 0.0 < check_real("max_beta", max_beta) < 1.0:
            raise ValueError(f"max_beta must lie in (0, 1); got {max_beta}")
        self.s, self.max_beta = float(s), float(max_beta)
        steps = torch.arange(time_steps + 1, dtype=torch.float64)
        f = torch.cos((steps / time_steps + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=1e-8, max=max_beta)
        super().__init__(betas)

    def config(self) -> dict[str, Any]:
        return {"name": "cosine", "time_steps": self.T, "s": self.s, "max_beta": self.max_beta}


def _check_time_steps(time_steps: int) -> None:
    check_integer("time_steps (T)", time_steps, minimum=1)


# ---------------------------------------------------------------------------------------------
# The VP t-view <-> the sigma-view (Karras et al. 2022, section 2 and table 1).
#
#   x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps          (VP, what the wrappers see)
#   x_sigma = x_t / sqrt(alpha_bar_t) = x0 + sigma eps                (VE, what the EDM/DPM samplers step)
#   sigma = sqrt((1 - alpha_bar) / alpha_bar),   alpha_bar = 1 / (1 + sigma^2)
# ---------------------------------------------------------------------------------------------


def sigma_from_alpha_bar(alpha_bar: Tensor) -> Tensor:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar) (Karras et al. 2022, table 1, VP column: s(t) = 1/sqrt(1 + sigma^2))."""
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def alpha_bar_from_sigma(sigma: Tensor) -> Tensor:
    """alpha_bar = 1 / (1 + sigma^2), the inverse of :func:`sigma_from_alpha_bar`."""
    return 1.0 / (1.0 + sigma**2)


def vp_scale(sigma: Tensor) -> Tensor:
    """s(sigma) = sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2): x_t = s(sigma) x_sigma (Karras et al. 2022, eq. 4)."""
    return (1.0 + sigma**2).rsqrt()


def sigma_to_t(noise_schedule: NoiseSchedule, sigma: Tensor | float) -> Tensor:
    """The fractional step t at noise level sigma, interpolating log(sigma) linearly between trained steps.

    ``sigmas`` is strictly increasing in t, so every sigma in [sigma_0, sigma_{T-1}] has one t in
    [0, T-1]; sigmas outside that range are clamped to its ends. Returns float64 of sigma's shape.
    """
    log_sigmas = sigma_from_alpha_bar(noise_schedule.alpha_bars_float64).log()  # (T,)
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    log_sigma = sigma.cpu().double().clamp(min=1e-30).log().clamp(log_sigmas[0], log_sigmas[-1])
    upper = torch.searchsorted(log_sigmas, log_sigma.reshape(-1)).clamp(1, max(noise_schedule.T - 1, 1))
    lower = upper - 1
    if noise_schedule.T == 1:
        return torch.zeros_like(log_sigma).to(sigma.device)
    fraction = (log_sigma.reshape(-1) - log_sigmas[lower]) / (log_sigmas[upper] - log_sigmas[lower])
    return (lower + fraction).reshape(log_sigma.shape).to(sigma.device)


def nearest_time_step(noise_schedule: NoiseSchedule, sigma: Tensor | float) -> Tensor:
    """The trained step whose sigma_t is nearest to sigma in log-space: round(:func:`sigma_to_t`), as int64.

    This is how the denoiser view calls a wrapper (which takes integer t) at an arbitrary sigma.
    For a sigma that *is* a trained sigma_t (every step schedule built on the t-grid) it returns t exactly.
    """
    return sigma_to_t(noise_schedule, sigma).round().long()


def schedule_from_config(
    config: dict[str, Any],
) -> NoiseSchedule | CategoricalDiffusion | MultimodalDiffusion | EDMDiffusion:
    """Rebuild a schedule from its :meth:`NoiseSchedule.config` (a :class:`RectifiedFlow`'s too, name
    "rectified_flow"), a :class:`CategoricalDiffusion` (name "categorical"), an :class:`EDMDiffusion` (name "edm")
    or a :class:`MultimodalDiffusion` (name "multimodal", its parts rebuilt in turn) from its ``config()``; used by
    checkpoints."""
    # imported here: these modules import this one
    from diffusion_playground.diffusion.categorical import CategoricalDiffusion
    from diffusion_playground.diffusion.edm import EDMDiffusion
    from diffusion_playground.diffusion.multimodal import MultimodalDiffusion
    from diffusion_playground.diffusion.rectified_flow import RectifiedFlow

    kwargs = dict(config)
    name = kwargs.pop("name", None)
    if name == "multimodal":
        processes = {part: schedule_from_config(part_config) for part, part_config in kwargs["processes"].items()}
        return MultimodalDiffusion(processes, kwargs["weights"])
    builders = {
        "linear": LinearNoiseSchedule, "cosine": CosineNoiseSchedule, "custom": NoiseSchedule,
        "rectified_flow": RectifiedFlow, "categorical": CategoricalDiffusion, "edm": EDMDiffusion,
    }  # fmt: skip
    if name not in builders:
        raise ValueError(f"unknown noise schedule {name!r}; expected one of {sorted([*builders, 'multimodal'])}")
    return builders[name](**kwargs)
