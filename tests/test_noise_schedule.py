"""Schedules against their closed forms, and their argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_playground import CosineNoiseSchedule, LinearNoiseSchedule, NoiseSchedule
from diffusion_playground.diffusion.noise_schedule import schedule_from_config


def test_linear_betas_match_ho_et_al():
    schedule = LinearNoiseSchedule(1000)
    assert schedule.T == 1000
    assert schedule.betas[0].item() == pytest.approx(1e-4)
    assert schedule.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(schedule.betas[1:] - schedule.betas[:-1], torch.full((999,), (0.02 - 1e-4) / 999), atol=1e-8)


@pytest.mark.parametrize("schedule", [LinearNoiseSchedule(1000), CosineNoiseSchedule(1000), LinearNoiseSchedule(1)])
def test_derived_views_are_the_closed_forms(schedule):
    betas = schedule.betas.double()
    alpha_bars = torch.cumprod(1 - betas, dim=0)
    assert torch.allclose(schedule.alphas.double(), 1 - betas)
    assert torch.allclose(schedule.alpha_bars.double(), alpha_bars, rtol=1e-6)
    assert torch.allclose(schedule.snr.double(), alpha_bars / (1 - alpha_bars), rtol=1e-5)
    assert torch.allclose(schedule.sigmas.double(), ((1 - alpha_bars) / alpha_bars).sqrt(), rtol=1e-5)
    assert torch.allclose(schedule.sigmas.double(), schedule.snr.double().rsqrt(), rtol=1e-5)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
    assert torch.allclose(schedule.posterior_variance.double(), betas * (1 - prev) / (1 - alpha_bars), rtol=1e-5)


def test_cosine_endpoints_follow_nichol_dhariwal_eq17():
    T, s = 1000, 0.008
    schedule = CosineNoiseSchedule(T, s=s)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    # our step t is their step t + 1: alpha_bar[0] = f(1)/f(0)
    assert schedule.alpha_bars[0].item() == pytest.approx(f(1) / f(0), rel=1e-6)
    assert schedule.alpha_bars[T // 2].item() == pytest.approx(f(T // 2 + 1) / f(0), rel=1e-5)
    assert schedule.betas.max().item() == pytest.approx(0.999)  # clipped at the singular last step
    assert schedule.alpha_bars[-1].item() < 1e-6


def test_alpha_bar_decreases_and_ends_near_zero():
    for schedule in (LinearNoiseSchedule(1000), CosineNoiseSchedule(1000)):
        assert (schedule.alpha_bars[1:] < schedule.alpha_bars[:-1]).all()
        assert schedule.alpha_bars[-1] < 1e-3


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LinearNoiseSchedule(0), "time_steps"),
        (lambda: LinearNoiseSchedule(10, beta_start=0.0), "beta_start"),
        (lambda: LinearNoiseSchedule(10, beta_start=0.1, beta_end=1.5), "beta_end"),
        (lambda: CosineNoiseSchedule(10, s=-1.0), "offset s"),
        (lambda: NoiseSchedule(torch.tensor([0.1, 1.2])), "open interval"),
        (lambda: NoiseSchedule(torch.tensor([])), "T >= 1"),
    ],
)
def test_invalid_arguments_say_what_is_wrong(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_non_monotone_alpha_bar_is_rejected():
    # float64 rounding makes cumprod constant for betas this tiny: no noise is added at those steps
    with pytest.raises(ValueError, match="strictly decreasing"):
        NoiseSchedule(torch.tensor([0.1, 1e-300], dtype=torch.float64))


@pytest.mark.parametrize("schedule", [LinearNoiseSchedule(20, 1e-3, 0.1), CosineNoiseSchedule(30, s=0.01)])
def test_config_rebuilds_the_same_schedule(schedule):
    rebuilt = schedule_from_config(schedule.config())
    assert type(rebuilt) is type(schedule)
    assert torch.equal(rebuilt.betas, schedule.betas)


def test_to_moves_every_view():
    schedule = LinearNoiseSchedule(10).to("cpu")
    assert schedule.alpha_bars.device.type == "cpu" and schedule.device.type == "cpu"


def test_scaled_linear_schedule_keeps_alpha_bar_at_t_minus_1_near_zero():
    assert torch.equal(LinearNoiseSchedule.scaled(1000).betas, LinearNoiseSchedule(1000).betas)
    short = LinearNoiseSchedule.scaled(100)
    assert short.betas[0].item() == pytest.approx(1e-3) and short.betas[-1].item() == pytest.approx(0.2)
    assert short.alpha_bars[-1] < 1e-4 < LinearNoiseSchedule(100).alpha_bars[-1]
