"""Classifier-free guidance: w = 0 is the conditional model, one batched call per evaluation, the exact rule on exact denoisers."""

from __future__ import annotations

import pytest
import torch

from diffusion_playground import (
    ClassifierFreeGuidance,
    LinearNoiseSchedule,
    MLPBackbone,
    OptimalDenoiser,
    TimeAndClassConditionedModel,
    as_denoiser,
    generate_samples,
)
from diffusion_playground.diffusion import NULL_LABEL

from conftest import tiny_model


@pytest.fixture
def class_model(schedule):
    torch.manual_seed(0)
    model = TimeAndClassConditionedModel(MLPBackbone(2, cond_dim=16), 3, time_emb_dim=16, num_time_steps=schedule.T)
    return model.eval()


def test_guidance_with_w_zero_is_the_conditional_model(class_model, schedule):
    denoiser = as_denoiser(class_model, schedule)
    x, labels = torch.randn(5, 2), torch.tensor([0, 1, 2, 1, 0])
    sigma = schedule.sigmas[17]
    assert torch.allclose(ClassifierFreeGuidance(denoiser, 0.0)(x, sigma, labels), denoiser(x, sigma, labels), atol=1e-6)
    conditional = generate_samples(class_model, schedule, (2,), 5, sampler="dpmpp_2m", steps=6, class_labels=labels,
                                   generator=torch.Generator().manual_seed(1))  # fmt: skip
    guided = generate_samples(class_model, schedule, (2,), 5, sampler="dpmpp_2m", steps=6, class_labels=labels,
                              guidance_scale=0.0, generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.equal(conditional, guided)


def test_the_null_label_is_the_unconditional_model_in_a_mixed_batch(class_model, schedule):
    denoiser = as_denoiser(class_model, schedule)
    x, sigma = torch.randn(4, 2), schedule.sigmas[9]
    mixed = denoiser(x, sigma, torch.tensor([2, NULL_LABEL, 0, NULL_LABEL]))
    assert torch.allclose(mixed[[1, 3]], denoiser(x, sigma, None)[[1, 3]], atol=1e-6)
    assert torch.allclose(mixed[[0, 2]], denoiser(x[[0, 2]], sigma, torch.tensor([2, 0])), atol=1e-6)


def test_guidance_makes_one_batched_call_of_twice_the_batch(class_model, schedule):
    batches = []
    class_model.backbone.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    guided = ClassifierFreeGuidance(as_denoiser(class_model, schedule), 3.0)
    guided(torch.randn(5, 2), schedule.sigmas[3], torch.tensor([0, 1, 2, 1, 0]))
    assert batches == [10]


def test_guidance_on_exact_denoisers_is_the_extrapolation_rule():
    data = torch.randn(200, 2, generator=torch.Generator().manual_seed(2))
    labels = (data[:, 1] > 0).long()
    exact = OptimalDenoiser(data, labels)
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0])
    w = 2.5
    expected = (1 + w) * exact(x, 0.8, y) - w * exact(x, 0.8, None)  # Ho & Salimans 2022, eq. 6
    assert torch.allclose(ClassifierFreeGuidance(exact, w)(x, 0.8, y), expected, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler", "heun", "dpmpp_2m"])
def test_every_sampler_runs_with_guidance(class_model, schedule, sampler):
    samples = generate_samples(class_model, schedule, (2,), 4, sampler=sampler, steps=4, class_labels=1, guidance_scale=2.0)
    assert samples.shape == (4, 2) and torch.isfinite(samples).all()


def test_strong_guidance_on_the_exact_denoiser_samples_the_class():
    data = torch.cat([torch.full((50, 2), -2.0), torch.full((50, 2), 2.0)]) + 0.1 * torch.randn(100, 2)
    labels = torch.cat([torch.zeros(50), torch.ones(50)]).long()
    samples = generate_samples(OptimalDenoiser(data, labels), LinearNoiseSchedule.scaled(100), (2,), 64,
                               sampler="heun", steps=10, class_labels=1, guidance_scale=3.0)  # fmt: skip
    assert (samples > 0).all()


def test_guidance_errors(schedule, class_model):
    with pytest.raises(ValueError, match="class-conditional"):
        ClassifierFreeGuidance(as_denoiser(tiny_model(schedule.T), schedule), 2.0)
    with pytest.raises(ValueError, match="not class-conditional"):
        generate_samples(tiny_model(schedule.T), schedule, (2,), 2, sampler="ddim", guidance_scale=2.0, class_labels=0)
    with pytest.raises(ValueError, match="needs class_labels"):
        generate_samples(class_model, schedule, (2,), 2, sampler="ddim", guidance_scale=2.0)
    with pytest.raises(ValueError, match=">= 0"):
        ClassifierFreeGuidance(as_denoiser(class_model, schedule), -1.0)
