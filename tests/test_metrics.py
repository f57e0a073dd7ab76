"""Sample-quality metrics against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_playground.evaluation import mmd_rbf, sample_quality, sliced_wasserstein


def test_sliced_wasserstein_of_a_shift_is_its_length_over_sqrt_d():
    """Projecting a shift mu on theta moves every point by theta.mu, so SW_2^2 = E (theta.mu)^2 = |mu|^2 / d."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 3, generator=generator)
    mu = torch.tensor([0.3, -0.4, 1.2])
    sw = sliced_wasserstein(x, x + mu, num_projections=20_000, generator=generator)
    assert sw == pytest.approx(mu.norm().item() / math.sqrt(3), rel=0.02)
    assert sliced_wasserstein(x, x.flip(0), generator=generator) == pytest.approx(0.0, abs=1e-12)


def test_mmd_is_zero_for_a_sample_against_itself_and_grows_with_distance():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(500, 2, generator=generator)
    assert mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12)
    near, far = mmd_rbf(x + 0.2, x), mmd_rbf(x + 1.0, x)
    assert 0 < near < far


def test_mmd_matches_a_brute_force_computation():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(40, 2, generator=generator), torch.randn(30, 2, generator=generator) + 0.5
    h = 0.8

    def k(a, b):
        return math.exp(-((a - b) ** 2).sum().item() / (2 * h * h))

    brute = (
        sum(k(a, b) for a in x for b in x) / 40**2
        + sum(k(a, b) for a in y for b in y) / 30**2
        - 2 * sum(k(a, b) for a in x for b in y) / (40 * 30)
    )
    assert mmd_rbf(x, y, bandwidth=h) == pytest.approx(brute, rel=1e-6)


def test_sample_quality_reports_ratios_to_the_data_floor():
    generator = torch.Generator().manual_seed(3)
    real, reference, generated = (torch.randn(800, 2, generator=generator) for _ in range(3))
    quality = sample_quality(generated + 0.5, real, reference)
    assert quality["sliced_wasserstein_ratio"] == pytest.approx(
        quality["sliced_wasserstein"] / quality["sliced_wasserstein_floor"]
    )
    assert quality["sliced_wasserstein_ratio"] > 3 and quality["mmd2_ratio"] > 3
    assert sample_quality(generated, real, reference)["sliced_wasserstein_ratio"] < 2


def test_metrics_reject_images_and_nans():
    with pytest.raises(ValueError, match="flatten images first"):
        sliced_wasserstein(torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        mmd_rbf(torch.full((4, 2), float("nan")), torch.zeros(4, 2))
