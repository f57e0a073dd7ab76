"""Likelihoods of a trained Gaussian diffusion model, in bits per dimension: the variational bound and the ODE.

Two ways to score data x0 under a model, both through the denoiser view D(x_sigma, sigma) ~ E[x0 | x_sigma]
(denoiser.py), so they apply to every target (eps, x0, v, flow) and every process the package trains:

1. The discrete-time variational bound (Ho et al. 2020, eq. 5) of the DDPM chain that ``generate_samples``
   samples (the package's step t = 0, ..., T-1 is the paper's t = 1, ..., T):

       -log p(x0) <= L_T + sum_{t>=1} L_{t-1} + L_0
       L_T     = KL(q(x_{T-1} | x0) || N(0, I))                                      the prior term
       L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))                        one per step, x_t ~ q(x_t | x0)
               = coef_x0_t^2 ||x0 - x0_hat(x_t, t)||^2 / (2 beta_tilde_t)            equal variances beta_tilde_t
       L_0     = -log p(x0 | x at step 0) with the decoder N(x0_hat, beta_tilde_1 I)

   p(x_{t-1} | x_t) = N(mu_tilde_t(x_t, x0_hat), beta_tilde_t I) is the sampler's reverse step (Ho et al. 2020,
   eq. 6-7, the posterior with x0_hat for x0), so both means are linear in x0 and the KL is the squared error of
   x0_hat scaled by coef_x0_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t). The decoder's variance is
   beta_tilde at the second step (beta_tilde at the first is 0: the sampler's last step returns x0_hat), as in
   Ho et al.'s code ("posterior_log_variance_clipped"). For images of ``bins`` levels (256: 8 bits) the decoder is
   their discretised Gaussian (eq. 13): the probability of the bin [x - 1/255, x + 1/255] for 8 bits, half-width
   1 / (bins - 1) in general (the two outer bins reaching to -inf / +inf), so L_0 is a probability and the bound is on the discrete data. A process that is not VP
   (rectified flow) is scored through its VP-equivalent chain with the same sigmas (its x_t is that chain's x_t
   times c_t, which leaves every KL unchanged).

2. The exact likelihood of the probability-flow ODE (Song et al. 2021, "Score-Based Generative Modeling through
   SDEs", section 4.3 and appendix D: the instantaneous change of variables of Chen et al. 2018), in the VE
   variable x_sigma = x0 + sigma eps that every sampler steps:

       dx/dsigma = f(x, sigma) = (x - D(x; sigma)) / sigma             (Karras et al. 2022, eq. 1 and 3, sigma(t) = t)
       log p_{sigma_min}(x0) = log p_prior(x(sigma_max)) + int_{sigma_min}^{sigma_max} div_x f(x(sigma), sigma) dsigma

   integrated from x(sigma_min) = x0 up to sigma_max with Heun's method on both x and the log-density, sigma_min
   the process's lowest level and sigma_max the level the ODE samplers start from (the trained sigma_{T-1}, at
   most 80; EDM's 80). The prior is the one sampling starts from, x_t ~ N(0, I), i.e. x_sigma ~ N(0, I / s(sigma_max)^2)
   (s = the process's ``input_scale``: 1 / sqrt(1 + sigma^2) for VP and EDM, 1 / (1 + sigma) for rectified flow).
   The divergence is exact (d backward passes, for points) or Hutchinson's estimate eps^T (df/dx) eps with one
   Rademacher probe per sample held fixed along the path (Grathwohl et al. 2019, FFJORD; as Song et al. 2021 do).
   For images of ``bins`` levels the discrete likelihood is bounded by uniform dequantisation (Theis et al. 2016;
   how Song et al. 2021 report bits/dim): x0 + u, u ~ U(-delta/2, delta/2)^d with the bin width
   delta = 2 / (bins - 1) (2 / 255 for 8 bits), and
   -log P(x0) <= E_u[-log p(x0 + u)] - d log delta.

Bits per dimension = nats / (d ln 2), with d the number of dimensions of one sample. For continuous data (2-D
points, ``bins=None``) these are differential entropies: they can be negative and compare only between models
on the same data.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from diffusion_playground.checks import check_integer
from diffusion_playground.diffusion.denoiser import Denoiser, as_denoiser
from diffusion_playground.diffusion.edm import EDMDiffusion
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule, sigma_from_alpha_bar
from diffusion_playground.diffusion.step_schedules import DEFAULT_SIGMA_MAX, step_sigmas
from diffusion_playground.diffusion.training_utils import randn_like

LikelihoodMethod = Literal["vlb", "ode"]
LIKELIHOOD_METHODS: tuple[str, ...] = ("vlb", "ode")
Divergence = Literal["auto", "exact", "hutchinson"]
EXACT_DIVERGENCE_MAX_DIM = 16  # "auto" computes the exact divergence up to this many dimensions per sample


def log_likelihood(
    model: nn.Module,
    process: NoiseSchedule | EDMDiffusion,
    x: Tensor,
    method: LikelihoodMethod = "ode",
    *,
    labels: Tensor | None = None,
    bins: int | None = None,
    steps: int = 100,
    divergence: Divergence = "auto",
    generator: torch.Generator | None = None,
) -> Tensor:
    """The negative log-likelihood -log2 p(x) / d of each sample, in bits per dimension (lower is better).

    ``method="vlb"``: Ho et al. 2020's variational bound (eq. 5), an upper bound of the model's -log p, with one
    draw of x_t per step and all T steps (T network calls per sample); ``method="ode"``: the probability-flow
    ODE's exact log-density (Song et al. 2021, section 4.3), ``steps`` Heun steps (2 calls each, more for the
    exact divergence). See the module docstring for both formulas.

    Args:
        model: a trained wrapper ``model(x_t, t[, y])`` of any prediction target, or a Denoiser D(x, sigma)
            (an EDMPreconditioner, the OptimalDenoiser).
        process: the schedule the model was trained with (a NoiseSchedule, RectifiedFlow or, for "ode" only,
            an EDMDiffusion).
        x: (B, ...) data in the model's scale (images in [-1, 1], points as trained).
        labels: (B,) class labels for a class-conditional model: scores log p(x | y).
        bins: None for continuous data; 256 for 8-bit images in [-1, 1] (x = k / 127.5 - 1): the discretised
            decoder ("vlb") or uniform dequantisation ("ode"), so the result bounds the discrete -log2 P(x) / d.
        steps: Heun steps of the ODE, on Karras' rho = 7 grid from sigma_min to the samplers' sigma_max (snapped to
            the trained levels of a trained wrapper); "ode" only.
        divergence: "exact", "hutchinson" (one Rademacher probe per sample), or "auto": exact up to
            EXACT_DIVERGENCE_MAX_DIM = 16 dimensions per sample; "ode" only.
        generator: for the draws of x_t ("vlb"), the probes and the dequantisation noise ("ode").

    Returns:
        (B,) float64 bits per dimension.

    Raises:
        ValueError: for an unknown method or divergence, "vlb" on an EDMDiffusion (it has no discrete chain),
            data off the 8-bit grid with ``bins``, or a bad ``steps``.
    """
    if method not in LIKELIHOOD_METHODS:
        raise ValueError(f"method must be one of {LIKELIHOOD_METHODS}; got {method!r}")
    if divergence not in ("auto", "exact", "hutchinson"):
        raise ValueError(f"divergence must be 'auto', 'exact' or 'hutchinson'; got {divergence!r}")
    if not isinstance(x, Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ValueError(f"x must be a (B, ...) floating-point batch of samples; got {type(x).__name__} {getattr(x, 'shape', '')}")
    if bins is not None:
        check_integer("bins", bins, minimum=2)
        check_on_grid(x, bins)
    dims = x[0].numel()
    if method == "vlb":
        if not isinstance(process, NoiseSchedule):
            raise ValueError(
                f"method='vlb' needs the discrete chain of a NoiseSchedule (or RectifiedFlow); an "
                f"{type(process).__name__} has continuous sigma: use method='ode'"
            )
        nats = variational_bound_terms(model, process, x, labels=labels, bins=bins, generator=generator).sum(dim=1)
    else:
        check_integer("steps", steps, minimum=1)
        nats = -ode_log_density(
            model, process, x, labels=labels, bins=bins, steps=steps, divergence=divergence, generator=generator
        )
    return nats / (dims * math.log(2.0))


def check_on_grid(x: Tensor, bins: int) -> None:
    """Raise a ValueError unless x holds ``bins``-level data scaled to [-1, 1]: x = 2 k / (bins - 1) - 1."""
    levels = (x.double() + 1.0) * (bins - 1) / 2.0
    off = (levels - levels.round()).abs().max().item() if x.numel() else 0.0
    if x.numel() and (x.min().item() < -1.0 - 1e-6 or x.max().item() > 1.0 + 1e-6 or off > 1e-3):
        raise ValueError(
            f"with bins={bins} the data must be {bins}-level images scaled to [-1, 1] (x = 2 k / {bins - 1} - 1, "
            f"k = 0..{bins - 1}); got values in [{x.min().item():.4g}, {x.max().item():.4g}] up to {off:.3g} of a "
            "level off the grid. Pass bins=None for continuous data"
        )


@torch.no_grad()
def variational_bound_terms(
    model: nn.Module,
    noise_schedule: NoiseSchedule,
    x0: Tensor,
    *,
    labels: Tensor | None = None,
    bins: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The terms of Ho et al. 2020's bound (eq. 5) in nats, per sample: (B, T + 1) columns [L_0, L_1, ..., L_{T-1}, L_T].

    Column 0 is the decoder's -log p(x0 | x at step 0), column t (1 <= t <= T-1) the KL of the reverse step out
    of step t with x_t ~ q(x_t | x0) drawn once, column T the prior KL. Computed in the VP-equivalent chain of the
    schedule (see the module docstring), float64 coefficients.
    """
    denoiser = as_denoiser(model, noise_schedule)
    alpha_bars = noise_schedule.alpha_bars_float64  # (T,)
    T = alpha_bars.numel()  # noqa: N806 - the paper's symbol
    alpha_bars_prev = torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])
    betas = 1.0 - alpha_bars / alpha_bars_prev
    beta_tilde = betas * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)  # posterior variance, 0 at t = 0
    coef_x0 = alpha_bars_prev.sqrt() * betas / (1.0 - alpha_bars)
    sigmas = sigma_from_alpha_bar(alpha_bars)
    flat = x0.double().flatten(1)  # (B, d)
    dims = flat.shape[1]
    terms = torch.zeros(x0.shape[0], T + 1, dtype=torch.float64)
    for t in range(T):
        x_sigma = x0 + float(sigmas[t]) * randn_like(x0, generator)  # x_t / sqrt(alpha_bar_t), x_t ~ q(x_t | x0)
        x0_hat = denoiser(x_sigma, torch.tensor(float(sigmas[t]), device=x0.device), labels).double().flatten(1).cpu()
        if t == 0:
            variance = float(beta_tilde[1]) if T > 1 else float(betas[0])
            terms[:, 0] = -decoder_log_likelihood(flat.cpu(), x0_hat, variance, bins)
        else:
            terms[:, t] = float(coef_x0[t]) ** 2 * (flat.cpu() - x0_hat).square().sum(dim=1) / (2.0 * float(beta_tilde[t]))
    a2 = float(alpha_bars[-1])  # KL(N(sqrt(ab) x0, (1 - ab) I) || N(0, I)), in closed form
    terms[:, T] = 0.5 * (a2 * flat.cpu().square().sum(dim=1) + dims * (-a2 - math.log(1.0 - a2)))
    return terms


def decoder_log_likelihood(x0: Tensor, mean: Tensor, variance: float, bins: int | None) -> Tensor:
    """log p(x0 | x_1) of the Gaussian decoder N(mean, variance I), summed over dimensions: (B, d) -> (B,).

    With ``bins`` the discretised Gaussian of Ho et al. 2020, eq. 13: the probability of x0's bin
    [x0 - 1/(bins - 1), x0 + 1/(bins - 1)], the first bin reaching to -inf and the last to +inf.
    """
    std = math.sqrt(variance)
    if bins is None:
        return (-0.5 * ((x0 - mean) / std).square() - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(dim=1)
    half_width = 1.0 / (bins - 1)
    lower = torch.where(x0 < -1.0 + 1e-6, -math.inf, (x0 - half_width - mean) / std)
    upper = torch.where(x0 > 1.0 - 1e-6, math.inf, (x0 + half_width - mean) / std)
    return log_normal_interval(lower, upper).sum(dim=1)


def log_normal_interval(lower: Tensor, upper: Tensor) -> Tensor:
    """log(Phi(upper) - Phi(lower)) for the standard normal CDF Phi, accurate in both tails (lower < upper).

    An interval above 0 is computed as Phi(-lower) - Phi(-upper), so neither CDF value is close to 1; then
    log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b))).
    """
    flip = lower > 0
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp(log_a - log_b).clamp(max=1.0 - 1e-15))


def ode_log_density(
    model: nn.Module,
    process: NoiseSchedule | EDMDiffusion,
    x0: Tensor,
    *,
    labels: Tensor | None = None,
    bins: int | None = None,
    steps: int = 100,
    divergence: Divergence = "auto",
    generator: torch.Generator | None = None,
) -> Tensor:
    """log p(x0) in nats of the probability-flow ODE (Song et al. 2021, section 4.3), per sample: (B,) float64.

    With ``bins``, x0 is dequantised (x0 + u, u ~ U(-delta/2, delta/2)^d) and d log delta is added, so the result
    is a lower bound of the log-probability of x0's bin. See the module docstring.
    """
    denoiser = as_denoiser(model, process)
    dims = x0[0].numel()
    x = x0 if x0.dtype == torch.float64 else x0.float()  # float64 data keep their precision
    if bins is not None:
        delta = 2.0 / (bins - 1)
        uniform = torch.rand(x.shape, generator=generator, device=generator.device if generator else x.device)
        x = x + (uniform.to(x.device) - 0.5) * delta
    exact = divergence == "exact" or (divergence == "auto" and dims <= EXACT_DIVERGENCE_MAX_DIM)
    probe = None if exact else rademacher_like(x, generator)
    sigmas = ode_sigmas(process, steps, discrete=denoiser.discrete_schedule is not None)
    delta_log_p = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):  # Heun (Karras et al. 2022, Algorithm 1) on (x, log p)
        h = float(sigma_next - sigma)
        drift, div = drift_and_divergence(denoiser, x, sigma, labels, probe)
        drift_next, div_next = drift_and_divergence(denoiser, x + h * drift, sigma_next, labels, probe)
        x = x + 0.5 * h * (drift + drift_next)
        delta_log_p += 0.5 * h * (div + div_next)
    prior_std = 1.0 / float(process.input_scale(torch.tensor(float(sigmas[-1]), dtype=torch.float64)))
    flat = x.double().flatten(1)
    log_prior = (-0.5 * (flat / prior_std).square() - math.log(prior_std) - 0.5 * math.log(2 * math.pi)).sum(dim=1)
    log_p = log_prior + delta_log_p
    if bins is not None:
        log_p = log_p + dims * math.log(2.0 / (bins - 1))
    return log_p.cpu()


def ode_sigmas(process: NoiseSchedule | EDMDiffusion, steps: int, *, discrete: bool) -> Tensor:
    """The increasing noise levels sigma_min = s_0 < ... < s_N = sigma_max the ODE is integrated over: Karras'
    rho = 7 grid from the process's sigma_min to the top level the ODE samplers start from with many steps (the
    trained sigma_{T-1}, at most 80; an EDMDiffusion's sigma_max), snapped to the trained levels when ``discrete``,
    at any number of steps; float64."""
    top = min(process.sigma_max, DEFAULT_SIGMA_MAX) if isinstance(process, NoiseSchedule) else process.sigma_max
    grid = step_sigmas(process, steps, "karras", discrete=discrete, sigma_min=process.sigma_min, sigma_max=top)
    return grid[:-1].flip(0).double()  # drop the sampler's final 0, walk upwards


def rademacher_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """A tensor of x's shape with independent entries +-1 (Hutchinson's probe: E[eps eps^T] = I)."""
    return torch.sign(randn_like(x, generator))


def drift_and_divergence(
    denoiser: Denoiser, x: Tensor, sigma: Tensor, labels: Tensor | None, probe: Tensor | None
) -> tuple[Tensor, Tensor]:
    """f = (x - D(x; sigma)) / sigma and div_x f per sample: exact (``probe`` None) or probe^T (df/dx) probe."""
    sigma_value = float(sigma)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        drift = (x - denoiser(x, torch.tensor(sigma_value, device=x.device), labels).float()) / sigma_value
        if probe is not None:
            (vjp,) = torch.autograd.grad(drift, x, probe)
            div = (vjp * probe).flatten(1).sum(dim=1)
        else:
            flat_drift = drift.flatten(1)
            div = torch.zeros(x.shape[0], device=x.device)
            for i in range(flat_drift.shape[1]):
                (grad,) = torch.autograd.grad(flat_drift[:, i].sum(), x, retain_graph=i + 1 < flat_drift.shape[1])
                div = div + grad.flatten(1)[:, i]
    return drift.detach(), div.detach().double()


__all__ = [
    "EXACT_DIVERGENCE_MAX_DIM",
    "LIKELIHOOD_METHODS",
    "Divergence",
    "LikelihoodMethod",
    "log_likelihood",
    "ode_log_density",
    "variational_bound_terms",
]
