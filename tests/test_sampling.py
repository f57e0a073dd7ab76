"""DDPM ancestral sampling against a closed form: Gaussian data, whose exact denoiser is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion_playground import LinearNoiseSchedule, MLPBackbone, TimeAndClassConditionedModel, generate_samples
from diffusion_playground.diffusion import parameterization as p

from conftest import tiny_model

MEAN, STD = 1.0, 0.5


class ExactGaussianDenoiser(nn.Module):
    """For x0 ~ N(MEAN, STD^2 I): E[x0 | x_t] = MEAN + a STD^2 (x_t - a MEAN) / (a^2 STD^2 + s^2)."""

    def __init__(self, schedule, prediction_type: str):
        super().__init__()
        self.schedule, self.prediction_type, self.num_time_steps = schedule, prediction_type, schedule.T

    def forward(self, x_t, t):
        a, s = p.coefficients(self.schedule, t, x_t)
        x0 = MEAN + a * STD**2 * (x_t - a * MEAN) / (a**2 * STD**2 + s**2)
        return p.target_from_x0_eps(x0, p.eps_from_x0(x_t, x0, a, s), a, s, self.prediction_type)



def test_ddpm_with_the_exact_denoiser_recovers_the_data_distribution(gaussian_schedule):
    model = ExactGaussianDenoiser(gaussian_schedule, "eps")
    samples = generate_samples(model, gaussian_schedule, (2,), 20_000, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (20_000, 2)
    assert samples.mean(0) == pytest.approx(torch.full((2,), MEAN), abs=0.03)
    assert samples.std(0) == pytest.approx(torch.full((2,), STD), rel=0.05)


def test_every_prediction_type_gives_the_same_samples(gaussian_schedule):
    draws = {
        prediction_type: generate_samples(
            ExactGaussianDenoiser(gaussian_schedule, prediction_type), gaussian_schedule, (3,), 500,
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
        for prediction_type in ("eps", "x0", "v")
    }
    assert torch.allclose(draws["eps"], draws["x0"], atol=1e-3)
    assert torch.allclose(draws["eps"], draws["v"], atol=1e-3)


def test_trajectory_runs_from_noise_to_the_samples(schedule):
    model = tiny_model(schedule.T)
    samples, trajectory = generate_samples(
        model, schedule, (2,), 7, generator=torch.Generator().manual_seed(2), return_trajectory=True
    )
    assert trajectory.shape == (schedule.T + 1, 7, 2)
    assert torch.equal(trajectory[0], torch.randn(7, 2, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(trajectory[-1], samples)


def test_a_seeded_generator_makes_sampling_reproducible(schedule):
    model = tiny_model(schedule.T)
    first = generate_samples(model, schedule, (4, 2), generator=torch.Generator().manual_seed(3))
    again = generate_samples(model, schedule, (4, 2), generator=torch.Generator().manual_seed(3))
    other = generate_samples(model, schedule, (4, 2), generator=torch.Generator().manual_seed(4))
    assert first.shape == (4, 2)  # num_samples=None: shape is the full batch shape
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_image_shaped_samples_and_clipping():
    class Constant(nn.Module):
        prediction_type, num_time_steps = "x0", 10

        def forward(self, x_t, t):
            return torch.full_like(x_t, 5.0)  # predicts far outside [-1, 1]

    schedule = LinearNoiseSchedule(10)
    clipped = generate_samples(Constant(), schedule, (1, 4, 4), 3, clip_denoised=True)
    assert clipped.shape == (3, 1, 4, 4)
    assert torch.allclose(clipped, torch.ones_like(clipped))  # at t = 0 the mean is the clipped x0


def test_class_conditional_sampling_and_label_errors(schedule):
    model = TimeAndClassConditionedModel(MLPBackbone(2, cond_dim=16), 3, time_emb_dim=16, num_time_steps=schedule.T)
    assert generate_samples(model, schedule, (2,), 6, class_labels=2).shape == (6, 2)
    assert generate_samples(model, schedule, (2,), 3, class_labels=[0, 1, 2]).shape == (3, 2)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        generate_samples(model, schedule, (2,), 2, class_labels=[0, 3])
    with pytest.raises(ValueError, match="not class-conditional"):
        generate_samples(tiny_model(schedule.T), schedule, (2,), 2, class_labels=1)


def test_schedule_longer_than_the_model_is_rejected():
    with pytest.raises(ValueError, match="num_time_steps=100"):
        generate_samples(tiny_model(10), LinearNoiseSchedule(100), (2,), 2)


def test_shape_errors_explain_the_call():
    with pytest.raises(ValueError, match="num_samples"):
        generate_samples(tiny_model(10), LinearNoiseSchedule(10), (2,))
