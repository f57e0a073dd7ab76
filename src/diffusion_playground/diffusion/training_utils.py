"""The forward process q(x_t | x_0) and the denoising loss that trains a model to invert it."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.diffusion.parameterization import (
    check_prediction_type,
    coefficients,
    target_from_x0_eps,
)

LossWeighting = Literal["uniform", "min_snr"]


def q_sample(x0: Tensor, noise_schedule: NoiseSchedule, t: Tensor, noise: Tensor) -> Tensor:
    """Draw x_t ~ q(x_t | x_0) in closed form (Ho et al. 2020, eq. 4).

    x_t = a_t x_0 + s_t eps,   eps ~ N(0, I),
    with (a_t, s_t) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for a VP schedule, (1 - t, t) for rectified flow.
    """
    a_t, s_t = coefficients(noise_schedule, t, x0)  # (B, 1, ..., 1)
    return a_t * x0 + s_t * noise


def sample_time_steps(
    batch_size: int, noise_schedule: NoiseSchedule, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """The training steps t of a batch, from the schedule's time distribution: Uniform{0, ..., T-1} (Ho et al. 2020,
    Algorithm 1, line 3) unless the process says otherwise (:meth:`RectifiedFlow.sample_time_steps`)."""
    return noise_schedule.sample_time_steps(batch_size, device, generator)


def sample_xt(
    x0: Tensor,
    noise_schedule: NoiseSchedule,
    t: Tensor | int | None = None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Corrupt a clean batch: returns ``(x_t, noise, t)``.

    Args:
        x0: clean data of shape (B, ...).
        noise_schedule: the schedule giving (a_t, s_t).
        t: integer step(s) in [0, T): a (B,) tensor, one int for the whole batch, or None to draw
            t per sample from the schedule's time distribution (uniform, or e.g. a RectifiedFlow's logit-normal).
        generator: optional torch.Generator for reproducible draws.
    """
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape (batch, ...); got a tensor of shape {tuple(x0.shape)}")
    batch = x0.shape[0]
    if t is None:
        t = sample_time_steps(batch, noise_schedule, x0.device, generator)
    else:
        t = torch.as_tensor(t, device=x0.device)  # checked as given: 2.7 is refused, not truncated to 2
        if t.ndim == 0:
            t = t.expand(batch)
        check_time_steps(t, noise_schedule.T, batch)
        t = t.long()
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    return q_sample(x0, noise_schedule, t, noise), noise, t


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) noise of x's shape, drawn on the generator's device (so a CPU generator seeds CUDA runs too)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)); got {generator!r}")
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def check_time_steps(t: Tensor, num_time_steps: int, batch: int) -> None:
    """Raise a ValueError unless t is a (batch,) integer tensor with values in [0, num_time_steps)."""
    if t.shape != (batch,):
        raise ValueError(f"t must have shape ({batch},) to match the batch; got {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"t must be an integer tensor of time steps; got dtype {t.dtype}")
    if batch and (t.min() < 0 or t.max() >= num_time_steps):
        raise ValueError(
            f"time steps must lie in [0, {num_time_steps}); got values from {t.min().item()} to {t.max().item()}"
        )


def loss_weights(
    noise_schedule: NoiseSchedule,
    t: Tensor,
    prediction_type: str,
    weighting: LossWeighting = "uniform",
    min_snr_gamma: float = 5.0,
) -> Tensor:
    """Per-sample weights w(t) of the squared error on the network's own target.

    ``uniform``: w = 1, Ho et al.'s simplified objective L_simple (eq. 14) for eps-prediction.
    ``min_snr``: Min-SNR-gamma (Hang et al. 2023, eq. 8) weights the x0-space error by
    min(snr_t, gamma); expressed on each target that is
        eps: min(snr, gamma) / snr,   x0: min(snr, gamma),   v: min(snr, gamma) / (snr + 1),
        flow: min(snr, gamma) / (1 + sqrt(snr))^2   (x0 = x_t - t v, and t = 1 / (1 + sqrt(snr)) on the straight path).
    """
    if weighting == "uniform":
        return torch.ones(t.shape, device=t.device)
    if weighting != "min_snr":
        raise ValueError(f"weighting must be 'uniform' or 'min_snr'; got {weighting!r}")
    if min_snr_gamma <= 0:
        raise ValueError(f"min_snr_gamma must be > 0; got {min_snr_gamma}")
    snr = noise_schedule.snr.to(t.device)[t]
    clipped = snr.clamp(max=min_snr_gamma)
    by_target = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1.0), "flow": clipped / (1.0 + snr.sqrt()) ** 2}
    if prediction_type not in by_target:
        raise ValueError(f"prediction_type must be one of {tuple(by_target)}; got {prediction_type!r}")
    return by_target[prediction_type]


def denoising_loss(
    model: nn.Module,
    x0: Tensor,
    noise_schedule: NoiseSchedule,
    *,
    labels: Tensor | None = None,
    weighting: LossWeighting = "uniform",
    min_snr_gamma: float = 5.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The denoising objective, one Monte-Carlo draw of (t, eps) per sample (Ho et al. 2020, Algorithm 1).

    L = E_{x0, t, eps} [ w(t) || f_theta(x_t, t) - target(x0, eps, t) ||^2 ],
    where the target is eps, x0, v or the flow velocity eps - x0 according to ``model.prediction_type`` (for a
    RectifiedFlow with "flow" and uniform weighting this is the conditional flow-matching loss, Lipman et al. 2023,
    eq. 9). The squared error is averaged over the data dimensions, then the weighted errors over the batch.
    """
    _, noise, t = sample_xt(x0, noise_schedule, generator=generator)
    return weighted_errors(model, x0, noise_schedule, t, noise, labels, weighting, min_snr_gamma).mean()


def weighted_errors(
    model: nn.Module,
    x0: Tensor,
    noise_schedule: NoiseSchedule,
    t: Tensor,
    noise: Tensor,
    labels: Tensor | None,
    weighting: LossWeighting,
    min_snr_gamma: float,
) -> Tensor:
    """w(t_i) ||f_theta(x_t_i, t_i) - target_i||^2 / d for each sample i, given its draws (t_i, eps_i): shape (B,)."""
    prediction_type = getattr(model, "prediction_type", "eps")
    check_prediction_type(prediction_type, noise_schedule)  # e.g. a "v" model on a RectifiedFlow: the wrong target
    prediction = call_model(model, q_sample(x0, noise_schedule, t, noise), t, labels)
    target = target_from_x0_eps(x0, noise, *coefficients(noise_schedule, t, x0), prediction_type)
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(dim=1)  # (B,)
    return loss_weights(noise_schedule, t, prediction_type, weighting, min_snr_gamma) * per_sample


def call_model(model: nn.Module, x_t: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
    """Call an unconditional ``model(x_t, t)`` or a class-conditional ``model(x_t, t, y)`` wrapper, and check that
    the output has x_t's shape (any module, not only the package's wrappers: a broadcast loss would train on garbage)."""
    if getattr(model, "num_classes", None) is not None:
        output = model(x_t, t, labels)
    elif labels is not None:
        raise ValueError(
            f"labels were given but {type(model).__name__} is not class-conditional; "
            "wrap the backbone in TimeAndClassConditionedModel(backbone, num_classes) to use labels"
        )
    else:
        output = model(x_t, t)
    if not isinstance(output, Tensor) or output.shape != x_t.shape:
        got = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else f"a {type(output).__name__}"
        raise ValueError(
            f"{type(model).__name__} returned {got} for an input x_t of shape {tuple(x_t.shape)}; a denoiser's "
            "output must have its input's shape (one prediction of eps, x0 or v per value)"
        )
    return output


__all__ = [
    "LossWeighting",
    "call_model",
    "check_time_steps",
    "denoising_loss",
    "loss_weights",
    "q_sample",
    "randn_like",
    "sample_time_steps",
    "sample_xt",
    "weighted_errors",
]
