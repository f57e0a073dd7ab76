"""The radially averaged power spectrum, against closed forms: white noise is flat at its variance, a plane wave
puts its power in one ring, and the forward process adds sigma^2 at every frequency."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_playground.evaluation.spectrum import radial_power_spectrum


def test_white_noise_has_a_flat_spectrum_at_its_variance():
    noise = 0.5 * torch.randn(400, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    frequencies, power = radial_power_spectrum(noise, subtract_mean=False)
    assert frequencies.tolist() == [k / 16 for k in range(9)]
    assert torch.allclose(power[1:], torch.full_like(power[1:], 0.25), rtol=0.08)  # ring 0 is a single coefficient


def test_a_plane_wave_puts_its_power_in_its_ring():
    n = torch.arange(32, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * 5 / 32 * n)[None, :].expand(32, 32)  # 5 cycles across the image, along x
    frequencies, power = radial_power_spectrum(wave[None, None])
    assert frequencies[power.argmax()].item() == pytest.approx(5 / 32)
    assert power[torch.arange(len(power)) != 5].abs().max() < 1e-20


def test_noise_of_variance_sigma_squared_adds_sigma_squared_at_every_frequency():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(300, 1, 16, 16, generator=g).cumsum(dim=3)  # correlated along x: power falls with |k|
    _, clean = radial_power_spectrum(images)
    _, noisy = radial_power_spectrum(images + 0.3 * torch.randn(images.shape, generator=g))
    excess = noisy[1:] - clean[1:]  # sigma^2 = 0.09, up to the images-noise cross terms, whose spread grows with P
    assert ((excess - 0.09).abs() <= 0.03 + 0.01 * clean[1:]).all(), excess
    assert clean[1] > 5 * clean[-1]


def test_bad_images_are_refused():
    for bad in (torch.zeros(8, 8), torch.zeros(0, 1, 8, 8), torch.zeros(2, 1, 1, 8)):
        with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
            radial_power_spectrum(bad)
