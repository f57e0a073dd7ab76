"""The forward process q(x_t | x_0), the targets and their conversions, the loss weighting."""

from __future__ import annotations

import itertools

import pytest
import torch

from diffusion_playground import LinearNoiseSchedule, sample_xt
from diffusion_playground.diffusion import parameterization as p
from diffusion_playground.diffusion.training_utils import denoising_loss, loss_weights, q_sample


def test_q_sample_has_the_closed_form_moments():
    schedule = LinearNoiseSchedule(1000)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 2.0)
    for t in (0, 100, 500, 999):
        x_t, noise, t_out = sample_xt(x0, schedule, t, generator=generator)
        assert torch.equal(t_out, torch.full((200_000,), t))
        alpha_bar = schedule.alpha_bars[t].item()
        assert x_t.mean().item() == pytest.approx(2.0 * alpha_bar**0.5, abs=0.01)
        assert x_t.var().item() == pytest.approx(1 - alpha_bar, rel=0.02, abs=1e-4)
        assert torch.allclose(x_t, q_sample(x0, schedule, t_out, noise))


def test_sample_xt_draws_t_uniformly_over_all_steps():
    schedule = LinearNoiseSchedule(10)
    _, _, t = sample_xt(torch.zeros(50_000, 3), schedule, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(t, minlength=10)
    assert t.min() == 0 and t.max() == 9  # [0, T): the same indices sampling walks through
    assert (counts - 5000).abs().max() < 300


def test_sample_xt_rejects_bad_input():
    schedule = LinearNoiseSchedule(10)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        sample_xt(torch.zeros(4, 2), schedule, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="shape"):
        sample_xt(torch.zeros(4, 2), schedule, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(batch, \.\.\.\)"):
        sample_xt(torch.zeros(4), schedule)


QUANTITIES = ("x0", "eps", "v")


@pytest.mark.parametrize(("given", "wanted"), list(itertools.permutations(QUANTITIES, 2)))
def test_every_parameterisation_converts_into_every_other(given, wanted):
    """Cycle consistency: from x_t and one of (x0, eps, v) recover the others exactly."""
    schedule = LinearNoiseSchedule(1000)
    generator = torch.Generator().manual_seed(2)
    x0 = torch.randn(64, 3, 4, generator=generator)
    eps = torch.randn(64, 3, 4, generator=generator)
    t = torch.randint(0, 1000, (64,), generator=generator)
    a_t, s_t = p.coefficients(schedule, t, x0)
    x_t = q_sample(x0, schedule, t, eps)
    truth = {"x0": x0, "eps": eps, "v": p.v_from_x0_eps(x0, eps, a_t, s_t)}
    prediction_type = {"x0": "x0", "eps": "eps", "v": "v"}[given]
    x0_hat, eps_hat = p.x0_eps_from_prediction(truth[given], x_t, a_t, s_t, prediction_type)
    recovered = {"x0": x0_hat, "eps": eps_hat, "v": p.target_from_x0_eps(x0_hat, eps_hat, a_t, s_t, "v")}
    assert torch.allclose(recovered[wanted], truth[wanted], atol=2e-3 if "x0" == wanted and given == "eps" else 1e-4)


def test_v_is_the_rotation_of_x0_and_eps():
    # (x_t, v) is (x0, eps) rotated by phi with a = cos(phi), s = sin(phi) (Salimans & Ho 2022, fig. 1)
    a, s = torch.tensor(0.6), torch.tensor(0.8)
    x0, eps = torch.tensor([1.5]), torch.tensor([-0.5])
    x_t, v = a * x0 + s * eps, p.v_from_x0_eps(x0, eps, a, s)
    assert torch.allclose(x_t.square() + v.square(), x0.square() + eps.square())


def test_score_is_minus_eps_over_noise_std():
    s_t = torch.tensor(0.5)
    assert torch.equal(p.score_from_eps(torch.tensor([1.0, -2.0]), s_t), torch.tensor([-2.0, 4.0]))


def test_unknown_prediction_type_lists_the_choices():
    with pytest.raises(ValueError, match=r"\('eps', 'x0', 'v'\)"):
        p.check_prediction_type("score")


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_min_snr_weights_equal_min_snr_gamma_in_x0_space(prediction_type):
    """Hang et al. 2023: w_target * ||target error||^2 == min(snr, gamma) * ||x0 error||^2 for every target."""
    schedule = LinearNoiseSchedule(1000)
    generator = torch.Generator().manual_seed(3)
    t = torch.randint(0, 1000, (32,), generator=generator)
    x0, eps = torch.randn(32, 2, generator=generator), torch.randn(32, 2, generator=generator)
    x0_wrong = x0 + 0.1 * torch.randn(32, 2, generator=generator)
    a_t, s_t = p.coefficients(schedule, t, x0)
    x_t = q_sample(x0, schedule, t, eps)
    eps_wrong = p.eps_from_x0(x_t, x0_wrong, a_t, s_t)
    err_target = (
        p.target_from_x0_eps(x0, eps, a_t, s_t, prediction_type)
        - p.target_from_x0_eps(x0_wrong, eps_wrong, a_t, s_t, prediction_type)
    ).square().sum(1)
    err_x0 = (x0 - x0_wrong).square().sum(1)
    weights = loss_weights(schedule, t, prediction_type, "min_snr", min_snr_gamma=5.0)
    expected = schedule.snr[t].clamp(max=5.0) * err_x0
    assert torch.allclose(weights * err_target, expected, rtol=1e-3)
    assert torch.equal(loss_weights(schedule, t, prediction_type), torch.ones(32))


def test_denoising_loss_of_the_exact_noise_predictor_is_zero(points):
    """A "model" that knows the noise scores 0 under L_simple: the loss compares to exactly that target."""
    schedule = LinearNoiseSchedule(100)
    generator = torch.Generator().manual_seed(4)
    _, noise, _ = sample_xt(points, schedule, generator=torch.Generator().manual_seed(4))

    class Oracle(torch.nn.Module):
        prediction_type = "eps"

        def forward(self, x_t, t):
            return noise

    assert denoising_loss(Oracle(), points, schedule, generator=generator).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="weighting"):
        denoising_loss(Oracle(), points, schedule, weighting="snr")
