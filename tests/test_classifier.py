"""The classifier-based image figures: the Fréchet distance against closed forms, accuracy and caching on digits."""

from __future__ import annotations

import itertools

import pytest
import torch

from diffusion_playground.data import load_digits_images
from diffusion_playground.evaluation.classifier import (
    class_accuracy,
    classifier_metrics,
    classifier_outputs,
    frechet_distance,
    load_or_train_classifier,
)


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
    # Gaussians with exact moments: features = mu + z diag(s) with z whitened, so mu and S = diag(s^2) are exact
    z = torch.randn(4000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = (z - z.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # sample mean 0, covariance I
    mu_a, s_a = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 0.5])
    mu_b, s_b = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([3.0, 1.0, 0.5])
    expected = (mu_a - mu_b).square().sum() + (s_a - s_b).square().sum()  # diagonal S: sum (sqrt(S_a) - sqrt(S_b))^2
    got = frechet_distance(mu_a + z * s_a, mu_b + z * s_b)
    assert got == pytest.approx(float(expected), rel=1e-9), (got, float(expected))


def test_frechet_distance_is_zero_against_itself_and_grows_with_noise():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(1))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    generator = torch.Generator().manual_seed(2)
    distances = [frechet_distance(x + s * torch.randn(x.shape, generator=generator), x) for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in itertools.pairwise(distances)), distances
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(x, x[:, :3])


def test_digits_classifier_is_accurate_cached_and_separates_real_from_noisy_images(tmp_path):
    images, labels = load_digits_images(train=True)
    test_images, test_labels = load_digits_images(train=False)
    cache = tmp_path / "classifier.pt"
    classifier = load_or_train_classifier(cache, images, labels, 10, epochs=5)
    assert cache.is_file() and class_accuracy(classifier, test_images, test_labels) > 0.85
    reloaded = load_or_train_classifier(cache, images, labels, 10, epochs=5)  # from the cache: same features
    assert torch.equal(classifier_outputs(reloaded, test_images)[0], classifier_outputs(classifier, test_images)[0])
    noisy = (test_images + 0.8 * torch.randn(test_images.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    real = classifier_metrics(classifier, test_images, test_labels, images, test_images, test_labels)
    corrupted = classifier_metrics(classifier, noisy, test_labels, images, test_images, test_labels)
    assert real["frechet"] == real["frechet_floor"] and real["accuracy"] == real["accuracy_real"]
    assert corrupted["frechet"] > 5 * real["frechet_floor"] and corrupted["accuracy"] < real["accuracy"]
