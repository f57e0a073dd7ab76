"""Conversions between the quantities a denoiser can predict: x0, eps, v and the score.

With a_t = sqrt(alpha_bar_t) and s_t = sqrt(1 - alpha_bar_t) (so a_t^2 + s_t^2 = 1):

    x_t   = a_t x0 + s_t eps                      forward process (Ho et al. 2020, eq. 4)
    v     = a_t eps - s_t x0                      velocity (Salimans & Ho 2022, section 4)
    x0    = (x_t - s_t eps) / a_t = a_t x_t - s_t v
    eps   = (x_t - a_t x0) / s_t  = s_t x_t + a_t v
    score = grad_x log q(x_t) = -eps / s_t        (Vincent 2011; Song et al. 2021, eq. 2 / Tweedie)

Every function takes the per-sample coefficients already broadcast to x's shape; use
:func:`broadcast_coefficient` to gather them from a schedule at integer steps t.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from diffusion_playground.diffusion.noise_schedule import NoiseSchedule

PredictionType = Literal["eps", "x0", "v"]
PREDICTION_TYPES: tuple[str, ...] = ("eps", "x0", "v")


def check_prediction_type(prediction_type: str) -> None:
    """Raise a ValueError naming the allowed targets if ``prediction_type`` is not one of them."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}; got {prediction_type!r}")


def broadcast_coefficient(values: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """values[t] reshaped to (B, 1, ..., 1) (or (1, 1, ..., 1) for a 0-dim t) to broadcast against x (B, ...)."""
    out = values.to(x.device)[t.to(x.device)]  # (B,)
    return out.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)  # (B, 1, ..., 1)


def coefficients(schedule: NoiseSchedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(a_t, s_t) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)), broadcast to x."""
    return (
        broadcast_coefficient(schedule.sqrt_alpha_bars, t, x),
        broadcast_coefficient(schedule.sqrt_one_minus_alpha_bars, t, x),
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
    return x0_from_v(x_t, prediction, a_t, s_t), eps_from_v(x_t, prediction, a_t, s_t)


__all__ = [
    "PREDICTION_TYPES",
    "PredictionType",
    "broadcast_coefficient",
    "check_prediction_type",
    "coefficients",
    "eps_from_v",
    "eps_from_x0",
    "score_from_eps",
    "target_from_x0_eps",
    "v_from_x0_eps",
    "x0_eps_from_prediction",
    "x0_from_eps",
    "x0_from_v",
]
