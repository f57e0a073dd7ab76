"""The reverse process: samplers that turn noise into data with a trained denoiser.

:func:`sample_ddpm` (DDPM ancestral sampling, t-view) lives here; the few-step samplers on the denoiser
view are in samplers.py. :func:`generate_samples`, the public entry point, dispatches to either through
the one registry :data:`SAMPLERS`.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffusion_playground.checks import check_device, check_integer, check_real, labels_tensor
from diffusion_playground.diffusion.denoiser import Denoiser, as_denoiser, as_time_model
from diffusion_playground.diffusion.edm import EDMDiffusion
from diffusion_playground.diffusion.guidance import ClassifierFreeGuidance
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule, sigma_from_alpha_bar, vp_scale
from diffusion_playground.diffusion.parameterization import check_prediction_type, coefficients, x0_eps_from_prediction
from diffusion_playground.diffusion.samplers import check_eta, sample_ddim, sample_dpmpp_2m, sample_euler, sample_heun
from diffusion_playground.diffusion.step_schedules import (
    StepSchedule,
    check_num_steps,
    check_sigma_grid,
    sigmas_at_time_steps,
    snap_to_time_steps,
    step_sigmas,
    strided_time_steps,
    uniform_time_steps,
)
from diffusion_playground.diffusion.thresholding import ThresholdedDenoiser, check_percentile, threshold_x0
from diffusion_playground.diffusion.training_utils import call_model, randn_like

StepCallback = Callable[[int, Tensor, Tensor], None]  # (t, x_t, x0_hat)
SamplerName = Literal["ddpm", "ddim", "euler", "heun", "dpmpp_2m"]


@torch.no_grad()
def sample_ddpm(
    model: nn.Module,
    x: Tensor,
    noise_schedule: NoiseSchedule,
    *,
    class_labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
    callback: StepCallback | None = None,
    show_progress: bool = False,
    time_steps: Sequence[int] | Tensor | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), for any prediction target, on all or strided steps.

    Starting from x = x_{T-1} ~ N(0, I) for t = T-1, ..., 0, or from x = x_{t_0} ~ N(0, I) on a decreasing subset
    t_0 > ... > t_{N-1} (``time_steps``; :func:`generate_samples` with ``steps`` passes :func:`strided_time_steps`,
    whose t_0 is the trained step nearest to sigma_max, by default min(sigma_{T-1}, 80): e.g. t_0 = 930 of 1000
    for ``LinearNoiseSchedule.scaled(1000)``, not T-1):
        1. predict (x0_hat, eps_hat) from model(x_t, t) whatever ``model.prediction_type`` is;
        2. optionally clip x0_hat to [-1, 1] (images);
        3. x_{t-1} = mu_tilde_t(x_t, x0_hat) + sqrt(beta_tilde_t) z,  z ~ N(0, I), no noise at t = 0,
           with the posterior q(x_{t-1} | x_t, x0) = N(mu_tilde_t, beta_tilde_t I) (Ho et al. 2020, eq. 6-7):
           mu_tilde_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t,
           beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
    With eps-prediction and no clipping, step 3 equals Algorithm 2's
    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t) + sigma_t z.
    On a strided subset, step t -> s uses the posterior of the chain with beta = 1 - alpha_bar_t / alpha_bar_s
    (Song et al. 2021, DDIM, eq. 16 with eta = 1; Nichol & Dhariwal 2021, section 4), which for s = t - 1 is the above.
    x is the process's own x_t = a_t x0 + s_t eps: for a RectifiedFlow the VP-equivalent posterior is rescaled to it
    (:func:`strided_posterior`), so DDPM samples a flow model through the Gaussian chain with its marginals.

    Args:
        model: a wrapper called as model(x_t, t) or model(x_t, t, y); t is passed as a 0-dim tensor
            (every sample is at the same step), which the wrappers embed once for the whole batch.
        x: the initial noise x_{t_0} (x_{T-1} when ``time_steps`` is None), shape (B, ...).
        callback: called after each step as callback(t, x_{t-1}, x0_hat).
        time_steps: the decreasing trained steps to visit (e.g. :func:`uniform_time_steps`); None = all T.
        return_trajectory: also return the states (N + 1, B, ...) from x_{t_0} to x_0.
    Returns:
        x_0 of x's shape, or ``(x_0, trajectory)``.
    """
    _check_schedule_fits_model(model, noise_schedule)
    schedule = noise_schedule
    steps = _check_ddpm_time_steps(time_steps, schedule.T)
    posterior = strided_posterior(schedule, steps)  # (3, N) float32: coef_x0, coef_xt, variance
    trajectory = [x] if return_trajectory else None
    for i, t_int in enumerate(tqdm(steps, desc="DDPM sampling", disable=not show_progress, leave=False)):
        t = torch.tensor(t_int, device=x.device)  # one step for the whole batch: 0-dim, embedded once
        prediction = call_model(model, x, t, class_labels).float()
        a_t, s_t = coefficients(schedule, t, x)  # (1, 1, ..., 1): broadcast over the batch
        x0_hat, _ = x0_eps_from_prediction(prediction, x, a_t, s_t, model.prediction_type)
        if clip_denoised:
            x0_hat = threshold_x0(x0_hat)  # static clipping to [-1, 1] (thresholding.py)
        x = posterior_step(x, x0_hat, posterior[:, i], generator)
        if callback is not None:
            callback(t_int, x, x0_hat)
        if trajectory is not None:
            trajectory.append(x)
    return (x, torch.stack(trajectory)) if trajectory is not None else x


def _check_ddpm_time_steps(time_steps: Sequence[int] | Tensor | None, num_time_steps: int) -> list[int]:
    if time_steps is None:
        return list(range(num_time_steps - 1, -1, -1))
    steps = [check_integer("time_steps", t) for t in torch.as_tensor(time_steps).reshape(-1)]  # 40.7 is refused
    if not steps or any(b >= a for a, b in zip(steps, steps[1:])) or steps[-1] < 0 or steps[0] >= num_time_steps:
        raise ValueError(
            f"time_steps must be a non-empty strictly decreasing sequence in [0, {num_time_steps}); got {steps[:8]}"
        )
    return steps


def posterior_step(x_t: Tensor, x0_hat: Tensor, coefficients: Tensor, generator: torch.Generator | None) -> Tensor:
    """x_s ~ q(x_s | x_t, x0_hat) = N(coef_x0 x0_hat + coef_xt x_t, variance I) (Ho et al. 2020, eq. 6-7), given one
    column (coef_x0, coef_xt, variance) of :func:`strided_posterior`; no noise when the variance is 0 (the last step)."""
    coef_x0, coef_xt, variance = (float(c) for c in coefficients)
    mean = coef_x0 * x0_hat + coef_xt * x_t
    return mean + math.sqrt(variance) * randn_like(mean, generator) if variance > 0 else mean


def strided_posterior(schedule: NoiseSchedule, steps: list[int]) -> Tensor:
    """Coefficients of q(x_s | x_t, x0) for consecutive visited steps t -> s (s = next visited step, or "before 0").

    With alpha_bar_s for s < 0 equal to 1 and beta = 1 - alpha_bar_t / alpha_bar_s (Ho et al. 2020, eq. 7):
    coef_x0 = sqrt(alpha_bar_s) beta / (1 - alpha_bar_t), coef_xt = sqrt(1 - beta) (1 - alpha_bar_s) / (1 - alpha_bar_t),
    variance = beta (1 - alpha_bar_s) / (1 - alpha_bar_t), for the VP x_t. A process whose x_t is c_t times the VP x_t
    of the same sigma (c = s(sigma) sqrt(1 + sigma^2) with s = ``schedule.input_scale``: 1 for VP,
    sqrt((1 - t)^2 + t^2) for rectified flow) has coef_x0 * c_s, coef_xt * c_s / c_t, variance * c_s^2.
    Computed in float64; shape (3, N).
    """
    alpha_bars = schedule.alpha_bars_float64
    alpha_bar_t = alpha_bars[steps]  # (N,)
    alpha_bar_s = torch.cat([alpha_bars[steps[1:]], torch.ones(1, dtype=torch.float64)])  # (N,)
    beta = 1.0 - alpha_bar_t / alpha_bar_s
    sigma_t, sigma_s = sigma_from_alpha_bar(alpha_bar_t), sigma_from_alpha_bar(alpha_bar_s)  # sigma_s = 0 before step 0
    c_t, c_s = (schedule.input_scale(sigma) / vp_scale(sigma) for sigma in (sigma_t, sigma_s))  # (N,): 1 for VP
    coef_x0 = c_s * alpha_bar_s.sqrt() * beta / (1.0 - alpha_bar_t)
    coef_xt = (c_s / c_t) * (1.0 - beta).sqrt() * (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t)
    variance = c_s**2 * beta * (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t)
    return torch.stack([coef_x0, coef_xt, variance]).float()


def _check_schedule_fits_model(model: nn.Module, noise_schedule: NoiseSchedule) -> None:
    if hasattr(model, "prediction_type"):  # a wrapper (a Denoiser has none)
        check_prediction_type(model.prediction_type, noise_schedule)
    model_steps = getattr(model, "num_time_steps", None)
    if model_steps is not None and noise_schedule.T > model_steps:
        raise ValueError(
            f"the noise schedule has T={noise_schedule.T} steps but the model was built for "
            f"num_time_steps={model_steps}; build the wrapper with num_time_steps={noise_schedule.T}"
        )


def _check_continuous_sampling(model: nn.Module, sampler: str) -> None:
    """What sampling a continuous-sigma process (EDMDiffusion) needs: a denoiser of any sigma and a sampler of the
    sigma view (its grid, Karras' with a number of steps, is checked by ``step_sigmas``)."""
    if not isinstance(model, Denoiser):
        raise TypeError(
            f"an EDMDiffusion samples a denoiser called as D(x, sigma), such as EDMPreconditioner; got "
            f"{type(model).__name__} (a wrapper of integer steps samples with the NoiseSchedule it was trained with)"
        )
    if sampler == "ddpm":
        raise ValueError(
            "sampler='ddpm' walks the trained steps of a discrete chain and an EDMDiffusion has none; use "
            "'heun' (Karras et al. 2022), 'euler', 'dpmpp_2m' or 'ddim'"
        )


def non_finite_count(samples: Tensor) -> int:
    """How many samples (rows of a (B, ...) batch) hold a NaN or an infinite value."""
    return int((~torch.isfinite(samples.flatten(1))).any(dim=1).sum())


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's floating-point weights: float32 unless the user converted it (``model.double()``)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` lives: its first parameter's device, else its first buffer's, else the CPU."""
    tensor = next(model.parameters(), None)
    tensor = tensor if tensor is not None else next(model.buffers(), None)  # e.g. the OptimalDenoiser's data
    return tensor.device if tensor is not None else torch.device("cpu")


def class_labels_tensor(
    model: nn.Module, class_labels: Tensor | Sequence[int] | int | None, batch: int, device: torch.device
) -> Tensor | None:
    """``class_labels`` (an int for all, or one per sample) as a (batch,) long tensor, checked against the model."""
    if class_labels is None:
        return None
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError(
            f"class_labels were given but {type(model).__name__} is not class-conditional; "
            "use TimeAndClassConditionedModel to sample given classes"
        )
    labels = labels_tensor("class_labels", class_labels, num_classes, device)
    if labels.ndim == 0:
        labels = labels.expand(batch)
    if labels.shape != (batch,):
        raise ValueError(f"class_labels must be an int or hold one label per sample ({batch}); got shape {tuple(labels.shape)}")
    return labels


def check_guidance_labels(guidance_scale: float, labels: Tensor | None) -> None:
    """Classifier-free guidance needs the classes it guides towards: a ValueError for w != 0 without labels."""
    if guidance_scale != 0.0 and labels is None:
        raise ValueError(f"guidance_scale={guidance_scale} needs class_labels to guide towards (and a class-conditional model)")


@dataclass(frozen=True)
class SamplerSpec:
    """How :func:`generate_samples` runs one sampler: its function, default step spacing and NFE per step count."""

    function: Callable[..., Tensor | tuple[Tensor, Tensor]]
    step_schedule: StepSchedule  # default spacing of the steps when ``steps`` is given
    nfe: Callable[[int], int]  # network evaluations for N steps


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(sample_ddpm, "uniform", lambda n: n),  # Ho et al. 2020, Alg. 2 (strided: eq. 16 of DDIM, eta=1)
    "ddim": SamplerSpec(sample_ddim, "uniform", lambda n: n),  # Song et al. 2021, eq. 12
    "euler": SamplerSpec(sample_euler, "uniform", lambda n: n),  # probability-flow ODE, Euler (= DDIM, eta = 0)
    "heun": SamplerSpec(sample_heun, "karras", lambda n: 2 * n - 1),  # Karras et al. 2022, Alg. 2
    "dpmpp_2m": SamplerSpec(sample_dpmpp_2m, "log_snr", lambda n: n),  # Lu et al. 2022, Alg. 2
}


def check_sampler(sampler: str) -> SamplerSpec:
    """The registry entry of ``sampler``, or a ValueError listing the choices."""
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {tuple(SAMPLERS)}; got {sampler!r}")
    return SAMPLERS[sampler]


def sampler_sigmas(
    model: nn.Module,
    noise_schedule: NoiseSchedule | EDMDiffusion,
    sampler: SamplerName,
    steps: int | None,
    *,
    step_schedule: StepSchedule | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> Tensor:
    """The grid sigma_0 > ... > sigma_N = 0 that :func:`generate_samples` walks with these arguments: each sampler's
    default spacing (``SAMPLERS[sampler].step_schedule``; log_snr where an EDMDiffusion has no uniform t), snapped to
    the trained levels of a trained wrapper; ddpm's strided trained steps. Its length - 1 is the steps walked (a
    snapped grid can have fewer than asked)."""
    spec = check_sampler(sampler)
    continuous = isinstance(noise_schedule, EDMDiffusion)
    if continuous:
        _check_continuous_sampling(model, sampler)  # e.g. ddpm, which needs trained steps
    if sampler == "ddpm":
        time_steps = uniform_time_steps(noise_schedule.T, noise_schedule.T) if steps is None else (
            strided_time_steps(noise_schedule, steps, sigma_min, sigma_max))  # fmt: skip
        return sigmas_at_time_steps(noise_schedule, time_steps)
    spacing = step_schedule or ("log_snr" if continuous and spec.step_schedule == "uniform" else spec.step_schedule)
    discrete = not isinstance(model, Denoiser) or model.discrete_schedule is not None
    return step_sigmas(noise_schedule, steps, spacing, discrete=discrete, sigma_min=sigma_min, sigma_max=sigma_max)


def sampling_denoiser(
    model: nn.Module,
    noise_schedule: NoiseSchedule | EDMDiffusion,
    guidance_scale: float = 0.0,
    clip_denoised: bool = False,
    dynamic_threshold: float | None = None,
) -> Denoiser:
    """The denoiser a sampler walks: ``model`` in the denoiser view, then classifier-free guidance with weight
    ``guidance_scale`` (if not 0), then clipping or dynamic thresholding of x0_hat (after guidance: the guided x0
    is what must stay in range)."""
    denoiser = as_denoiser(model, noise_schedule)
    if guidance_scale != 0.0:
        denoiser = ClassifierFreeGuidance(denoiser, guidance_scale)
    if clip_denoised or dynamic_threshold is not None:
        denoiser = ThresholdedDenoiser(denoiser, dynamic_threshold)
    return denoiser


@torch.no_grad()
def generate_samples(
    model: nn.Module,
    noise_schedule: NoiseSchedule | EDMDiffusion,
    shape: Sequence[int],
    num_samples: int | None = None,
    *,
    sampler: SamplerName = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    guidance_scale: float = 0.0,
    class_labels: Tensor | Sequence[int] | int | None = None,
    step_schedule: StepSchedule | None = None,
    s_churn: float = 0.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    show_progress: bool = False,
    return_trajectory: bool = False,
    clip_denoised: bool = False,
    dynamic_threshold: float | None = None,
    sigmas: Tensor | Sequence[float] | None = None,
    x_start: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Draw samples with any sampler from a trained model, the exact :class:`OptimalDenoiser`, or any denoiser.

    Every sampler starts from the same VP noise z ~ N(0, I) (so one generator seed gives the same start for all
    of them), taken as x_t at the first level of its grid. With ``steps=None`` that is t = T-1 and every trained
    step is walked. With ``steps`` given, every sampler starts at ``sigma_max`` (:func:`~diffusion_playground.
    diffusion.step_schedules.sigma_range`), not at T-1: by default 20 for a few-step grid (at most 15 steps; not
    ddpm), else min(sigma_{T-1}, 80); on trained levels, the step nearest to it (for 80: t = 930 of 1000, 183 of
    200, 89 of 100 for ``LinearNoiseSchedule.scaled(T)``). (Only ddpm/ddim/euler asked for more steps than the
    trained steps below the default sigma_max start at T-1.) The sigma-view samplers step x_sigma = z / s(sigma)
    from that first sigma, with the process's input scale s (``noise_schedule.input_scale``): z sqrt(1 + sigma^2)
    for a VP schedule, z (1 + sigma) for a :class:`~diffusion_playground.diffusion.rectified_flow.RectifiedFlow`,
    whose x_t = z is then the flow's state. An :class:`~diffusion_playground.diffusion.edm.EDMDiffusion` has no time
    steps: its denoiser takes any sigma, so ``steps`` (or ``sigmas``) is required and the grid is continuous
    (unsnapped), Karras' rho = 7 one for heun over the process's [sigma_min, sigma_max] from 16 steps on
    (``sampler="heun", steps=18`` is Karras et al.'s deterministic sampler); every sampler but ddpm runs on it.

    Args:
        model: a :class:`TimeConditionedModel` or :class:`TimeAndClassConditionedModel` (or any module with the
            same call and a ``prediction_type``), e.g. the EMA model of a training run; or a
            :class:`~diffusion_playground.diffusion.denoiser.Denoiser` such as ``OptimalDenoiser(data)``.
        noise_schedule: the schedule the model was trained with, e.g. ``LinearNoiseSchedule(1000)``,
            ``RectifiedFlow(1000)`` or ``EDMDiffusion()`` (for a denoiser: the noise levels to walk).
        shape: the shape of one sample, e.g. ``(2,)`` or ``(1, 28, 28)``; when ``num_samples`` is None,
            ``shape`` is the full batch shape ``(B, ...)``.
        num_samples: how many samples to draw.
        sampler: ``"ddpm"`` (ancestral, Ho et al. 2020), ``"ddim"`` (Song et al. 2021), ``"euler"`` (probability-flow
            ODE), ``"heun"`` (EDM, Karras et al. 2022, Alg. 2) or ``"dpmpp_2m"`` (DPM-Solver++(2M), Lu et al. 2022).
        steps: the number of sampling steps N (None = all T trained steps). Network evaluations: N, except
            ``heun``: 2N - 1. ``SAMPLERS[sampler].nfe(N)`` gives it.
        eta: DDIM's stochasticity in [0, 1] (0 = deterministic); only for ``sampler="ddim"``.
        guidance_scale: classifier-free guidance weight w >= 0 (Ho & Salimans 2022): the denoiser becomes
            (1 + w) D(x, sigma, y) - w D(x, sigma, null); needs ``class_labels`` and a class-conditional model.
            0 = the plain conditional model. Diffusers' ``guidance_scale`` is 1 + w (its 1 = no guidance): its 7.5
            is ``guidance_scale=6.5`` here, and 7.5 here is its 8.5.
        class_labels: an int (one class for all) or one label per sample; None = unconditional.
        step_schedule: ``"uniform"`` (evenly spaced t), ``"karras"`` (Karras et al.'s rho = 7 sigmas) or ``"log_snr"``
            (evenly spaced log sigma, DPM-Solver's); default per sampler: uniform for ddpm, ddim and euler (log_snr
            on an EDMDiffusion, which has no t), karras for heun, log_snr for dpmpp_2m (chosen by measurement, the
            samplers README). For a trained model karras / log_snr sigmas are snapped to trained steps (and
            repeats dropped), since the wrappers take integer t.
        s_churn: EDM's S_churn for ``sampler="heun"`` (0 = deterministic).
        sigma_min, sigma_max: the noise levels the ``steps`` span (with ``steps`` only; see
            :func:`~diffusion_playground.diffusion.step_schedules.sigma_range`). Defaults: with at most 15 steps
            (``FEW_STEPS``) [0.1, 20] for ddim, euler, heun and dpmpp_2m (a few-step grid cannot afford steps where
            the data are almost clean or almost pure noise: measured in the samplers README); otherwise, and for
            ddpm, the schedule's sigma_0 and its sigma_{T-1} capped at 80 (Karras et al. 2022), since an eps-model's
            x0 estimate multiplies its error by sigma. Both are clipped to the trained range.
        sigmas: instead of ``steps`` / ``step_schedule`` / ``sigma_min`` / ``sigma_max``, the whole grid
            sigma_0 > ... > sigma_N = 0 to walk (e.g. ``karras_sigmas(10, 0.05, 10.0)``); not for ddpm. For a trained
            wrapper it is snapped to the trained levels (repeats dropped), as the built-in grids are.
        device: where to sample; defaults to the model's device.
        generator: a torch.Generator for reproducible samples.
        return_trajectory: also return the states from the noise to the samples, stacked on the CPU as
            (N + 1, B, ...), on the process's scale x_t = s(sigma) x_sigma (the DDPM x_t): x_sigma / sqrt(1 + sigma^2)
            for a VP schedule, x_sigma / (1 + sigma) = (1 - t) x0_hat + t eps_hat for a RectifiedFlow.
        clip_denoised: clip the predicted x0 to [-1, 1] at every step, whatever the sampler (for data in [-1, 1],
            i.e. images; see :mod:`~diffusion_playground.diffusion.thresholding` for why eps-models need it).
        dynamic_threshold: instead of static clipping, Imagen's dynamic thresholding at this percentile of |x0_hat|
            (Saharia et al. 2022, section 2.3; e.g. 0.995).
        x_start: instead of the noise z, the state x_t at the first level of the grid, on the process's scale (as
            ``sample_xt`` makes it), of the full batch shape ``shape`` with ``num_samples=None``: e.g. a noised
            image, which is SDEdit (:func:`~diffusion_playground.diffusion.editing.sdedit`).

    Returns:
        samples of shape (B, *shape) in data space, or ``(samples, trajectory)``.
    """
    spec = check_sampler(sampler)
    if not isinstance(noise_schedule, (NoiseSchedule, EDMDiffusion)):
        raise TypeError(
            f"noise_schedule must be the NoiseSchedule (or EDMDiffusion) the model was trained with; got "
            f"{type(noise_schedule).__name__} (categorical and multimodal processes sample with their own process.sample(...))"
        )
    continuous = isinstance(noise_schedule, EDMDiffusion)  # any sigma in its range, no time steps
    if continuous:
        _check_continuous_sampling(model, sampler)
    if sigmas is not None:
        if sampler == "ddpm":
            raise ValueError("sampler='ddpm' walks trained steps, not a sigma grid; pass steps (and sigma_min / sigma_max)")
        if steps is not None or step_schedule is not None or sigma_min is not None or sigma_max is not None:
            raise ValueError("sigmas is the whole grid: pass it without steps, step_schedule, sigma_min or sigma_max")
        sigmas = check_sigma_grid(sigmas)
    if steps is not None:
        check_num_steps(steps)
    elif sigma_min is not None or sigma_max is not None:
        raise ValueError("sigma_min / sigma_max set the range of a few-step grid; pass steps as well (steps=None walks every trained step)")
    check_eta(check_real("eta", eta))
    if eta != 0.0 and sampler != "ddim":
        raise ValueError(f"eta is DDIM's parameter; got eta={eta} with sampler={sampler!r} (use sampler='ddim')")
    if s_churn != 0.0 and sampler != "heun":
        raise ValueError(f"s_churn is the EDM (heun) sampler's parameter; got s_churn={s_churn} with sampler={sampler!r}")
    check_percentile(dynamic_threshold)  # before any work: the same check ThresholdedDenoiser makes
    guidance_scale = check_real("guidance_scale", guidance_scale, minimum=0.0)  # NaN would make every sample NaN
    s_churn = check_real("s_churn", s_churn, minimum=0.0)
    full_shape = tuple(shape) if num_samples is None else (check_integer("num_samples", num_samples, minimum=1), *tuple(shape))
    full_shape = tuple(check_integer("shape", d) for d in full_shape)  # 2.7 is refused, not truncated
    if len(full_shape) < 2 or any(d < 1 for d in full_shape):
        raise ValueError(
            f"need a batch of samples of positive size; got shape={tuple(shape)}, num_samples={num_samples} "
            "(pass the shape of one sample and num_samples, e.g. shape=(2,), num_samples=1000)"
        )
    device = check_device(device) if device is not None else model_device(model)
    labels = class_labels_tensor(model, class_labels, full_shape[0], device)
    check_guidance_labels(guidance_scale, labels)
    schedule = copy.copy(noise_schedule).to(device)  # a device copy: the caller's schedule stays where it is
    if not continuous:
        _check_schedule_fits_model(model, schedule)
    if x_start is None:
        z = randn_like(torch.empty(full_shape, device=device, dtype=parameter_dtype(model)), generator)  # VP noise x_t at the first step
    elif not isinstance(x_start, Tensor) or tuple(x_start.shape) != full_shape:
        got = tuple(x_start.shape) if isinstance(x_start, Tensor) else type(x_start).__name__
        raise ValueError(f"x_start must be a tensor of the batch shape {full_shape} (pass shape=x_start.shape and num_samples=None); got {got}")
    else:
        z = x_start.to(device=device, dtype=parameter_dtype(model))

    was_training = model.training
    model.eval()
    try:
        denoiser = sampling_denoiser(model, schedule, guidance_scale, clip_denoised, dynamic_threshold)
        if sampler == "ddpm":
            plain = guidance_scale == 0.0 and not clip_denoised and dynamic_threshold is None
            time_model = as_time_model(model if plain else denoiser, schedule)
            if step_schedule not in (None, "uniform"):
                raise ValueError(f"sampler='ddpm' walks evenly spaced trained steps; step_schedule must be 'uniform', got {step_schedule!r}")
            time_steps = None if steps is None else strided_time_steps(schedule, steps, sigma_min, sigma_max)
            result = sample_ddpm(
                time_model, z, schedule, class_labels=labels, generator=generator,
                show_progress=show_progress, time_steps=time_steps, return_trajectory=return_trajectory,
            )  # fmt: skip
        else:
            if sigmas is None:
                sigmas = sampler_sigmas(denoiser, schedule, sampler, steps, step_schedule=step_schedule,
                                        sigma_min=sigma_min, sigma_max=sigma_max)  # fmt: skip
            elif denoiser.discrete_schedule is not None:  # a trained wrapper: on its trained levels, as every grid
                sigmas = snap_to_time_steps(schedule, sigmas)
            options = {"eta": eta} if sampler == "ddim" else {"s_churn": s_churn} if sampler == "heun" else {}
            with tqdm(total=len(sigmas) - 1, desc=f"{sampler} sampling", disable=not show_progress, leave=False) as bar:
                result = spec.function(
                    denoiser, z / schedule.input_scale(sigmas[0]).item(), sigmas.to(device), labels=labels, generator=generator,
                    return_trajectory=return_trajectory, callback=lambda *_: bar.update(1), **options,
                )  # fmt: skip
            if return_trajectory:
                samples, trajectory = result
                scale = schedule.input_scale(sigmas).to(device).reshape(-1, *([1] * len(full_shape)))  # (N + 1, 1, ..., 1)
                result = samples, trajectory * scale
    finally:
        model.train(was_training)
    samples = result[0] if return_trajectory else result
    bad = non_finite_count(samples)
    if bad:  # e.g. a huge guidance_scale, or a model that diverged: say so rather than return NaN quietly
        warnings.warn(f"{bad} of {samples.shape[0]} samples contain NaN or infinite values", RuntimeWarning, stacklevel=3)
    if return_trajectory:
        return samples, result[1].cpu()  # (N + 1, B, ...)
    return result

