"""Step schedules: the noise levels a sampler visits, sigma_0 > sigma_1 > ... > sigma_{N-1} > sigma_N = 0.

Each schedule is one small function returning a 1-D tensor of N + 1 sigmas ending in 0, so any schedule fits
any sampler (k-diffusion's convention). N is the number of steps; a sampler's network evaluations (NFE) are
N for the first-order samplers and DPM-Solver++(2M), 2N - 1 for Heun (its last step, to sigma = 0, is Euler).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from diffusion_playground.checks import check_integer, check_real
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule, nearest_time_step

if TYPE_CHECKING:
    from diffusion_playground.diffusion.edm import EDMDiffusion

StepSchedule = Literal["uniform", "karras", "log_snr"]
STEP_SCHEDULES: tuple[str, ...] = ("uniform", "karras", "log_snr")

# Where grids of more than FEW_STEPS steps start by default: Karras et al. 2022 (section 5, table 1) sample every
# model from sigma_max = 80. Starting higher buys nothing (x_sigma is already Gaussian noise) and costs accuracy:
# an eps-model's data prediction x0_hat = x_sigma - sigma * eps_hat multiplies its error by sigma, which is ~157 at
# the last step of Ho et al.'s linear schedule and ~2e4 at the last (clipped) step of the cosine schedule.
DEFAULT_SIGMA_MAX = 80.0
# The range of a few-step grid (at most FEW_STEPS steps), chosen by measurement (benchmarks/step_grids.py, the
# samplers README): with 10 steps, [0.1, 20] beat [sigma_0, 80] for every sampler on every trained model measured
# (moons: eps/v on the linear and cosine schedules, flow, EDM; 8x8 digits: eps, v, flow). Few steps cannot afford
# to spend any below sigma = 0.1, where the data are almost clean (the last step, to 0, is the denoiser's x0_hat),
# or above 20, where x_sigma is almost pure noise; with more steps the whole range is as good or better again.
FEW_STEPS = 15
FEW_STEP_SIGMA_MIN, FEW_STEP_SIGMA_MAX = 0.1, 20.0


def check_num_steps(num_steps: int) -> None:
    """Raise a ValueError unless num_steps is an integer >= 1 (a TypeError for 2.5 or "5")."""
    check_integer("the number of sampling steps", num_steps, minimum=1)


def uniform_time_steps(num_time_steps: int, num_steps: int, *, first: int | None = None, last: int = 0) -> Tensor:
    """N trained steps t evenly spaced from ``first`` (default T-1) down to ``last`` (Song et al. 2021, DDIM
    section 4.2 / appendix C.2).

    t_i = round(first + i / (N - 1) (last - first)), i = 0..N-1; N = T gives every step. Returns int64 of
    shape (N,), strictly decreasing.
    """
    check_num_steps(num_steps)
    first = num_time_steps - 1 if first is None else int(first)
    if not 0 <= last <= first < num_time_steps:
        raise ValueError(f"need 0 <= last <= first < T={num_time_steps}; got first={first}, last={last}")
    if num_steps > first - last + 1:
        raise ValueError(
            f"cannot take {num_steps} steps on the {first - last + 1} trained steps from t={first} to t={last}; "
            f"use steps <= {first - last + 1}"
        )
    if num_steps == 1:
        return torch.tensor([first])
    return torch.linspace(first, last, num_steps, dtype=torch.float64).round().long()


def sigmas_at_time_steps(noise_schedule: NoiseSchedule, time_steps: Tensor) -> Tensor:
    """[sigma_{t_0}, ..., sigma_{t_{N-1}}, 0]: the trained noise levels of the given steps, then 0. Shape (N + 1,)."""
    sigmas = noise_schedule.sigmas.cpu()[time_steps.cpu()]  # (N,)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, eq. 5: sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.

    rho = 7 spends most steps at small sigma, where the ODE's curvature is largest. Shape (N + 1,), ending in 0.
    """
    check_num_steps(num_steps)
    sigma_min, sigma_max = _checked_range(sigma_min, sigma_max)
    rho = check_real("rho", rho, minimum=0.0, strict=True)
    if num_steps == 1:
        return torch.tensor([sigma_max, 0.0])
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def log_snr_sigmas(num_steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """N sigmas evenly spaced in log sigma, i.e. in the log-SNR lambda = -2 log sigma, from sigma_max down to
    sigma_min, then 0: DPM-Solver's "logSNR" step schedule (Lu et al. 2022, section 3.3), Karras' grid in the limit
    rho -> infinity. Every step has the same length h in lambda, so DPM-Solver++(2M)'s extrapolation always sees
    the step ratio r = 1. Shape (N + 1,), ending in 0."""
    check_num_steps(num_steps)
    sigma_min, sigma_max = _checked_range(sigma_min, sigma_max)
    if num_steps == 1:
        return torch.tensor([sigma_max, 0.0])
    sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), num_steps, dtype=torch.float64).exp()
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def check_sigma_grid(sigmas: Tensor | Sequence[float]) -> Tensor:
    """A user's own grid as float32 (N + 1,): finite, strictly decreasing, positive, ending in 0; else a ValueError."""
    grid = torch.as_tensor(sigmas, dtype=torch.float64).cpu()
    ok = grid.ndim == 1 and grid.numel() >= 2 and bool(torch.isfinite(grid).all())
    ok = ok and grid[-1].item() == 0.0 and bool((grid[:-1] > 0).all()) and bool((grid[1:] < grid[:-1]).all())
    if not ok:
        shown = grid.reshape(-1)[:6].tolist()
        raise ValueError(
            "sigmas must be a 1-D grid sigma_0 > sigma_1 > ... > sigma_N = 0 (finite, at least one step), as "
            f"step_sigmas or karras_sigmas return; got {shown}{' ...' if grid.numel() > 6 else ''} of shape {tuple(grid.shape)}"
        )
    return grid.float()


def _checked_range(sigma_min: float, sigma_max: float) -> tuple[float, float]:
    sigma_min, sigma_max = check_real("sigma_min", sigma_min), check_real("sigma_max", sigma_max)  # NaN, inf refused
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return sigma_min, sigma_max


def snap_to_time_steps(noise_schedule: NoiseSchedule, sigmas: Tensor) -> Tensor:
    """Replace each sigma > 0 by the nearest trained sigma_t (in log-space) and drop repeats.

    A trained wrapper takes integer t, so a sampler run on it should only visit trained levels. Near sigma_min
    Karras' grid can be finer than the trained one; repeated levels are dropped, so the result may have fewer
    steps than asked for. The trailing 0 is kept.
    """
    time_steps = torch.unique_consecutive(nearest_time_step(noise_schedule, sigmas[:-1]))  # (N',)
    return sigmas_at_time_steps(noise_schedule, time_steps)


def sigma_range(
    noise_schedule: NoiseSchedule | EDMDiffusion,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    *,
    num_steps: int | None = None,
) -> tuple[float, float]:
    """The noise levels a grid of ``num_steps`` steps spans, ``sigma_min`` to ``sigma_max``; both must lie in the
    trained range [sigma_0, sigma_{T-1}] (an EDMDiffusion's own [sigma_min, sigma_max], Table 1: 0.002 and 80).

    Defaults: for a few-step grid (``num_steps`` <= :data:`FEW_STEPS`) [0.1, 20] (FEW_STEP_SIGMA_MIN/MAX, chosen by
    measurement: see the constants), clipped to the trained range; otherwise (and for ``num_steps=None``) the
    schedule's sigma_0 to its sigma_{T-1} capped at :data:`DEFAULT_SIGMA_MAX` (an EDMDiffusion's whole range). A
    given end beyond the few-step range (sigma_max < 0.1, sigma_min > 20) leaves the other end at that default.
    """
    low, high = noise_schedule.sigma_min, noise_schedule.sigma_max
    default_min = low  # the whole range
    default_max = min(high, DEFAULT_SIGMA_MAX) if isinstance(noise_schedule, NoiseSchedule) else high
    if num_steps is not None and num_steps <= FEW_STEPS:
        few_min, few_max = min(max(FEW_STEP_SIGMA_MIN, low), high), max(min(FEW_STEP_SIGMA_MAX, high), low)
        if sigma_max is None or float(sigma_max) >= few_min:  # else the given sigma_max is below the few-step range
            default_min = few_min
        if sigma_min is None or float(sigma_min) <= few_max:
            default_max = few_max
    sigma_min = default_min if sigma_min is None else float(sigma_min)
    sigma_max = default_max if sigma_max is None else float(sigma_max)
    tolerance = 1e-6 * high
    if not low - tolerance <= sigma_min <= sigma_max <= high + tolerance:
        raise ValueError(
            f"need sigma_min <= sigma_max within the trained noise levels [{low:.4g}, {high:.4g}] of this schedule; "
            f"got sigma_min={sigma_min:.4g}, sigma_max={sigma_max:.4g}"
        )
    return sigma_min, sigma_max


def strided_time_steps(
    noise_schedule: NoiseSchedule,
    num_steps: int,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    *,
    few_step_range: bool = False,
) -> Tensor:
    """:func:`uniform_time_steps` between the trained steps nearest to :func:`sigma_range`'s ends (its few-step
    defaults when ``few_step_range``: DDIM and Euler; DDPM keeps [sigma_0, min(sigma_{T-1}, 80)] at any step count).

    When more steps are asked for than the trained steps below the default sigma_max, the walk starts at
    t = T-1 instead (with that many steps the start hardly matters), so ``num_steps = T`` is every step.
    """
    check_num_steps(num_steps)
    low, high = sigma_range(noise_schedule, sigma_min, sigma_max, num_steps=num_steps if few_step_range else None)
    first, last = (int(t) for t in nearest_time_step(noise_schedule, torch.tensor([high, low])))
    if sigma_max is None and num_steps > first - last + 1:
        first = noise_schedule.T - 1
    return uniform_time_steps(noise_schedule.T, num_steps, first=first, last=last)


def step_sigmas(
    noise_schedule: NoiseSchedule | EDMDiffusion,
    num_steps: int | None,
    step_schedule: StepSchedule = "uniform",
    *,
    discrete: bool = True,
    rho: float = 7.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> Tensor:
    """The sigmas of ``num_steps`` steps from sigma_max down to sigma_min, then 0 (the range: :func:`sigma_range`,
    whose defaults for at most FEW_STEPS steps are the few-step range [0.1, 20]).

    ``uniform`` spaces the steps evenly in t (DDPM/DDIM) between the trained steps nearest to sigma_max and
    sigma_min; ``karras`` uses :func:`karras_sigmas` (``rho``) and ``log_snr`` :func:`log_snr_sigmas`, both
    snapped to the trained levels when ``discrete`` (a trained model). ``num_steps=None`` walks every trained
    step from sigma_{T-1} to sigma_0 (full DDPM/DDIM). An EDMDiffusion, which has no trained steps, takes
    ``karras`` or ``log_snr`` with ``discrete=False`` and a ``num_steps``.
    """
    if step_schedule not in STEP_SCHEDULES:
        raise ValueError(f"step_schedule must be one of {STEP_SCHEDULES}; got {step_schedule!r}")
    if not isinstance(noise_schedule, NoiseSchedule) and (num_steps is None or step_schedule == "uniform" or discrete):
        raise ValueError(
            f"an {type(noise_schedule).__name__} has no trained steps to walk or space uniformly: its grid is "
            f"step_schedule='karras' or 'log_snr' with discrete=False and a number of steps (e.g. 18); got "
            f"num_steps={num_steps}, step_schedule={step_schedule!r}, discrete={discrete}"
        )
    if num_steps is None:
        if sigma_min is not None or sigma_max is not None:
            raise ValueError("sigma_min / sigma_max shape a grid of a given number of steps; pass steps as well")
        return sigmas_at_time_steps(noise_schedule, uniform_time_steps(noise_schedule.T, noise_schedule.T))
    if step_schedule == "uniform":
        time_steps = strided_time_steps(noise_schedule, num_steps, sigma_min, sigma_max, few_step_range=True)
        return sigmas_at_time_steps(noise_schedule, time_steps)
    low, high = sigma_range(noise_schedule, sigma_min, sigma_max, num_steps=num_steps)
    sigmas = karras_sigmas(num_steps, low, high, rho) if step_schedule == "karras" else log_snr_sigmas(num_steps, low, high)
    return snap_to_time_steps(noise_schedule, sigmas) if discrete else sigmas


__all__ = [
    "DEFAULT_SIGMA_MAX",
    "FEW_STEPS",
    "FEW_STEP_SIGMA_MAX",
    "FEW_STEP_SIGMA_MIN",
    "STEP_SCHEDULES",
    "StepSchedule",
    "check_num_steps",
    "check_sigma_grid",
    "karras_sigmas",
    "log_snr_sigmas",
    "sigma_range",
    "sigmas_at_time_steps",
    "snap_to_time_steps",
    "step_sigmas",
    "strided_time_steps",
    "uniform_time_steps",
]
