"""Conversions between the quantities a denoiser can predict: x0, eps, v, the flow velocity and the score.

A Gaussian process is x_t = a_t x0 + s_t eps (Ho et al. 2020, eq. 4), with (a_t, s_t) the schedule's
(signal_scales, noise_scales): (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for a VP schedule, so a_t^2 + s_t^2 = 1,
and (1 - t, t) for rectified flow, so a_t + s_t = 1. For any (a_t, s_t):

    x0    = (x_t - s_t eps) / a_t,   eps = (x_t - a_t x0) / s_t
    score = grad_x log q(x_t) = -eps / s_t        (Vincent 2011; Song et al. 2021, eq. 2 / Tweedie)

VP only (a^2 + s^2 = 1), the v-prediction:

    v     = a_t eps - s_t x0                      velocity (Salimans & Ho 2022, section 4)
    x0    = a_t x_t - s_t v,   eps = s_t x_t + a_t v

Straight paths only (a + s = 1; rectified_flow.py), the flow velocity, "flow":

    v     = dx_t / dt = eps - x0                  (Lipman et al. 2023, section 4.1; Liu et al. 2023)
    x0    = x_t - s_t v,   eps = x_t + a_t v      (x0 = x_t - t v, eps = x_t + (1 - t) v)

Each process lists the targets whose conversions hold for it in ``prediction_types``; :func:`check_prediction_type`
refuses the others. Every function takes the per-sample coefficients already broadcast to x's shape; use
:func:`broadcast_coefficient` to gather them from a schedule at integer steps t.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.diffusion.rectified_flow import RectifiedFlow

PredictionType = Literal["eps", "x0", "v", "flow"]
PREDICTION_TYPES: tuple[str, ...] = tuple(dict.fromkeys(NoiseSchedule.prediction_types + RectifiedFlow.prediction_types))


def check_prediction_type(prediction_type: str, noise_schedule: NoiseSchedule | None = None) -> None:
    """Raise a ValueError naming the allowed targets if ``prediction_type`` is not one of them, or (given a
    ``noise_schedule``) not one whose conversions hold for that process."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {NoiseSchedule.prediction_types} (VP noise schedules) or "
            f"{RectifiedFlow.prediction_types} (RectifiedFlow); got {prediction_type!r}"
        )
    if noise_schedule is not None and prediction_type not in noise_schedule.prediction_types:
        raise ValueError(
            f"prediction_type={prediction_type!r} does not fit {type(noise_schedule).__name__}, whose targets are "
            f"{noise_schedule.prediction_types}: 'v' (Salimans & Ho) needs a VP schedule, 'flow' (eps - x0) a "
            "RectifiedFlow; build the wrapper with one of its targets, or train with the matching process"
        )


def broadcast_coefficient(values: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """values[t] reshaped to (B, 1, ..., 1) (or (1, 1, ..., 1) for a 0-dim t) to broadcast against x (B, ...)."""
    out = values.to(x.device)[t.to(x.device)]  # (B,)
    return out.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)  # (B, 1, ..., 1)


def coefficients(schedule: NoiseSchedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(a_t, s_t) of x_t = a_t x0 + s_t eps, broadcast to x: (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for a VP
    schedule, (1 - t, t) for rectified flow."""
    return (
        broadcast_coefficient(schedule.signal_scales, t, x),
        broadcast_coefficient(schedule.noise_scales, t, x),
    )


def x0_from_eps(x_t: Tensor, eps: Tensor, a_t: Tensor, s_t: Tensor) -> Tensor:
    """x0 = (x_t - s_t eps) / a_t  (Ho et al. 2020, eq. 15)."""
    return (x_t - s_t * eps) / a_t


def eps_from_x0(x_t: Tensor, x0: Tensor, a_t: Tensor, s_t: Tensor) -> Tensor:
    """eps = (x_t - a_t x0) / s_t."""
    return (x_t - a_t * x0) / s_t


def v_from_x0_eps(x0: Tensor, eps: Tensor, a_t: Tensor, s_t: Tensor) -> Tensor:
    """v = a_t eps - s_t x0  (Salimans & Ho 2022, section 4)."""
    return a_t * eps - s_t * x0


def x0_from_v(x_t: Tensor, v: Tensor, a_t: Tensor, s_t: Tensor) -> Tensor:
    """x0 = a_t x_t - s_t v  (Salimans & Ho 2022, appendix D)."""
    return a_t * x_t - s_t * v


def eps_from_v(x_t: Tensor, v: Tensor, a_t: Tensor, s_t: Tensor) -> Tensor:
    """eps = s_t x_t + a_t v."""
    return s_t * x_t + a_t * v


def flow_from_x0_eps(x0: Tensor, eps: Tensor) -> Tensor:
    """v = dx_t/dt = eps - x0 on the straight path x_t = (1 - t) x0 + t eps (Lipman et al. 2023, eq. 23 with
    sigma_min = 0, time reversed)."""
    return eps - x0


def x0_from_flow(x_t: Tensor, v: Tensor, s_t: Tensor) -> Tensor:
    """x0 = x_t - t v (s_t = t), since x_t - t (eps - x0) = (1 - t + t) x0."""
    return x_t - s_t * v


def eps_from_flow(x_t: Tensor, v: Tensor, a_t: Tensor) -> Tensor:
    """eps = x_t + (1 - t) v (a_t = 1 - t)."""
    return x_t + a_t * v


def score_from_eps(eps: Tensor, s_t: Tensor) -> Tensor:
    """grad_x log q(x_t) = -eps / s_t (Tweedie's formula for a Gaussian corruption)."""
    return -eps / s_t


def target_from_x0_eps(
    x0: Tensor, eps: Tensor, a_t: Tensor, s_t: Tensor, prediction_type: PredictionType
) -> Tensor:
    """The regression target for a network that predicts ``prediction_type``."""
    check_prediction_type(prediction_type)
    if prediction_type == "eps":
        return eps
    if prediction_type == "x0":
        return x0
    if prediction_type == "flow":
        return flow_from_x0_eps(x0, eps)
    return v_from_x0_eps(x0, eps, a_t, s_t)


def x0_eps_from_prediction(
    prediction: Tensor, x_t: Tensor, a_t: Tensor, s_t: Tensor, prediction_type: PredictionType
) -> tuple[Tensor, Tensor]:
    """Turn a network output of any ``prediction_type`` into the pair (x0_hat, eps_hat)."""
    check_prediction_type(prediction_type)
    if prediction_type == "eps":
        return x0_from_eps(x_t, prediction, a_t, s_t), prediction
    if prediction_type == "x0":
        return prediction, eps_from_x0(x_t, prediction, a_t, s_t)
    if prediction_type == "flow":
        return x0_from_flow(x_t, prediction, s_t), eps_from_flow(x_t, prediction, a_t)
    return x0_from_v(x_t, prediction, a_t, s_t), eps_from_v(x_t, prediction, a_t, s_t)


__all__ = [
    "PREDICTION_TYPES",
    "PredictionType",
    "broadcast_coefficient",
    "check_prediction_type",
    "coefficients",
    "eps_from_flow",
    "eps_from_v",
    "eps_from_x0",
    "flow_from_x0_eps",
    "score_from_eps",
    "target_from_x0_eps",
    "v_from_x0_eps",
    "x0_eps_from_prediction",
    "x0_from_eps",
    "x0_from_flow",
    "x0_from_v",
]
