"""The reverse process: samplers that turn noise into data with a trained denoiser."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.diffusion.parameterization import broadcast_coefficient, coefficients, x0_eps_from_prediction
from diffusion_playground.diffusion.training_utils import call_model

StepCallback = Callable[[int, Tensor, Tensor], None]  # (t, x_t, x0_hat)


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
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), for any prediction target.

    Starting from x = x_{T-1} ~ N(0, I), for t = T-1, ..., 0:
        1. predict (x0_hat, eps_hat) from model(x_t, t) whatever ``model.prediction_type`` is;
        2. optionally clip x0_hat to [-1, 1] (images);
        3. x_{t-1} = mu_tilde_t(x_t, x0_hat) + sqrt(beta_tilde_t) z,  z ~ N(0, I), no noise at t = 0,
           with the posterior q(x_{t-1} | x_t, x0) = N(mu_tilde_t, beta_tilde_t I) (Ho et al. 2020, eq. 6-7):
           mu_tilde_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t,
           beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
    With eps-prediction and no clipping, step 3 equals Algorithm 2's
    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t) + sigma_t z.

    Args:
        model: a wrapper called as model(x_t, t) or model(x_t, t, y); t is passed as a 0-dim tensor
            (every sample is at the same step), which the wrappers embed once for the whole batch.
        x: the initial noise x_{T-1}, shape (B, ...).
        callback: called after each step as callback(t, x_{t-1}, x0_hat).
    Returns:
        x_0 of x's shape.
    """
    _check_schedule_fits_model(model, noise_schedule)
    schedule = noise_schedule
    steps = range(schedule.T - 1, -1, -1)
    for t_int in tqdm(steps, desc="DDPM sampling", disable=not show_progress, leave=False):
        t = torch.tensor(t_int, device=x.device)  # one step for the whole batch: 0-dim, embedded once
        prediction = call_model(model, x, t, class_labels).float()
        a_t, s_t = coefficients(schedule, t, x)  # (1, 1, ..., 1): broadcast over the batch
        x0_hat, _ = x0_eps_from_prediction(prediction, x, a_t, s_t, model.prediction_type)
        if clip_denoised:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        mean = (
            broadcast_coefficient(schedule.posterior_mean_coef_x0, t, x) * x0_hat
            + broadcast_coefficient(schedule.posterior_mean_coef_xt, t, x) * x
        )
        if t_int > 0:
            std = broadcast_coefficient(schedule.posterior_variance, t, x).sqrt()
            x = mean + std * randn_like(x, generator)
        else:
            x = mean
        if callback is not None:
            callback(t_int, x, x0_hat)
    return x


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) noise of x's shape, drawn on the generator's device (so a CPU generator seeds CUDA runs too)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _check_schedule_fits_model(model: nn.Module, noise_schedule: NoiseSchedule) -> None:
    model_steps = getattr(model, "num_time_steps", None)
    if model_steps is not None and noise_schedule.T > model_steps:
        raise ValueError(
            f"the noise schedule has T={noise_schedule.T} steps but the model was built for "
            f"num_time_steps={model_steps}; build the wrapper with num_time_steps={noise_schedule.T}"
        )


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _class_labels_tensor(
    model: nn.Module, class_labels: Tensor | Sequence[int] | int | None, batch: int, device: torch.device
) -> Tensor | None:
    if class_labels is None:
        return None
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError(
            f"class_labels were given but {type(model).__name__} is not class-conditional; "
            "use TimeAndClassConditionedModel to sample given classes"
        )
    labels = torch.as_tensor(class_labels, device=device, dtype=torch.long)
    if labels.ndim == 0:
        labels = labels.expand(batch)
    if labels.shape != (batch,):
        raise ValueError(f"class_labels must be an int or hold one label per sample ({batch}); got shape {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"class labels must lie in [0, {num_classes}); got values from {labels.min().item()} to {labels.max().item()}"
        )
    return labels


@torch.no_grad()
def generate_samples(
    model: nn.Module,
    noise_schedule: NoiseSchedule,
    shape: Sequence[int],
    num_samples: int | None = None,
    *,
    class_labels: Tensor | Sequence[int] | int | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    show_progress: bool = False,
    return_trajectory: bool = False,
    clip_denoised: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Draw samples from a trained model with DDPM ancestral sampling (Ho et al. 2020, Algorithm 2).

    Args:
        model: a :class:`TimeConditionedModel` or :class:`TimeAndClassConditionedModel` (or any
            module with the same call and a ``prediction_type``), e.g. the EMA model of a training run.
        noise_schedule: the schedule the model was trained with.
        shape: the shape of one sample, e.g. ``(2,)`` or ``(1, 28, 28)``; when ``num_samples`` is None,
            ``shape`` is the full batch shape ``(B, ...)``.
        num_samples: how many samples to draw.
        class_labels: an int (one class for all) or one label per sample; None = unconditional.
        device: where to sample; defaults to the model's device.
        generator: a torch.Generator for reproducible samples.
        return_trajectory: also return every x_t, stacked on the CPU as (T + 1, B, ...), from x_{T-1} noise to x_0.
        clip_denoised: clip the predicted x0 to [-1, 1] at each step (for images in [-1, 1]).

    Returns:
        samples of shape (B, *shape) in data space, or ``(samples, trajectory)``.
    """
    full_shape = tuple(shape) if num_samples is None else (int(num_samples), *tuple(shape))
    if len(full_shape) < 2 or any(int(d) < 1 for d in full_shape):
        raise ValueError(
            f"need a batch of samples of positive size; got shape={tuple(shape)}, num_samples={num_samples} "
            "(pass the shape of one sample and num_samples, e.g. shape=(2,), num_samples=1000)"
        )
    device = torch.device(device) if device is not None else _model_device(model)
    labels = _class_labels_tensor(model, class_labels, full_shape[0], device)
    x = randn_like(torch.empty(full_shape, device=device), generator)
    trajectory: list[Tensor] = [x.cpu()] if return_trajectory else []

    def record(t: int, x_t: Tensor, x0_hat: Tensor) -> None:
        trajectory.append(x_t.cpu())

    was_training = model.training
    model.eval()
    try:
        samples = sample_ddpm(
            model,
            x,
            copy.copy(noise_schedule).to(device),  # a device copy: the caller's schedule stays where it is
            class_labels=labels,
            generator=generator,
            clip_denoised=clip_denoised,
            callback=record if return_trajectory else None,
            show_progress=show_progress,
        )
    finally:
        model.train(was_training)
    if return_trajectory:
        return samples, torch.stack(trajectory)  # (T + 1, B, ...)
    return samples
