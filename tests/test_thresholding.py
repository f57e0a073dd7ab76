"""x0 clipping and dynamic thresholding (Saharia et al. 2022): the formula, and every sampler honouring it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion_playground import LinearNoiseSchedule, generate_samples
from diffusion_playground.diffusion.backward import SAMPLERS, sample_ddpm
from diffusion_playground.diffusion.thresholding import threshold_x0


class FarOutside(nn.Module):
    """An eps-model whose x0 estimate leaves [-1, 1]: eps_hat = 0.3 everywhere, so x0_hat = x_sigma - 0.3 sigma."""

    prediction_type, num_time_steps = "eps", 100

    def forward(self, x_t, t):
        return torch.full_like(x_t, 0.3)


def test_static_clipping_is_a_clamp_and_dynamic_thresholding_rescales_by_the_percentile():
    x0 = torch.tensor([[0.5, -3.0, 2.0, 0.1], [0.2, -0.4, 0.9, 0.0]])  # (2, 4)
    assert torch.equal(threshold_x0(x0), x0.clamp(-1, 1))
    # p = 1: s = max(1, max|x0|) per sample: 3 for the first row (divided by 3), 1 for the second (unchanged)
    assert torch.allclose(threshold_x0(x0, 1.0), torch.stack([x0[0] / 3.0, x0[1]]))
    # p = 0.5 of |x0_0| = (0.1, 0.5, 2, 3): the linear-interpolated median 1.25 -> clip to +-1.25, divide by 1.25
    s = torch.quantile(x0[0].abs(), 0.5)
    assert torch.allclose(threshold_x0(x0, 0.5)[0], x0[0].clamp(-s, s) / s)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        threshold_x0(x0, 1.5)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_clip_denoised_keeps_every_sampler_in_the_data_range(sampler):
    schedule = LinearNoiseSchedule.scaled(100)
    draw = dict(sampler=sampler, steps=10, generator=torch.Generator().manual_seed(0))
    raw = generate_samples(FarOutside(), schedule, (1, 4, 4), 8, **draw)
    draw["generator"] = torch.Generator().manual_seed(0)
    clipped = generate_samples(FarOutside(), schedule, (1, 4, 4), 8, clip_denoised=True, **draw)
    assert raw.abs().max() > 2.0  # the unclipped samples leave the range
    assert clipped.abs().max() <= 1.0 + 1e-6  # the last step of every sampler returns the (clipped) x0 estimate
    draw["generator"] = torch.Generator().manual_seed(0)
    dynamic = generate_samples(FarOutside(), schedule, (1, 4, 4), 8, dynamic_threshold=0.9, **draw)
    assert dynamic.abs().max() <= 1.0 + 1e-6


def test_clipping_through_the_denoiser_view_equals_sample_ddpm_own_clipping():
    schedule = LinearNoiseSchedule.scaled(100)
    generator = torch.Generator().manual_seed(1)  # generate_samples draws z first, then the step noise from it
    z = torch.randn(6, 1, 4, 4, generator=generator)
    reference = sample_ddpm(FarOutside(), z, schedule, clip_denoised=True, generator=generator)
    generator = torch.Generator().manual_seed(1)
    via_view = generate_samples(FarOutside(), schedule, (1, 4, 4), 6, clip_denoised=True, generator=generator)
    assert torch.allclose(via_view, reference, atol=1e-5)


def test_a_bad_percentile_is_refused():
    with pytest.raises(ValueError, match="percentile"):
        generate_samples(FarOutside(), LinearNoiseSchedule.scaled(100), (1, 2, 2), 2, dynamic_threshold=0.0)
