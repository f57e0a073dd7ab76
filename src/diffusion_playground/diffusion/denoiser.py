"""The denoiser view D(x_sigma, sigma) ~ E[x0 | x_sigma] (Karras et al. 2022, section 2), and its inverse.

Every sampler in :mod:`diffusion_playground.diffusion.samplers` steps the variance-exploding variable

    x_sigma = x_t / a_t = x0 + sigma eps,     sigma = s_t / a_t  (= sqrt((1 - alpha_bar_t) / alpha_bar_t) for VP),

for any Gaussian process x_t = a_t x0 + s_t eps (a VP schedule: a_t = sqrt(alpha_bar_t); rectified flow: a_t = 1 - t,
sigma = t / (1 - t)), and asks one question: "what is E[x0 | x_sigma]?". :class:`ModelDenoiser` answers it with a
trained wrapper of any prediction target (eps, x0, v, flow); :class:`~diffusion_playground.diffusion.optimal_denoiser.OptimalDenoiser`
answers it exactly for a finite dataset; :class:`~diffusion_playground.diffusion.guidance.ClassifierFreeGuidance`
wraps either. :class:`TimeViewModel` goes the other way, so DDPM's ``model(x_t, t)`` call works on any denoiser.

Call convention of a denoiser: ``denoiser(x, sigma, labels=None)`` with
    x       (B, ...)   the VE variable x_sigma,
    sigma   0-dim (one level for the batch) or (B,),
    labels  None (unconditional) or (B,) int64 where NULL_LABEL (-1) marks "unconditional" for that sample,
and the result is x0_hat of x's shape.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffusion_playground.diffusion.noise_schedule import NoiseSchedule, nearest_time_step
from diffusion_playground.diffusion.parameterization import (
    broadcast_coefficient,
    check_prediction_type,
    coefficients,
    x0_eps_from_prediction,
)
from diffusion_playground.diffusion.training_utils import call_model
from diffusion_playground.models.time_and_class_conditioned_model import TimeAndClassConditionedModel

NULL_LABEL = -1  # a label meaning "no class": the unconditional model of classifier-free guidance


class Denoiser(nn.Module):
    """Base class of everything called as ``D(x_sigma, sigma, labels=None) -> x0_hat``.

    Attributes:
        num_classes: number of classes it can be conditioned on (None: unconditional only).
        discrete_schedule: the schedule whose trained sigmas it can evaluate exactly, or None when any
            sigma > 0 is exact (the optimal denoiser). Samplers' step schedules are snapped to it.
    """

    num_classes: int | None = None
    discrete_schedule: NoiseSchedule | None = None

    def forward(self, x: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class ModelDenoiser(Denoiser):
    """D(x_sigma, sigma) from a trained wrapper ``model(x_t, t[, y])`` of any prediction target.

    1. t = the trained step nearest to sigma in log-space (:func:`nearest_time_step`); the wrappers take integer t,
       so a sigma between two trained levels is *rounded* to one of them (step schedules built on the t-grid never
       need rounding; EDM's churn does, which is why its sigma_hat is snapped too).
    2. x_t = a_t x_sigma, the input the network was trained on (Karras et al. 2022, eq. 4, s(t) = a_t), with a_t the
       process's ``signal_scales``: sqrt(alpha_bar_t) = 1 / sqrt(1 + sigma^2) (VP), 1 - t = 1 / (1 + sigma) (rectified flow).
    3. (x0_hat, eps_hat) from the network output whatever ``model.prediction_type`` is (parameterization.py).
    """

    def __init__(self, model: nn.Module, noise_schedule: NoiseSchedule) -> None:
        check_prediction_type(model.prediction_type, noise_schedule)
        super().__init__()
        self.model = model
        self.discrete_schedule = noise_schedule
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:
        schedule = self.discrete_schedule
        t = nearest_time_step(schedule, sigma).to(x.device)  # 0-dim or (B,): the wrappers embed a 0-dim t once
        a_t, s_t = coefficients(schedule, t, x)  # (B or 1, 1, ..., 1)
        x_t = a_t * x
        prediction = self._call(x_t, t, labels).float()
        x0_hat, _ = x0_eps_from_prediction(prediction, x_t, a_t, s_t, self.model.prediction_type)
        return x0_hat

    def _call(self, x_t: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        if labels is None or not bool((labels == NULL_LABEL).any()):
            return call_model(self.model, x_t, t, labels)
        if self.num_classes is None:
            raise ValueError(f"labels were given but {type(self.model).__name__} is not class-conditional")
        return _call_with_null_labels(self.model, x_t, t, labels)


def _call_with_null_labels(model: nn.Module, x_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:
    """One call of a class-conditional wrapper where some samples' label is NULL_LABEL (the null class),
    through the wrapper's ``null_mask``; a wrapper without it is called twice instead."""
    is_null = labels == NULL_LABEL  # (B,)
    if isinstance(model, TimeAndClassConditionedModel):
        return model(x_t, t, labels.clamp(min=0), null_mask=is_null)
    out_cond = model(x_t, t, labels.clamp(min=0))
    out_null = model(x_t, t, None)
    return torch.where(is_null.reshape(-1, *([1] * (x_t.ndim - 1))), out_null, out_cond)


class TimeViewModel(nn.Module):
    """The inverse adapter: a denoiser seen as an x0-predicting wrapper ``model(x_t, t[, y])``.

    model(x_t, t) = D(x_t / a_t, sigma_t) (a_t = sqrt(alpha_bar_t) for VP, 1 - t for rectified flow), so DDPM
    ancestral sampling (which steps x_t at integer t) runs on the optimal denoiser or a guided denoiser exactly as on
    a trained network.
    """

    prediction_type = "x0"

    def __init__(self, denoiser: Denoiser, noise_schedule: NoiseSchedule) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.noise_schedule = noise_schedule
        self.num_time_steps = noise_schedule.T
        self.num_classes = denoiser.num_classes

    def forward(self, x_t: Tensor, t: Tensor | int, y: Tensor | None = None) -> Tensor:
        t = torch.as_tensor(t, device=x_t.device)
        sigma = self.noise_schedule.sigmas.to(x_t.device)[t]  # 0-dim or (B,)
        a_t = broadcast_coefficient(self.noise_schedule.signal_scales, t, x_t)  # (B or 1, 1, ..., 1)
        return self.denoiser(x_t / a_t, sigma, y)


def as_denoiser(model: nn.Module, noise_schedule: NoiseSchedule) -> Denoiser:
    """Any model as a denoiser: a :class:`Denoiser` is returned as is, a trained wrapper as a :class:`ModelDenoiser`."""
    if isinstance(model, Denoiser):
        return model
    if not hasattr(model, "prediction_type"):
        raise TypeError(
            f"{type(model).__name__} is neither a Denoiser (called as D(x, sigma)) nor a wrapper with a "
            "prediction_type (called as model(x_t, t)); wrap the backbone in TimeConditionedModel"
        )
    return ModelDenoiser(model, noise_schedule)


def as_time_model(model: nn.Module, noise_schedule: NoiseSchedule) -> nn.Module:
    """Any model as a ``model(x_t, t[, y])`` wrapper: a denoiser through :class:`TimeViewModel`, a wrapper as is."""
    return TimeViewModel(model, noise_schedule) if isinstance(model, Denoiser) else model


__all__ = [
    "NULL_LABEL",
    "Denoiser",
    "ModelDenoiser",
    "TimeViewModel",
    "as_denoiser",
    "as_time_model",
]
