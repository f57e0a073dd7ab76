"""Samplers against closed forms: Gaussian data (whose probability-flow ODE is solvable) and a one-point dataset."""

from __future__ import annotations

import math

import pytest
import torch

from torch import nn

from diffusion_playground import CosineNoiseSchedule, EDMDiffusion, LinearNoiseSchedule, OptimalDenoiser, generate_samples
from diffusion_playground.diffusion import (
    SAMPLERS,
    Denoiser,
    as_denoiser,
    karras_sigmas,
    sample_ddim,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    sigma_range,
    step_sigmas,
    strided_time_steps,
    uniform_time_steps,
)
from diffusion_playground.diffusion.step_schedules import FEW_STEPS, log_snr_sigmas, snap_to_time_steps
from diffusion_playground.diffusion.backward import sampler_sigmas, strided_posterior
from diffusion_playground.diffusion.noise_schedule import (
    alpha_bar_from_sigma,
    nearest_time_step,
    sigma_from_alpha_bar,
    sigma_to_t,
    vp_scale,
)

from conftest import tiny_model
from test_sampling import MEAN, STD, ExactGaussianDenoiser

SIGMA_MIN, SIGMA_MAX = 0.02, 20.0


class GaussianDenoiser(Denoiser):
    """For x0 ~ N(MEAN, STD^2 I) and x = x0 + sigma eps: E[x0 | x] = MEAN + STD^2 / (STD^2 + sigma^2) (x - MEAN)."""

    def forward(self, x, sigma, labels=None):
        return MEAN + STD**2 / (STD**2 + sigma**2) * (x - MEAN)


def exact_ode_sample(x_max: torch.Tensor) -> torch.Tensor:
    """The sampler's ideal output from x at SIGMA_MAX: the PF-ODE dx/dsigma = (x - D) / sigma = sigma (x - m) / (s^2 + sigma^2)
    gives x(sigma) - m = (x_max - m) sqrt((s^2 + sigma^2) / (s^2 + sigma_max^2)); the last step returns D(x(sigma_min), sigma_min)."""
    return MEAN + (x_max - MEAN) * STD**2 / math.sqrt((STD**2 + SIGMA_MIN**2) * (STD**2 + SIGMA_MAX**2))


@pytest.mark.parametrize(
    ("sampler", "order"), [(sample_euler, 1), (sample_ddim, 1), (sample_heun, 2), (sample_dpmpp_2m, 2)]
)
def test_solver_error_shrinks_at_the_expected_order(sampler, order):
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * math.sqrt(1 + SIGMA_MAX**2)
    exact = exact_ode_sample(x)
    steps = [16, 32, 64]
    errors = [
        (sampler(GaussianDenoiser(), x, karras_sigmas(n, SIGMA_MIN, SIGMA_MAX).double()) - exact).square().mean().sqrt().item()
        for n in steps
    ]
    slope = -(math.log(errors[-1]) - math.log(errors[0])) / (math.log(steps[-1]) - math.log(steps[0]))
    assert errors[-1] < errors[1] < errors[0]
    assert slope == pytest.approx(order, abs=0.25), f"fitted order {slope:.2f}, expected {order} (errors {errors})"


def test_deterministic_ddim_is_euler_in_the_sigma_variable():
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * SIGMA_MAX
    sigmas = karras_sigmas(7, SIGMA_MIN, SIGMA_MAX).double()
    assert torch.allclose(sample_ddim(GaussianDenoiser(), x, sigmas), sample_euler(GaussianDenoiser(), x, sigmas), atol=1e-10)


def test_one_dpm_solver_step_is_ddim_and_heun_one_step_is_euler():
    """First steps of the 2nd-order methods against their hand-written closed forms."""
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3.0
    sigmas = torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64)
    _, trajectory = sample_dpmpp_2m(GaussianDenoiser(), x, sigmas, return_trajectory=True)
    d0 = GaussianDenoiser()(x, 3.0)
    assert torch.allclose(trajectory[1], d0 + (1.0 / 3.0) * (x - d0), atol=1e-12)  # x_s = D + (sigma_s / sigma_t)(x - D)
    _, trajectory = sample_heun(GaussianDenoiser(), x, sigmas, return_trajectory=True)
    euler = x + (1.0 - 3.0) * (x - d0) / 3.0
    d_prime = (euler - GaussianDenoiser()(euler, 1.0)) / 1.0
    assert torch.allclose(trajectory[1], x + (1.0 - 3.0) * ((x - d0) / 3.0 + d_prime) / 2, atol=1e-12)


SAMPLER_OPTIONS = [
    ("ddpm", {}), ("ddim", {}), ("ddim", {"eta": 1.0}), ("euler", {}), ("heun", {}), ("heun", {"s_churn": 5.0}),
    ("dpmpp_2m", {}),
]  # fmt: skip


@pytest.mark.parametrize(("sampler", "options"), SAMPLER_OPTIONS)
def test_every_sampler_lands_on_the_only_data_point(sampler, options):
    point = torch.tensor([[0.7, -1.3]])
    samples = generate_samples(
        OptimalDenoiser(point), LinearNoiseSchedule(100), (2,), 16, sampler=sampler, steps=7,
        generator=torch.Generator().manual_seed(3), **options,
    )  # fmt: skip
    assert torch.allclose(samples, point.expand(16, 2), atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "heun", "dpmpp_2m"])
def test_deterministic_samplers_are_reproducible_from_a_seed(schedule, sampler):
    model = tiny_model(schedule.T)
    draws = [
        generate_samples(model, schedule, (2,), 8, sampler=sampler, steps=5, generator=torch.Generator().manual_seed(seed))
        for seed in (4, 4, 5)
    ]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def assert_data_statistics(samples: torch.Tensor) -> None:
    """Mean and std of 20,000 samples against the data's N(MEAN, STD^2): 0.03 absolute, 5% relative."""
    assert samples.mean(0) == pytest.approx(torch.full((2,), MEAN), abs=0.03)
    assert samples.std(0) == pytest.approx(torch.full((2,), STD), rel=0.05)



def test_ddim_with_eta_one_matches_ddpm_marginals(gaussian_schedule):
    model = ExactGaussianDenoiser(gaussian_schedule, "eps")
    ddpm = generate_samples(model, gaussian_schedule, (2,), 20_000, generator=torch.Generator().manual_seed(6))
    ddim = generate_samples(
        model, gaussian_schedule, (2,), 20_000, sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(7)
    )
    for samples in (ddpm, ddim):
        assert_data_statistics(samples)
    assert ddim.mean(0) == pytest.approx(ddpm.mean(0), abs=0.03)
    assert ddim.std(0) == pytest.approx(ddpm.std(0), rel=0.05)


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", None), ("ddim", None), ("heun", 25), ("dpmpp_2m", 50)])
def test_the_exact_gaussian_denoiser_recovers_the_data(sampler, steps):
    """All T = 200 steps for the first-order samplers (at 25 steps their std is still ~10% low), ~50 NFE for the 2nd-order."""
    schedule = LinearNoiseSchedule.scaled(200)  # alpha_bar_{T-1} ~ 4e-5: the N(0, I) start is the true marginal
    model = ExactGaussianDenoiser(schedule, "v")
    samples = generate_samples(
        model, schedule, (2,), 20_000, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(8)
    )
    assert_data_statistics(samples)


@pytest.mark.parametrize("sampler", ["ddim", "heun", "dpmpp_2m"])
def test_every_prediction_type_gives_the_same_samples_on_every_sampler(gaussian_schedule, sampler):
    draws = [
        generate_samples(
            ExactGaussianDenoiser(gaussian_schedule, prediction_type), gaussian_schedule, (3,), 200, sampler=sampler,
            steps=10, generator=torch.Generator().manual_seed(9),
        )  # fmt: skip
        for prediction_type in ("eps", "x0", "v")
    ]
    assert torch.allclose(draws[0], draws[1], atol=1e-3) and torch.allclose(draws[0], draws[2], atol=1e-3)


def test_the_denoiser_view_of_the_exact_wrapper_is_the_closed_form(gaussian_schedule):
    denoiser = as_denoiser(ExactGaussianDenoiser(gaussian_schedule, "eps"), gaussian_schedule)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(10)) * 3
    for t in (0, 57, 199):
        sigma = gaussian_schedule.sigmas[t]
        assert torch.allclose(denoiser(x, sigma), GaussianDenoiser()(x, sigma), atol=1e-4)


def test_sigma_view_trajectory_starts_at_the_noise_and_ends_at_the_samples(schedule):
    samples, trajectory = generate_samples(
        tiny_model(schedule.T), schedule, (2,), 7, sampler="heun", steps=6, generator=torch.Generator().manual_seed(2),
        return_trajectory=True,
    )  # fmt: skip
    assert trajectory.shape[1:] == (7, 2) and trajectory.shape[0] <= 7
    assert torch.allclose(trajectory[0], torch.randn(7, 2, generator=torch.Generator().manual_seed(2)), atol=1e-5)
    assert torch.equal(trajectory[-1], samples)


def test_strided_ddpm_posterior_on_all_steps_is_the_schedules():
    schedule = LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)
    coef_x0, coef_xt, variance = strided_posterior(schedule, list(range(49, -1, -1))).flip(1)
    assert torch.allclose(coef_x0, schedule.posterior_mean_coef_x0, rtol=1e-5)
    assert torch.allclose(coef_xt, schedule.posterior_mean_coef_xt, rtol=1e-5)
    assert torch.allclose(variance, schedule.posterior_variance, rtol=1e-5, atol=1e-12)


def test_sigma_and_t_views_convert_both_ways():
    schedule = LinearNoiseSchedule.scaled(100)
    alpha_bar = schedule.alpha_bars_float64
    assert torch.allclose(alpha_bar_from_sigma(sigma_from_alpha_bar(alpha_bar)), alpha_bar)
    assert torch.allclose(sigma_to_t(schedule, schedule.sigmas.double()), torch.arange(100, dtype=torch.float64), atol=1e-3)
    assert torch.equal(nearest_time_step(schedule, schedule.sigmas), torch.arange(100))
    between = (schedule.sigmas[10] * schedule.sigmas[11]).sqrt()  # the log-midpoint
    assert sigma_to_t(schedule, between).item() == pytest.approx(10.5, abs=1e-3)
    assert sigma_to_t(schedule, 1e6).item() == 99 and sigma_to_t(schedule, 1e-9).item() == 0  # clamped


def test_step_schedules():
    assert uniform_time_steps(1000, 1000).tolist() == list(range(999, -1, -1))
    steps = uniform_time_steps(1000, 10)
    assert steps[0] == 999 and steps[-1] == 0 and (steps[1:] < steps[:-1]).all()
    sigmas = karras_sigmas(5, 0.01, 80.0)
    assert sigmas.shape == (6,) and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.01)
    schedule = LinearNoiseSchedule.scaled(1000)
    snapped = step_sigmas(schedule, 20, "karras", discrete=True)  # more than FEW_STEPS: the whole range
    assert set(snapped[:-1].tolist()) <= set(schedule.sigmas.tolist())
    first = nearest_time_step(schedule, 80.0)  # long grids start at sigma_max = 80 (Karras et al. 2022)
    assert len(snapped) == 21 and snapped[0] == schedule.sigmas[first] and snapped[-2] == schedule.sigmas[0]
    assert strided_time_steps(schedule, 10)[0] == first and strided_time_steps(schedule, 1000)[0] == 999  # ddpm's
    few = step_sigmas(schedule, FEW_STEPS, "karras")  # a few-step grid spans [0.1, 20], on trained levels
    assert few[0] == schedule.sigmas[nearest_time_step(schedule, 20.0)] and few[-2] == schedule.sigmas[nearest_time_step(schedule, 0.1)]
    assert step_sigmas(schedule, FEW_STEPS + 1, "karras")[0] == schedule.sigmas[first]
    assert step_sigmas(schedule, 10, "uniform")[0] == few[0]  # ddim and euler take the few-step range too
    assert step_sigmas(schedule, None)[0] == schedule.sigmas[-1]  # every trained step: from T-1
    grid = step_sigmas(schedule, 10, "karras", discrete=False, sigma_min=0.1, sigma_max=5.0)
    assert grid[0].item() == pytest.approx(5.0) and grid[-2].item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="within the trained noise levels"):
        step_sigmas(schedule, 10, "karras", sigma_max=1000.0)
    assert sigma_range(schedule, sigma_min=40.0, num_steps=10) == (40.0, 80.0)  # beyond [0.1, 20]: the whole range
    assert sigma_range(schedule, sigma_min=1.0, num_steps=10) == (1.0, 20.0)
    assert sigma_range(schedule, sigma_max=0.05, num_steps=10) == (pytest.approx(schedule.sigma_min), 0.05)
    tiny = LinearNoiseSchedule(20)  # sigma_{T-1} = 0.5 < 20: the few-step range is clipped to the trained one
    assert sigma_range(tiny, num_steps=5) == (0.1, pytest.approx(tiny.sigma_max))


def test_log_snr_grid_has_equal_steps_in_log_sigma():
    """DPM-Solver's logSNR schedule: lambda = -2 log sigma evenly spaced; Karras' grid tends to it as rho grows."""
    sigmas = log_snr_sigmas(9, 0.1, 20.0)
    assert sigmas.shape == (10,) and sigmas[-1] == 0
    steps = sigmas[:-1].double().log().diff()
    assert torch.allclose(steps, torch.full_like(steps, -math.log(200.0) / 8), atol=1e-6)
    assert torch.allclose(karras_sigmas(9, 0.1, 20.0, rho=1e4), sigmas, rtol=1e-3)
    assert log_snr_sigmas(1, 0.1, 20.0).tolist() == [20.0, 0.0]
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        log_snr_sigmas(5, 2.0, 1.0)


def test_samplers_walk_a_grid_given_as_an_argument():
    """``sigmas=`` is the grid itself: the same samples as the sampler function called on it."""
    data = torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.0]])
    denoiser, schedule = OptimalDenoiser(data), EDMDiffusion(sigma_data=1.0)
    grid = karras_sigmas(6, 0.05, 10.0)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    expected = sample_dpmpp_2m(denoiser, z / schedule.input_scale(grid[0]).item(), grid)
    got = generate_samples(denoiser, schedule, (2,), 64, sampler="dpmpp_2m", sigmas=grid, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, expected)
    trained_schedule = LinearNoiseSchedule(100)  # a wrapper takes integer t: the grid is snapped to its levels
    wrapper = BiasedEpsModel(data, trained_schedule, 0.0)
    snapped = snap_to_time_steps(trained_schedule, grid)
    expected = sample_euler(as_denoiser(wrapper, trained_schedule), z / vp_scale(snapped[0]).item(), snapped)
    got = generate_samples(wrapper, trained_schedule, (2,), 64, sampler="euler", sigmas=grid, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, expected)
    with pytest.raises(ValueError, match="without steps"):
        generate_samples(denoiser, schedule, (2,), 4, sampler="euler", sigmas=grid, steps=6)
    with pytest.raises(ValueError, match="sigma_0 > sigma_1"):
        generate_samples(denoiser, schedule, (2,), 4, sampler="euler", sigmas=[1.0, 2.0, 0.0])
    with pytest.raises(ValueError, match="ddpm"):
        generate_samples(denoiser, LinearNoiseSchedule(100), (2,), 4, sampler="ddpm", sigmas=grid)


class BiasedEpsModel(nn.Module):
    """An eps-predicting wrapper of the exact denoiser, wrong by ``bias`` in every output: a stand-in for the
    small errors of a trained network."""

    prediction_type = "eps"
    num_classes = None

    def __init__(self, data: torch.Tensor, noise_schedule, bias: float) -> None:
        super().__init__()
        self.denoiser, self.noise_schedule, self.bias = OptimalDenoiser(data), noise_schedule, bias
        self.num_time_steps = noise_schedule.T

    def forward(self, x_t, t, y=None):
        a_t = self.noise_schedule.sqrt_alpha_bars[t].reshape(-1, 1)
        s_t = self.noise_schedule.sqrt_one_minus_alpha_bars[t].reshape(-1, 1)
        x0 = self.denoiser(x_t / a_t, self.noise_schedule.sigmas[t], None)
        return (x_t - a_t * x0) / s_t + self.bias


def test_few_step_samplers_on_the_cosine_schedule_do_not_amplify_eps_errors():
    """The last cosine step has alpha_bar ~ 2e-9 (sigma ~ 2e4): started there, an eps error of 0.01 becomes an x0
    error of ~200. The default grid starts at sigma = 20 (10 steps; 80 with more), so the error stays of the order
    of the bias."""
    schedule = CosineNoiseSchedule(1000)
    data = torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.0]])
    exact, biased = BiasedEpsModel(data, schedule, 0.0), BiasedEpsModel(data, schedule, 0.01)
    for sampler in ("ddim", "dpmpp_2m", "ddpm"):
        def sample(model, **kwargs):
            return generate_samples(model, schedule, (2,), 256, sampler=sampler, steps=10,
                                    generator=torch.Generator().manual_seed(0), **kwargs)  # fmt: skip
        error = (sample(biased) - sample(exact)).norm(dim=1).mean().item()
        from_the_top = (sample(biased, sigma_max=schedule.sigma_max) - sample(exact, sigma_max=schedule.sigma_max))
        assert error < 0.2, (sampler, error)
        assert from_the_top.norm(dim=1).mean().item() > 3 * error  # what the default avoids


def test_nfe_per_sampler():
    assert {name: spec.nfe(10) for name, spec in SAMPLERS.items()} == {
        "ddpm": 10, "ddim": 10, "euler": 10, "heun": 19, "dpmpp_2m": 10
    }  # fmt: skip


def test_bad_arguments_raise_clear_errors(schedule):
    model = tiny_model(schedule.T)
    with pytest.raises(ValueError, match=r"sampler must be one of \('ddpm', 'ddim', 'euler', 'heun', 'dpmpp_2m'\)"):
        generate_samples(model, schedule, (2,), 2, sampler="plms")
    with pytest.raises(ValueError, match=">= 1"):
        generate_samples(model, schedule, (2,), 2, sampler="ddim", steps=0)
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\]"):
        generate_samples(model, schedule, (2,), 2, sampler="ddim", eta=1.5)
    with pytest.raises(ValueError, match="sampler='ddim'"):
        generate_samples(model, schedule, (2,), 2, sampler="euler", eta=0.5)
    with pytest.raises(ValueError, match=f"steps <= {schedule.T}"):
        generate_samples(model, schedule, (2,), 2, sampler="ddim", steps=schedule.T + 1)
    with pytest.raises(ValueError, match="step_schedule must be one of"):
        generate_samples(model, schedule, (2,), 2, sampler="euler", steps=3, step_schedule="cosine")
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_euler(GaussianDenoiser(), torch.zeros(2, 2), torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="followed by 0"):
        sample_euler(GaussianDenoiser(), torch.zeros(2, 2), torch.tensor([2.0, 1.0]))


def test_every_sampler_shows_a_progress_bar_when_asked(capsys):
    schedule = LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)
    denoiser = OptimalDenoiser(torch.zeros(3, 2))
    for sampler in ("ddim", "euler", "heun", "dpmpp_2m"):
        generate_samples(denoiser, schedule, (2,), 4, sampler=sampler, steps=5, show_progress=True)
        assert f"{sampler} sampling" in capsys.readouterr().err


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [6, 40])
def test_sampler_sigmas_is_the_grid_generate_samples_walks(sampler, steps):
    """The trajectory has one state per level of sampler_sigmas (the few-step and the long defaults alike), and for
    the sigma-view samplers it is x_sigma / sqrt(1 + sigma^2) on exactly those levels."""
    schedule = LinearNoiseSchedule.scaled(100)
    data = torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.0]])
    wrapper = BiasedEpsModel(data, schedule, 0.0)
    grid = sampler_sigmas(wrapper, schedule, sampler, steps)
    _, trajectory = generate_samples(wrapper, schedule, (2,), 8, sampler=sampler, steps=steps, return_trajectory=True,
                                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert trajectory.shape[0] == len(grid)
    assert set(grid[:-1].tolist()) <= set(schedule.sigmas.tolist()) and grid[-1] == 0  # on trained levels
    few = steps <= FEW_STEPS and sampler != "ddpm"
    top = schedule.sigmas[nearest_time_step(schedule, 20.0 if few else 80.0)]
    assert grid[0] == top
