"""The exact denoiser of a finite dataset against a brute-force softmax."""

from __future__ import annotations

import pytest
import torch

from diffusion_playground import OptimalDenoiser
from diffusion_playground.diffusion import NULL_LABEL


def brute_force(data: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x0 | x] = sum_i softmax_i(-||x - x_i||^2 / (2 sigma^2)) x_i, with the full (B, N) matrix."""
    logits = -torch.cdist(x.double(), data.double()).square() / (2 * sigma**2)  # (B, N)
    return torch.softmax(logits, dim=1) @ data.double()  # (B, D)


@pytest.fixture
def data() -> torch.Tensor:
    return torch.randn(300, 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sigma", [0.05, 0.5, 5.0])
def test_chunked_denoiser_equals_the_brute_force_softmax(data, sigma):
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1)) * 2
    expected = brute_force(data, x, sigma).float()
    assert torch.allclose(OptimalDenoiser(data)(x, sigma), expected, atol=1e-5)
    assert torch.allclose(OptimalDenoiser(data, chunk_size=7)(x, sigma), expected, atol=1e-5)  # streaming log-sum-exp


def test_small_sigma_is_finite_and_picks_the_nearest_point(data):
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(2))
    out = OptimalDenoiser(data, chunk_size=16)(x, 1e-4)  # logits ~ -1e8: exp underflows without the shift
    nearest = data[torch.cdist(x, data).argmin(dim=1)]
    assert torch.isfinite(out).all() and torch.allclose(out, nearest, atol=1e-6)


def test_large_sigma_gives_the_data_mean_and_per_sample_sigmas_work(data):
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(OptimalDenoiser(data)(x, 1e4), data.mean(0).expand(4, 2), atol=1e-4)
    sigmas = torch.tensor([0.05, 0.5, 5.0, 1e4])
    per_sample = OptimalDenoiser(data)(x, sigmas)
    for i, sigma in enumerate(sigmas.tolist()):
        assert torch.allclose(per_sample[i], brute_force(data, x[i : i + 1], sigma)[0].float(), atol=1e-5)


def test_image_shaped_data(data):
    images = torch.randn(20, 1, 3, 3, generator=torch.Generator().manual_seed(4))
    x = torch.randn(5, 1, 3, 3, generator=torch.Generator().manual_seed(5))
    expected = brute_force(images.flatten(1), x.flatten(1), 1.0).float().reshape(5, 1, 3, 3)
    assert torch.allclose(OptimalDenoiser(images)(x, 1.0), expected, atol=1e-5)


def test_class_conditional_denoiser_averages_within_the_class(data):
    labels = (data[:, 0] > 0).long()
    denoiser = OptimalDenoiser(data, labels)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(6))
    assert denoiser.num_classes == 2
    assert torch.allclose(denoiser(x, 0.7, torch.ones(6, dtype=torch.long)), brute_force(data[labels == 1], x, 0.7).float(), atol=1e-5)
    mixed = torch.tensor([0, NULL_LABEL, 1, NULL_LABEL, 0, 1])
    out = denoiser(x, 0.7, mixed)
    assert torch.allclose(out[1], brute_force(data, x[1:2], 0.7)[0].float(), atol=1e-5)
    assert torch.allclose(out[0], brute_force(data[labels == 0], x[0:1], 0.7)[0].float(), atol=1e-5)


def test_ten_thousand_points_by_ten_thousand_queries_fit_in_chunks():
    generator = torch.Generator().manual_seed(7)
    data, x = torch.randn(10_000, 2, generator=generator), torch.randn(10_000, 2, generator=generator)
    out = OptimalDenoiser(data, chunk_size=1024)(x, 0.1)  # at most 1024 x 1024 distances at a time
    assert out.shape == (10_000, 2) and torch.isfinite(out).all()
    assert torch.allclose(out[:3], brute_force(data, x[:3], 0.1).float(), atol=1e-5)


def test_bad_inputs_raise_clear_errors(data):
    with pytest.raises(ValueError, match="shape"):
        OptimalDenoiser(torch.zeros(5))
    with pytest.raises(ValueError, match="sigma > 0"):
        OptimalDenoiser(data)(data[:2], 0.0)
    with pytest.raises(ValueError, match="without labels"):
        OptimalDenoiser(data)(data[:2], 1.0, torch.zeros(2, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_denoiser_follows_its_data_to_the_gpu(data):
    denoiser = OptimalDenoiser(data).to("cuda")
    x = torch.randn(8, 2, device="cuda")
    assert denoiser(x, 0.3).device.type == "cuda"
    assert torch.allclose(denoiser(x, 0.3).cpu(), brute_force(data, x.cpu(), 0.3).float(), atol=1e-5)
