"""Inpainting and SDEdit against closed forms: Gaussian data, whose exact denoiser and conditionals are known."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_playground import EDMDiffusion, LinearNoiseSchedule, OptimalDenoiser, RectifiedFlow, generate_samples
from diffusion_playground.diffusion import Denoiser
from diffusion_playground.diffusion.backward import strided_posterior
from diffusion_playground.diffusion.editing import inpaint, sdedit, sdedit_start_step

from conftest import tiny_model

RHO = 0.9  # correlation of the two coordinates of the Gaussian data
N = 20_000


class CorrelatedPairDenoiser(Denoiser):
    """x0 ~ N(0, C) with C = [[1, RHO], [RHO, 1]]: E[x0 | x0 + sigma eps = x] = C (C + sigma^2 I)^{-1} x."""

    def forward(self, x, sigma, labels=None):
        covariance = torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=torch.float64)
        gain = covariance @ torch.linalg.inv(covariance + float(sigma) ** 2 * torch.eye(2, dtype=torch.float64))
        return (x.double() @ gain.T).to(x.dtype)


class IsotropicDenoiser(Denoiser):
    """x0 ~ N(0, STD^2 I): E[x0 | x] = STD^2 / (STD^2 + sigma^2) x."""

    STD = 0.5

    def forward(self, x, sigma, labels=None):
        return self.STD**2 / (self.STD**2 + sigma**2) * x


def known_second_coordinate(value: float) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.tensor([[0.0, value]]).expand(N, 2).contiguous()
    return image, torch.tensor([0.0, 1.0])  # the first coordinate is filled in


def test_inpainting_keeps_the_known_values_exactly():
    schedule = LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)
    image = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([1.0, 0.0])
    out = inpaint(tiny_model(), schedule, image, mask, steps=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 0], image[:, 0])
    assert not torch.allclose(out[:, 1], image[:, 1])


@pytest.mark.parametrize("process", [LinearNoiseSchedule(200, beta_start=1e-3, beta_end=0.05), RectifiedFlow(200)], ids=["vp", "flow"])
def test_repaint_resampling_nears_the_exact_conditional_that_replacement_alone_misses(process):
    """The exact p(x_1 | x_2 = y) = N(RHO y, 1 - RHO^2) = N(1.35, 0.19). Plain replacement is pulled towards the
    prior (measured on this 200-step chain: mean 0.93, variance 0.31): its unknown coordinate is denoised as if the
    noised known one were all it knew. Ten resamplings per step (RePaint, section 4.2) bring the mean to 1.32 and
    the variance to 0.16-0.18; more repeats or a coarser grid undershoot the variance (the method is approximate)."""
    y = 1.5
    image, mask = known_second_coordinate(y)
    plain = inpaint(CorrelatedPairDenoiser(), process, image, mask, generator=torch.Generator().manual_seed(0))[:, 0]
    repaint = inpaint(CorrelatedPairDenoiser(), process, image, mask, resample=10, generator=torch.Generator().manual_seed(0))[:, 0]
    exact_mean, exact_var = RHO * y, 1 - RHO**2
    assert plain.mean().item() < 0.75 * exact_mean
    assert plain.var().item() > 1.4 * exact_var
    assert repaint.mean().item() == pytest.approx(exact_mean, abs=0.05)
    assert repaint.var().item() == pytest.approx(exact_var, rel=0.2)


def test_inpainting_with_the_optimal_denoiser_completes_the_data_point_more_often_with_resampling():
    """Three points with distinct second coordinates: knowing it names the point, and the right completion is that
    point's first coordinate. Plain replacement finds it 57% of the time on 50 steps (measured), RePaint with 10
    resamplings 85%; a wrong completion pairs the known value with another point's first coordinate."""
    data = torch.tensor([[-2.0, -1.0], [0.5, 0.0], [2.0, 1.0]])
    image, mask = data.repeat(300, 1), torch.tensor([0.0, 1.0])

    def right(resample: int) -> float:
        out = inpaint(OptimalDenoiser(data), LinearNoiseSchedule.scaled(200), image, mask, steps=50, resample=resample,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert torch.equal(out[:, 1], image[:, 1])
        return ((out - image).abs().max(dim=1).values < 1e-3).float().mean().item()

    assert right(1) < 0.7 < 0.8 < right(10)


def test_sdedit_at_strength_zero_returns_the_input():
    image = torch.randn(8, 2)
    assert torch.equal(sdedit(tiny_model(), LinearNoiseSchedule(50), image, 0.0), image)


def ddpm_chain_moments(schedule: LinearNoiseSchedule, t0: int, x_in: float, s2: float) -> tuple[float, float]:
    """Mean and variance of DDPM's x_0 started from q(x_{t0} | x_in) for data N(0, s2): every step is linear,
    x_s = (c_x0 g_t + c_xt) x_t + sqrt(v) z with x0_hat = g_t x_t, g_t = a s2 / (a^2 s2 + 1 - a^2)."""
    steps = list(range(t0, -1, -1))
    alpha_bars = schedule.alpha_bars_float64
    mean, var = math.sqrt(alpha_bars[t0]) * x_in, 1 - float(alpha_bars[t0])
    for i, t in enumerate(steps):
        a2 = float(alpha_bars[t])
        gain = math.sqrt(a2) * s2 / (a2 * s2 + 1 - a2)
        coef_x0, coef_xt, variance = strided_posterior(schedule, steps)[:, i].double().tolist()
        mean, var = (coef_x0 * gain + coef_xt) * mean, (coef_x0 * gain + coef_xt) ** 2 * var + variance
    return mean, var


def test_sdedit_with_ddpm_draws_the_posterior_given_the_noised_input():
    """x_{t0} = a (x_in + sigma eps): the reverse process from there draws p(x0 | x_sigma), so the output has mean
    k x_in and variance k^2 sigma^2 + k sigma^2 with k = s^2 / (s^2 + sigma^2), for data N(0, s^2 I); DDPM's chain
    of Gaussian steps gets within 6% of that variance (its moments, in closed form, are matched to 2%)."""
    schedule = LinearNoiseSchedule(200, beta_start=1e-3, beta_end=0.05)
    strength = 0.25
    t0 = sdedit_start_step(schedule, strength)
    assert t0 == 49
    sigma, s2 = float(schedule.sigmas[t0]), IsotropicDenoiser.STD**2
    k = s2 / (s2 + sigma**2)
    x_in = torch.full((N, 2), 1.2)
    out = sdedit(IsotropicDenoiser(), schedule, x_in, strength, generator=torch.Generator().manual_seed(0))
    chain_mean, chain_var = ddpm_chain_moments(schedule, t0, 1.2, s2)
    assert out.mean().item() == pytest.approx(chain_mean, abs=0.01)
    assert out.var().item() == pytest.approx(chain_var, rel=0.02)
    assert chain_mean == pytest.approx(k * 1.2, rel=1e-4)
    assert chain_var == pytest.approx(k**2 * sigma**2 + k * sigma**2, rel=0.06)


@pytest.mark.parametrize(("sampler", "tolerance"), [("ddim", 0.04), ("heun", 2e-3), ("dpmpp_2m", 2e-3)])
def test_sdedit_with_an_ode_sampler_follows_the_gaussian_flow_map(sampler, tolerance):
    """The probability-flow ODE of N(0, s^2 I) maps x_sigma to x_sigma s / sqrt(s^2 + sigma^2) at sigma = 0 (up to
    the last step's D at sigma_min): the output is a known multiple of the noised input, reached to the sampler's order."""
    schedule = LinearNoiseSchedule(200, beta_start=1e-3, beta_end=0.05)
    x_in = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    out, trajectory = sdedit(IsotropicDenoiser(), schedule, x_in, 0.5, sampler=sampler, steps=40,
                             generator=torch.Generator().manual_seed(0), return_trajectory=True)  # fmt: skip
    sigma_start = float(schedule.sigmas[sdedit_start_step(schedule, 0.5)])
    x_sigma = trajectory[0] / float(schedule.input_scale(torch.tensor(sigma_start)))  # the noised input, x_in + sigma eps
    noise = (x_sigma - x_in) / sigma_start
    assert noise.std().item() == pytest.approx(1.0, rel=0.2)
    s2, sigma_min = IsotropicDenoiser.STD**2, float(schedule.sigmas[0])
    exact = x_sigma * s2 / math.sqrt((s2 + sigma_start**2) * (s2 + sigma_min**2))
    error = ((out - exact).abs().max() / exact.abs().max()).item()
    assert error < tolerance, f"{sampler}: relative error {error:.2e} on 40 steps (first order: ddim; second: heun, dpmpp_2m)"


def test_generate_samples_from_x_start_equals_its_own_noise():
    schedule = LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)
    model = tiny_model()
    z = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    expected = generate_samples(model, schedule, (2,), 8, sampler="ddim", steps=10, generator=torch.Generator().manual_seed(0))
    got = generate_samples(model, schedule, (8, 2), sampler="ddim", steps=10, x_start=z)
    assert torch.allclose(got, expected)
    with pytest.raises(ValueError, match="x_start must be a tensor of the batch shape"):
        generate_samples(model, schedule, (2,), 4, x_start=z)


def test_bad_inputs_are_refused_with_a_reason():
    schedule = LinearNoiseSchedule(50)
    model, image = tiny_model(), torch.zeros(4, 2)
    with pytest.raises(ValueError, match="does not fit the image"):
        inpaint(model, schedule, image, torch.ones(3))
    with pytest.raises(ValueError, match="only 0 .fill in. and 1 .known."):
        inpaint(model, schedule, image, torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="sampler must be 'ddpm' or 'ddim'"):
        inpaint(model, schedule, image, torch.ones(2), sampler="heun")
    with pytest.raises(ValueError, match="resample"):
        inpaint(model, schedule, image, torch.ones(2), resample=0)
    with pytest.raises(ValueError, match="image must be a float tensor"):
        inpaint(model, schedule, torch.zeros(2, dtype=torch.long), torch.ones(2))
    with pytest.raises(ValueError, match="strength must lie in"):
        sdedit(model, schedule, image, 1.5)
    with pytest.raises(TypeError, match="fraction of the trained steps"):
        sdedit(model, EDMDiffusion(), image, 0.5)
