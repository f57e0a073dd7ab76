"""Rectified flow / flow matching through the existing pieces, against closed forms.

For Gaussian data x0 ~ N(m, S^2 I) on the straight path x_t = (1 - t) x0 + t eps, x_t ~ N((1 - t) m, V_t I) with
V_t = (1 - t)^2 S^2 + t^2, and
    E[x0 | x_t]  = m + (1 - t) S^2 (x_t - (1 - t) m) / V_t,      E[eps | x_t] = t (x_t - (1 - t) m) / V_t,
    v(x_t, t)    = E[eps - x0 | x_t] = -m + (t - (1 - t) S^2) (x_t - (1 - t) m) / V_t.
The flow of v keeps z = (x_t - (1 - t) m) / sqrt(V_t) constant (d sqrt(V_t)/dt = (t - (1 - t) S^2) / sqrt(V_t)), so
the ODE map from noise x_1 = z to data is the affine x0 = m + S x_1.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_playground import (
    LinearNoiseSchedule,
    RectifiedFlow,
    generate_samples,
    load_checkpoint,
    sample_xt,
    train_denoiser,
)
from diffusion_playground.diffusion import as_denoiser, sample_euler, schedule_from_config
from diffusion_playground.diffusion import parameterization as p
from diffusion_playground.diffusion.backward import strided_posterior
from diffusion_playground.diffusion.training_utils import loss_weights, q_sample

from conftest import tiny_model
from test_sampling import MEAN, STD, ExactGaussianDenoiser

FAST = dict(batch_size=32, show_progress=False, device="cpu")


def closed_forms(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(E[x0 | x_t], E[eps | x_t], v) for Gaussian data, t broadcast to x_t (see the module docstring)."""
    variance = (1 - t) ** 2 * STD**2 + t**2
    centred = x_t - (1 - t) * MEAN
    return MEAN + (1 - t) * STD**2 * centred / variance, t * centred / variance, -MEAN + (t - (1 - t) * STD**2) * centred / variance


def exact_flow_map(z: torch.Tensor, t0: float) -> torch.Tensor:
    """Where the exact flow takes x_{t0} = z at t = 0: z's standard score at t0, times S, plus m."""
    return MEAN + STD * (z - (1 - t0) * MEAN) / math.sqrt((1 - t0) ** 2 * STD**2 + t0**2)


def test_the_process_is_the_straight_path_and_its_ve_view():
    flow = RectifiedFlow(1000)
    t = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    assert torch.allclose(flow.times.double(), t) and torch.equal(flow.noise_scales, flow.times)
    assert torch.allclose(flow.signal_scales.double(), 1 - t)  # alpha_t = 1 - t, sigma_t = t
    assert torch.allclose(flow.sigmas.double(), t / (1 - t), rtol=1e-6)  # VE sigma = t / (1 - t)
    assert torch.allclose(flow.alpha_bars.double(), (1 - t) ** 2 / ((1 - t) ** 2 + t**2), rtol=1e-6)  # VP-equivalent
    assert torch.allclose(flow.input_scale(flow.sigmas), flow.signal_scales, atol=1e-6)  # x_t = x_sigma / (1 + sigma)
    assert flow.sigma_max == pytest.approx(1999.0) and flow.sigma_min == pytest.approx(1 / 1999)
    x0, eps = torch.randn(1000, 3), torch.randn(1000, 3)
    steps = torch.arange(1000)
    expected = (1 - flow.times[:, None]) * x0 + flow.times[:, None] * eps
    assert torch.allclose(q_sample(x0, flow, steps, eps), expected, atol=1e-6)


def test_the_package_turns_the_exact_denoiser_into_the_closed_form_velocity():
    flow = RectifiedFlow(100)
    steps = torch.arange(100).repeat_interleave(20)  # (2000,)
    x_t = 2 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    t = flow.times[steps, None]  # (2000, 1)
    x0, eps, v = closed_forms(x_t, t)
    # eps_hat = (x_t - a x0_hat) / t inside target_from_x0_eps: float32 rounding times 1 / t_0 = 200
    assert torch.allclose(ExactGaussianDenoiser(flow, "flow")(x_t, steps), v, atol=3e-4)
    a_t, s_t = p.coefficients(flow, steps, x_t)
    x0_hat, eps_hat = p.x0_eps_from_prediction(v, x_t, a_t, s_t, "flow")  # x0 = x_t - t v, eps = x_t + (1 - t) v
    assert torch.allclose(x0_hat, x0, atol=1e-5) and torch.allclose(eps_hat, eps, atol=1e-5)
    # the denoiser view: D(x_sigma, sigma) = m + S^2 / (S^2 + sigma^2) (x_sigma - m), the network called on x_sigma / (1 + sigma)
    denoiser = as_denoiser(ExactGaussianDenoiser(flow, "flow"), flow)
    for i in (0, 37, 99):
        sigma = flow.sigmas[i]
        assert torch.allclose(denoiser(x_t, sigma), MEAN + STD**2 / (STD**2 + sigma**2) * (x_t - MEAN), atol=1e-4)


def test_one_euler_step_of_the_package_is_an_euler_step_of_dx_dt_equals_v():
    flow = RectifiedFlow(1000)
    denoiser = as_denoiser(ExactGaussianDenoiser(flow, "flow"), flow)
    x_t = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for i, j in ((999, 700), (500, 499), (300, 10)):
        t_i, t_j = flow.times[i].double(), flow.times[j].double()
        sigmas = torch.tensor([flow.sigmas[i], flow.sigmas[j], 0.0], dtype=torch.float64)
        _, trajectory = sample_euler(denoiser, x_t / (1 - t_i), sigmas, return_trajectory=True)
        x_next = trajectory[1] * (1 - t_j)  # x_sigma back to the flow's x_t
        assert torch.allclose(x_next, x_t + (t_j - t_i) * closed_forms(x_t, t_i)[2], atol=1e-4), (i, j)


def test_euler_on_the_exact_flow_is_the_affine_map_from_noise_to_the_data():
    """All T = 1000 levels, from t_{T-1} = 0.9995: the error is Euler's O(1/N) (3e-3 here, 6e-3 at 500 steps)."""
    flow = RectifiedFlow(1000)
    model = ExactGaussianDenoiser(flow, "flow")

    def euler(steps: int) -> torch.Tensor:
        return generate_samples(model, flow, (2,), 4000, sampler="euler", steps=steps, step_schedule="uniform",
                                sigma_max=flow.sigma_max, generator=torch.Generator().manual_seed(2))  # fmt: skip

    z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(2))  # the x_t = z generate_samples starts from
    expected = exact_flow_map(z, flow.times[-1].item())
    errors = [(euler(steps) - expected).abs().max().item() for steps in (500, 1000)]
    assert errors[1] < 0.01, errors
    assert 1.6 < errors[0] / errors[1] < 2.4, errors  # first order
    ddim = generate_samples(model, flow, (2,), 4000, sampler="ddim", steps=500, sigma_max=flow.sigma_max,
                            generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert torch.allclose(ddim, euler(500), atol=1e-4)  # deterministic DDIM is Euler on the flow


@pytest.mark.parametrize(("sampler", "steps", "tolerance"), [("heun", 50, 0.015), ("dpmpp_2m", 100, 0.015)])
def test_second_order_samplers_follow_the_exact_flow(sampler, steps, tolerance):
    flow = RectifiedFlow(1000)
    samples = generate_samples(ExactGaussianDenoiser(flow, "flow"), flow, (2,), 4000, sampler=sampler, steps=steps,
                               step_schedule="uniform", sigma_max=flow.sigma_max, generator=torch.Generator().manual_seed(3))  # fmt: skip
    z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(3))
    assert (samples - exact_flow_map(z, flow.times[-1].item())).abs().max().item() < tolerance


def test_ddpm_steps_the_straight_path_posterior_and_recovers_the_data():
    """q(x_s | x_t, x0) of x_t = a_t x0 + s_t eps: mean (a_ts s_s^2 x_t + a_s var_ts x0) / s_t^2, variance
    var_ts s_s^2 / s_t^2, with a_ts = a_t / a_s and var_ts = s_t^2 - a_ts^2 s_s^2; a = 1 - t, s = t."""
    flow = RectifiedFlow(200)
    steps = [199, 150, 90, 40, 3]
    a = 1 - flow.times.double()[steps]
    s = flow.times.double()[steps]
    a_s, s_s = torch.cat([a[1:], torch.ones(1, dtype=torch.float64)]), torch.cat([s[1:], torch.zeros(1, dtype=torch.float64)])
    a_ts = a / a_s
    var_ts = s**2 - a_ts**2 * s_s**2
    expected = torch.stack([a_s * var_ts / s**2, a_ts * s_s**2 / s**2, var_ts * s_s**2 / s**2]).float()
    assert torch.allclose(strided_posterior(flow, steps), expected, rtol=1e-4, atol=1e-7)
    samples = generate_samples(ExactGaussianDenoiser(flow, "flow"), flow, (2,), 20_000, sampler="ddpm",
                               generator=torch.Generator().manual_seed(4))  # fmt: skip
    assert samples.mean(0) == pytest.approx(torch.full((2,), MEAN), abs=0.03)
    assert samples.std(0) == pytest.approx(torch.full((2,), STD), rel=0.05)


def test_the_flow_target_and_min_snr_weights():
    """x0 = x_t - t v, so ||x0 error||^2 = t^2 ||v error||^2: Min-SNR's flow weight is min(snr, gamma) t^2."""
    flow = RectifiedFlow(1000)
    t = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(5))
    expected = flow.snr[t].clamp(max=5.0) * flow.times[t] ** 2
    assert torch.allclose(loss_weights(flow, t, "flow", "min_snr", min_snr_gamma=5.0), expected, rtol=1e-4)


def test_training_a_flow_model_then_sampling_and_reloading_it(tmp_path):
    blobs = torch.randn(256, 2, generator=torch.Generator().manual_seed(6)) * 0.3
    data = blobs + torch.tensor([1.5, 1.5]) * torch.tensor([1.0, -1.0]).repeat_interleave(128)[:, None]  # two blobs, (256, 2)
    flow = RectifiedFlow(100, time_distribution="logit_normal")
    model = tiny_model(flow.T, prediction_type="flow", hidden_dim=64)
    history = train_denoiser(model, data, flow, epochs=15, lr=3e-3, checkpoint_dir=tmp_path, **FAST)
    first, last = sum(history.losses[:10]) / 10, sum(history.losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)  # from E(eps - x0)^2 = 1 + 1.5^2 + 0.3^2 per value, down towards Var(v | x_t)
    for sampler in ("euler", "heun", "dpmpp_2m", "ddim", "ddpm"):
        samples = generate_samples(history.ema_model, flow, (2,), 50, sampler=sampler, steps=10,
                                   generator=torch.Generator().manual_seed(6))  # fmt: skip
        assert samples.shape == (50, 2) and torch.isfinite(samples).all(), sampler

    loaded, loaded_flow = load_checkpoint(tmp_path, device="cpu", with_schedule=True)
    assert isinstance(loaded_flow, RectifiedFlow) and loaded_flow.config() == flow.config()
    assert torch.equal(loaded_flow.signal_scales, flow.signal_scales) and loaded.prediction_type == "flow"
    samples = generate_samples(loaded, loaded_flow, (2,), 5, sampler="euler", steps=10, generator=torch.Generator().manual_seed(7))
    expected = generate_samples(history.ema_model, flow, (2,), 5, sampler="euler", steps=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(samples, expected)


def test_the_config_round_trips():
    flow = RectifiedFlow(64, time_distribution="logit_normal", logit_normal_mean=-0.5, logit_normal_std=0.7)
    rebuilt = schedule_from_config(flow.config())
    assert isinstance(rebuilt, RectifiedFlow) and rebuilt.config() == flow.config()
    assert torch.equal(rebuilt.times, flow.times) and torch.equal(rebuilt.sigmas, flow.sigmas)


@pytest.mark.parametrize(("m", "s"), [(0.0, 1.0), (0.5, 0.7)])
def test_logit_normal_times_have_the_asked_logit_mean_and_std(m, s):
    """Esser et al. 2024, section 3.1: logit(t) ~ N(m, s^2). A draw trains its cell's midpoint (width 1e-3)."""
    flow = RectifiedFlow(1000, time_distribution="logit_normal", logit_normal_mean=m, logit_normal_std=s)
    _, _, steps = sample_xt(torch.zeros(200_000, 1), flow, generator=torch.Generator().manual_seed(8))
    t = flow.times.double()[steps]
    logit = (t / (1 - t)).log()
    assert logit.mean().item() == pytest.approx(m, abs=0.01)
    assert logit.std().item() == pytest.approx(s, abs=0.01)


def test_uniform_times_are_uniform_on_the_unit_interval():
    flow = RectifiedFlow(1000)
    t = flow.times.double()[flow.sample_time_steps(200_000, torch.device("cpu"), torch.Generator().manual_seed(9))]
    assert t.mean().item() == pytest.approx(0.5, abs=0.005) and t.var().item() == pytest.approx(1 / 12, abs=0.002)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: RectifiedFlow(0), ValueError, "time_steps"),
        (lambda: RectifiedFlow(2.5), TypeError, "time_steps"),
        (lambda: RectifiedFlow(10, time_distribution="beta"), ValueError, r"\('uniform', 'logit_normal'\)"),
        (lambda: RectifiedFlow(10, time_distribution="logit_normal", logit_normal_std=0.0), ValueError, "logit_normal_std must be > 0"),
        (lambda: RectifiedFlow(10, time_distribution="logit_normal", logit_normal_std=-1.0), ValueError, "logit_normal_std"),
        (lambda: RectifiedFlow(10, time_distribution="logit_normal", logit_normal_mean=float("nan")), ValueError, "finite"),
        (lambda: RectifiedFlow(10, logit_normal_mean=1.0), ValueError, "time_distribution='logit_normal'"),
    ],
)
def test_bad_arguments_raise_clear_errors(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_targets_that_do_not_fit_the_process_are_refused(points):
    flow, vp = RectifiedFlow(50), LinearNoiseSchedule(50)
    with pytest.raises(ValueError, match=r"\('eps', 'x0', 'v'\) \(VP noise schedules\) or \('eps', 'x0', 'flow'\)"):
        p.check_prediction_type("velocity")
    with pytest.raises(ValueError, match="'flow' does not fit LinearNoiseSchedule"):
        train_denoiser(tiny_model(50, prediction_type="flow"), points, vp, epochs=1, **FAST)
    with pytest.raises(ValueError, match="'v' does not fit RectifiedFlow"):
        generate_samples(tiny_model(50, prediction_type="v"), flow, (2,), 2, sampler="euler", steps=3)
    with pytest.raises(ValueError, match="'v' does not fit RectifiedFlow"):
        generate_samples(tiny_model(50, prediction_type="v"), flow, (2,), 2)  # ddpm
    for prediction_type in ("eps", "x0"):  # their conversions hold on any Gaussian path
        assert generate_samples(tiny_model(50, prediction_type=prediction_type), flow, (2,), 2, steps=3).shape == (2, 2)
