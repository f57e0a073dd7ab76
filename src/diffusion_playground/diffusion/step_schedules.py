"""Step schedules: the noise levels a sampler visits, sigma_0 > sigma_1 > ... > sigma_{N-1} > sigma_N = 0.

Each schedule is one small function returning a 1-D tensor of N + 1 sigmas ending in 0, so any schedule fits
any sampler (k-diffusion's convention). N is the number of steps; a sampler's network evaluations (NFE) are
N for the first-order samplers and DPM-Solver++(2M), 2N - 1 for Heun (its last step, to sigma = 0, is Euler).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffusion_playground.diffusion.noise_schedule import NoiseSchedule, nearest_time_step

StepSchedule = Literal["uniform", "karras"]
STEP_SCHEDULES: tuple[str, ...] = ("uniform", "karras")


def check_num_steps(num_steps: int) -> None:
    """Raise a ValueError unless num_steps is an int >= 1."""
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"the number of sampling steps must be an integer >= 1; got {num_steps!r}")


def uniform_time_steps(num_time_steps: int, num_steps: int) -> Tensor:
    """N trained steps t evenly spaced from T-1 down to 0 (Song et al. 2021, DDIM section 4.2 / appendix C.2).

    t_i = round((T - 1) (1 - i / (N - 1))), i = 0..N-1, so the walk starts at the last trained step and
    ends at the first; N = T gives every step. Returns int64 of shape (N,), strictly decreasing.
    """
    check_num_steps(num_steps)
    if num_steps > num_time_steps:
        raise ValueError(
            f"cannot take {num_steps} steps on a schedule of T={num_time_steps} trained steps; use steps <= {num_time_steps}"
        )
    if num_steps == 1:
        return torch.tensor([num_time_steps - 1])
    return torch.linspace(num_time_steps - 1, 0, num_steps, dtype=torch.float64).round().long()


def sigmas_at_time_steps(noise_schedule: NoiseSchedule, time_steps: Tensor) -> Tensor:
    """[sigma_{t_0}, ..., sigma_{t_{N-1}}, 0]: the trained noise levels of the given steps, then 0. Shape (N + 1,)."""
    sigmas = noise_schedule.sigmas.cpu()[time_steps.cpu()]  # (N,)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, eq. 5: sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.

    rho = 7 spends most steps at small sigma, where the ODE's curvature is largest. Shape (N + 1,), ending in 0.
    """
    check_num_steps(num_steps)
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0; got {rho}")
    if num_steps == 1:
        return torch.tensor([sigma_max, 0.0])
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def snap_to_time_steps(noise_schedule: NoiseSchedule, sigmas: Tensor) -> Tensor:
    """Replace each sigma > 0 by the nearest trained sigma_t (in log-space) and drop repeats.

    A trained wrapper takes integer t, so a sampler run on it should only visit trained levels. Near sigma_min
    Karras' grid can be finer than the trained one; repeated levels are dropped, so the result may have fewer
    steps than asked for. The trailing 0 is kept.
    """
    time_steps = torch.unique_consecutive(nearest_time_step(noise_schedule, sigmas[:-1]))  # (N',)
    return sigmas_at_time_steps(noise_schedule, time_steps)


def step_sigmas(
    noise_schedule: NoiseSchedule,
    num_steps: int | None,
    step_schedule: StepSchedule = "uniform",
    *,
    discrete: bool = True,
    rho: float = 7.0,
) -> Tensor:
    """The sigmas of ``num_steps`` steps (None: all T trained steps) from sigma_{T-1} to sigma_0, then 0.

    ``uniform`` spaces the steps evenly in t (DDPM/DDIM); ``karras`` uses :func:`karras_sigmas` between the
    schedule's sigma_min and sigma_max, snapped to the trained levels when ``discrete`` (a trained model).
    """
    if step_schedule not in STEP_SCHEDULES:
        raise ValueError(f"step_schedule must be one of {STEP_SCHEDULES}; got {step_schedule!r}")
    if num_steps is None:
        return sigmas_at_time_steps(noise_schedule, uniform_time_steps(noise_schedule.T, noise_schedule.T))
    if step_schedule == "uniform":
        return sigmas_at_time_steps(noise_schedule, uniform_time_steps(noise_schedule.T, num_steps))
    sigmas = karras_sigmas(num_steps, noise_schedule.sigma_min, noise_schedule.sigma_max, rho)
    return snap_to_time_steps(noise_schedule, sigmas) if discrete else sigmas


__all__ = [
    "STEP_SCHEDULES",
    "StepSchedule",
    "check_num_steps",
    "karras_sigmas",
    "sigmas_at_time_steps",
    "snap_to_time_steps",
    "step_sigmas",
    "uniform_time_steps",
]
