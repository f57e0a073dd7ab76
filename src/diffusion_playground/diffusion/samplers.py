"""Few-step samplers on the denoiser view: one function each, one shape of call.

    sample_xxx(denoiser, x, sigmas, *, labels=None, generator=None, callback=None, return_trajectory=False)

``denoiser`` is D(x_sigma, sigma, labels) ~ E[x0 | x_sigma] (see denoiser.py; any trained wrapper becomes one
through ``as_denoiser``), ``x`` the initial state at sigmas[0] (the VE variable x_sigma = x0 + sigma eps, i.e.
the VP noise times sqrt(1 + sigma_max^2)), ``sigmas`` a decreasing 1-D tensor ending in 0 (step_schedules.py).
Each returns x at sigma = 0, i.e. a sample in data space, and with ``return_trajectory`` also the stacked
states (N + 1, B, ...) at every sigma_i.

All of them integrate, or sample around, the probability-flow ODE of the VE view
(Song et al. 2021 "Score-based generative modeling", eq. 13; Karras et al. 2022, eq. 1 with sigma(t) = t, i.e. their
eq. 4 with s(t) = 1), with the score grad log p = (D(x, sigma) - x) / sigma^2 of their eq. 3:

    dx / dsigma = (x - D(x, sigma)) / sigma.

The last step, from sigma_min to 0, is x = D(x, sigma_min) in every one of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from diffusion_playground.checks import check_real
from diffusion_playground.diffusion.denoiser import Denoiser
from diffusion_playground.diffusion.noise_schedule import alpha_bar_from_sigma
from diffusion_playground.diffusion.step_schedules import snap_to_time_steps
from diffusion_playground.diffusion.training_utils import randn_like

SigmaCallback = Callable[[int, float, Tensor, Tensor], None]  # (i, sigma_{i+1}, x_{i+1}, x0_hat_i)
SamplerOutput = Tensor | tuple[Tensor, Tensor]


def to_d(x: Tensor, sigma: float, denoised: Tensor) -> Tensor:
    """The ODE's slope dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, Alg. 1 line 4)."""
    return (x - denoised) / sigma


class _Steps:
    """Bookkeeping shared by every sampler: checks the sigmas, calls the callback, records the trajectory."""

    def __init__(self, x: Tensor, sigmas: Tensor, callback: SigmaCallback | None, return_trajectory: bool) -> None:
        sigmas = torch.as_tensor(sigmas).detach()
        if sigmas.ndim != 1 or not bool(torch.isfinite(sigmas).all()):
            raise ValueError(f"sigmas must be a 1-D tensor of finite noise levels; got shape {tuple(sigmas.shape)}: {sigmas.flatten().tolist()[:8]}")
        if sigmas.numel() < 2 or float(sigmas[-1]) != 0.0 or bool((sigmas[:-1] <= 0).any()):
            raise ValueError(f"sigmas must be a 1-D tensor of N >= 1 positive levels followed by 0; got {sigmas.tolist()[:8]}")
        if bool((sigmas[1:] >= sigmas[:-1]).any()):
            raise ValueError("sigmas must be strictly decreasing (a sampler walks from noise to data)")
        self.sigmas = [float(s) for s in sigmas]  # python floats: the step arithmetic is done in float64
        self.callback = callback
        self.trajectory = [x] if return_trajectory else None

    def __len__(self) -> int:
        return len(self.sigmas) - 1

    def done(self, i: int, x: Tensor, denoised: Tensor) -> None:
        if self.callback is not None:
            self.callback(i, self.sigmas[i + 1], x, denoised)
        if self.trajectory is not None:
            self.trajectory.append(x)

    def output(self, x: Tensor) -> SamplerOutput:
        return (x, torch.stack(self.trajectory)) if self.trajectory is not None else x  # (N + 1, B, ...)


def _sigma(value: float, x: Tensor) -> Tensor:
    """A 0-dim sigma on x's device: one noise level for the whole batch."""
    return torch.tensor(value, device=x.device, dtype=x.dtype)


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: SigmaCallback | None = None,
    return_trajectory: bool = False,
) -> SamplerOutput:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, eq. 1; Alg. 1 without its 2nd-order correction).

    x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D(x_i, sigma_i)) / sigma_i.   Global error O(1/N).
    In this variable Euler *is* deterministic DDIM (Song et al. 2021; Karras et al. 2022, section 3):
    x_{i+1} = D + (sigma_{i+1} / sigma_i) (x_i - D), the same update :func:`sample_ddim` makes at eta = 0.
    """
    steps = _Steps(x, sigmas, callback, return_trajectory)
    for i in range(len(steps)):
        sigma, sigma_next = steps.sigmas[i], steps.sigmas[i + 1]
        denoised = denoiser(x, _sigma(sigma, x), labels)
        x = x + (sigma_next - sigma) * to_d(x, sigma, denoised)
        steps.done(i, x, denoised)
    return steps.output(x)


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: SigmaCallback | None = None,
    return_trajectory: bool = False,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> SamplerOutput:
    """The EDM stochastic sampler (Karras et al. 2022, Algorithm 2): Heun's 2nd-order method plus optional churn.

    For i = 0..N-1 (step numbers are Alg. 2's lines):
        4-6.  gamma_i = min(S_churn / N, sqrt(2) - 1) if sigma_i in [S_tmin, S_tmax] else 0; sigma_hat = (1 + gamma_i) sigma_i,
              x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) S_noise z    (raise the noise level: "churn");
        7-8.  d_i = (x_hat - D(x_hat, sigma_hat)) / sigma_hat,  x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) d_i   (Euler);
        9-11. if sigma_{i+1} != 0: d'_i = (x_{i+1} - D(x_{i+1}, sigma_{i+1})) / sigma_{i+1},
              x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) (d_i + d'_i) / 2   (trapezoidal correction).
    Averaging the slopes at both ends cancels the O(h^2) local error of Euler: global error O(1/N^2), for 2N - 1
    network evaluations. S_churn = 0 (the default) is the deterministic Alg. 1. For a trained model
    (``denoiser.discrete_schedule`` set) sigma_hat is snapped up to a trained level, so the noise added matches the
    level the network sees.
    """
    check_real("s_churn", s_churn, minimum=0.0)
    check_real("s_noise", s_noise, minimum=0.0)
    steps = _Steps(x, sigmas, callback, return_trajectory)
    schedule = getattr(denoiser, "discrete_schedule", None)
    for i in range(len(steps)):
        sigma, sigma_next = steps.sigmas[i], steps.sigmas[i + 1]
        # 1. Churn: raise the noise level from sigma to sigma_hat.
        gamma = min(s_churn / len(steps), math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0 and schedule is not None:
            snapped = float(snap_to_time_steps(schedule, torch.tensor([sigma_hat, 0.0]))[0])
            sigma_hat = max(snapped, sigma)
        if sigma_hat > sigma:
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * randn_like(x, generator)
        # 2. Euler step.
        denoised = denoiser(x, _sigma(sigma_hat, x), labels)
        d = to_d(x, sigma_hat, denoised)
        x_next = x + (sigma_next - sigma_hat) * d
        # 3. Apply 2nd order correction.
        if sigma_next != 0:
            d_prime = to_d(x_next, sigma_next, denoiser(x_next, _sigma(sigma_next, x), labels))
            x_next = x + (sigma_next - sigma_hat) * (d + d_prime) / 2
        x = x_next
        steps.done(i, x, denoised)
    return steps.output(x)


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: SigmaCallback | None = None,
    return_trajectory: bool = False,
    eta: float = 0.0,
) -> SamplerOutput:
    """DDIM (Song et al. 2021 "Denoising Diffusion Implicit Models", eq. 12 with sigma_t(eta) of eq. 16).

    Notation: t -> s is one step (s < t), alpha_bar = 1 / (1 + sigma^2), x_t = sqrt(alpha_bar_t) x_sigma (VP).
        1. x0_hat = D(x, sigma_t), eps_hat = (x - x0_hat) / sigma_t;
        2. sigma_eta = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s)   (eq. 16);
        3. x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma_eta^2) eps_hat + sigma_eta z            (eq. 12);
        4. back to the sampler's variable: x_sigma_s = x_s / sqrt(alpha_bar_s).
    eta = 0 is deterministic (the probability-flow ODE, Euler's method in sigma); eta = 1 is DDPM's ancestral step
    with the posterior q(x_s | x_t, x0) of the (possibly strided) chain.
    """
    check_eta(eta)
    steps = _Steps(x, sigmas, callback, return_trajectory)
    for i in range(len(steps)):
        x, denoised = ddim_step(denoiser, x, steps.sigmas[i], steps.sigmas[i + 1], labels=labels, eta=eta, generator=generator)
        steps.done(i, x, denoised)
    return steps.output(x)


def check_eta(eta: float) -> float:
    """DDIM's eta, which must lie in [0, 1] (0: deterministic, 1: DDPM's posterior variance; Song et al. 2021, eq. 16)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like); got {eta}")
    return eta


def ddim_step(
    denoiser: Denoiser,
    x: Tensor,
    sigma_t: float,
    sigma_s: float,
    *,
    labels: Tensor | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One step t -> s of :func:`sample_ddim` (steps 1-4 of its docstring) on x = x_sigma_t: (x_sigma_s, x0_hat).
    With eta = 1 it draws from q(x_s | x_t, x0_hat), the DDPM posterior (Ho et al. 2020, eq. 6-7) of the chain
    through sigma_t and sigma_s; the inpainting loop (editing.py) walks it with its replacement step in between."""
    alpha_bar_t, alpha_bar_s = alpha_bar_from_sigma(sigma_t), alpha_bar_from_sigma(sigma_s)
    # 1. Predict x0 and eps.
    denoised = denoiser(x, _sigma(sigma_t, x), labels)
    eps_hat = (x - denoised) / sigma_t
    # 2. The std of the fresh noise (eq. 16).
    sigma_eta = eta * math.sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s))
    # 3. The DDIM update in the VP variable (eq. 12).
    x_s = math.sqrt(alpha_bar_s) * denoised + math.sqrt(max(1 - alpha_bar_s - sigma_eta**2, 0.0)) * eps_hat
    if sigma_eta > 0:
        x_s = x_s + sigma_eta * randn_like(x, generator)
    # 4. Back to x_sigma.
    return x_s / math.sqrt(alpha_bar_s), denoised


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: SigmaCallback | None = None,
    return_trajectory: bool = False,
) -> SamplerOutput:
    """DPM-Solver++(2M) (Lu et al. 2022 "DPM-Solver++", Algorithm 2), multistep 2nd order in the data prediction.

    VP view: alpha_t = sqrt(alpha_bar), sigma^VP_t = sqrt(1 - alpha_bar), lambda_t = log(alpha_t / sigma^VP_t) = -log(sigma_t).
    For step i (t_{i-1} -> t_i), h_i = lambda_{t_i} - lambda_{t_{i-1}}, r_i = h_{i-1} / h_i:
        1. x0_i = D(x, sigma_{t_{i-1}});
        2. D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1}   (a 2nd-order extrapolation; D_i = x0_i on the first step
           and on the last, to sigma = 0, where h is infinite);
        3. x_{t_i} = (sigma^VP_{t_i} / sigma^VP_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i      (the VP update);
    computed on x_t = alpha_t x_sigma and divided back by alpha_{t_i}. One network evaluation per step, O(1/N^2).
    """
    steps = _Steps(x, sigmas, callback, return_trajectory)
    previous_denoised, previous_h = None, None
    for i in range(len(steps)):
        sigma_t, sigma_s = steps.sigmas[i], steps.sigmas[i + 1]
        alpha_t, alpha_s = math.sqrt(alpha_bar_from_sigma(sigma_t)), math.sqrt(alpha_bar_from_sigma(sigma_s))
        sigma_vp_t, sigma_vp_s = sigma_t * alpha_t, sigma_s * alpha_s  # sqrt(1 - alpha_bar)
        # 1. Data prediction.
        denoised = denoiser(x, _sigma(sigma_t, x), labels)
        if sigma_s == 0:
            x = denoised  # lambda_s = inf: the update is x0 itself
        else:
            h = math.log(sigma_t) - math.log(sigma_s)  # lambda_s - lambda_t
            # 2. Multistep extrapolation of the data prediction.
            d_i = denoised
            if previous_denoised is not None:
                r = previous_h / h
                d_i = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * previous_denoised
            # 3. The exponential-integrator update in the VP variable.
            x_t = alpha_t * x
            x_s = (sigma_vp_s / sigma_vp_t) * x_t - alpha_s * math.expm1(-h) * d_i
            x = x_s / alpha_s
            previous_h = h
        previous_denoised = denoised
        steps.done(i, x, denoised)
    return steps.output(x)


__all__ = ["SigmaCallback", "check_eta", "ddim_step", "sample_ddim", "sample_dpmpp_2m", "sample_euler", "sample_heun", "to_d"]
