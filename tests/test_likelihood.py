"""Likelihoods against closed forms: Gaussian data with its exact denoiser (the ODE gives the true density, the
variational bound lies above it and equals its closed-form expectation), a finite dataset's exact denoiser (the
ODE gives the Gaussian-mixture density), the discretised decoder against the normal CDF."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_playground import (
    EDMDiffusion,
    LinearNoiseSchedule,
    OptimalDenoiser,
    RectifiedFlow,
    log_likelihood,
)
from diffusion_playground.diffusion import Denoiser
from diffusion_playground.diffusion.backward import strided_posterior
from diffusion_playground.diffusion.likelihood import (
    decoder_log_likelihood,
    ode_log_density,
    variational_bound_terms,
)

from test_sampling import ExactGaussianDenoiser, MEAN, STD

LN2 = math.log(2.0)


class CorrelatedGaussianDenoiser(Denoiser):
    """For x0 ~ N(m, C) and x = x0 + sigma eps: E[x0 | x] = m + C (C + sigma^2 I)^{-1} (x - m), a full (d, d) Jacobian."""

    def __init__(self, mean: torch.Tensor, covariance: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.covariance = mean, covariance

    def forward(self, x, sigma, labels=None):
        eye = torch.eye(self.mean.numel(), dtype=torch.float64)
        gain = self.covariance @ torch.linalg.inv(self.covariance + float(sigma) ** 2 * eye)  # (d, d), symmetric
        return (self.mean + (x.double() - self.mean) @ gain.T).to(x.dtype)


def correlated_gaussian(dims: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(dims, dims, generator=g, dtype=torch.float64) / math.sqrt(dims)
    return torch.randn(dims, generator=g, dtype=torch.float64) * 0.5, root @ root.T + 0.1 * torch.eye(dims, dtype=torch.float64)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(mean, covariance).log_prob(x.double())


def draw(mean: torch.Tensor, covariance: torch.Tensor, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (mean + torch.randn(n, mean.numel(), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(covariance).T).float()


def ode_closed_form(x, mean, covariance, process, sigma_max):
    """The ODE's answer in closed form: the exact flow of N(m, C) data, x(sigma) - m = (C + sigma^2)^(1/2)
    (C + sigma_min^2)^(-1/2) (x0 - m), and the prior N(0, I / s(sigma_max)^2) at its end: log p_prior(x(sigma_max))
    + log det dx(sigma_max)/dx0."""
    eigenvalues, vectors = torch.linalg.eigh(covariance)
    scale = ((eigenvalues + sigma_max**2) / (eigenvalues + process.sigma_min**2)).sqrt()
    x_max = mean + (x.double() - mean) @ vectors @ torch.diag(scale) @ vectors.T
    prior_std = 1.0 / float(process.input_scale(torch.tensor(sigma_max, dtype=torch.float64)))
    prior = torch.distributions.Normal(0.0, prior_std).log_prob(x_max).sum(dim=1)
    return prior + scale.log().sum()


@pytest.mark.parametrize(
    ("process", "sigma_max"),
    [(LinearNoiseSchedule(1000), 80.0), (RectifiedFlow(1000), 80.0), (EDMDiffusion(), 80.0), (LinearNoiseSchedule(200), None)],
    ids=["vp_linear", "rectified_flow", "edm", "vp_linear_T200"],
)
def test_ode_likelihood_of_the_exact_denoiser_is_its_closed_form_and_the_true_density(process, sigma_max):
    """d = 3, exact divergence: the ODE's closed form to 0.005 nats, and log N(x; m, C + sigma_min^2 I) up to the
    prior's mismatch at sigma_max (N(0, (1 + sigma_max^2) I) against the true N(m, C + sigma_max^2 I))."""
    sigma_max = process.sigma_max if sigma_max is None else sigma_max  # sigma_{T-1} = 2.6 < 80 for this T = 200
    mean, covariance = correlated_gaussian(3)
    x = draw(mean, covariance, 500)
    denoiser = CorrelatedGaussianDenoiser(mean, covariance)
    log_p = ode_log_density(denoiser, process, x, steps=200)
    assert log_p.dtype == torch.float64 and log_p.shape == (500,)
    assert (log_p - ode_closed_form(x, mean, covariance, process, sigma_max)).abs().max().item() < 0.01
    truth = gaussian_log_density(x, mean, covariance + process.sigma_min**2 * torch.eye(3, dtype=torch.float64))
    assert (log_p - truth).mean().abs().item() < (0.01 if sigma_max == 80.0 else 0.1)
    bits = log_likelihood(denoiser, process, x, "ode", steps=200)
    assert torch.allclose(bits, -log_p / (3 * LN2))


def test_ode_error_falls_at_second_order_in_the_steps():
    schedule = LinearNoiseSchedule(1000)
    mean, covariance = correlated_gaussian(2)
    x = draw(mean, covariance, 200)
    truth = gaussian_log_density(x, mean, covariance + schedule.sigma_min**2 * torch.eye(2, dtype=torch.float64))
    denoiser = CorrelatedGaussianDenoiser(mean, covariance)
    errors = [(ode_log_density(denoiser, schedule, x, steps=n) - truth).abs().mean().item() for n in (20, 40, 80)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(1.6 < order < 2.6 for order in orders), (errors, orders)


def test_hutchinson_divergence_is_unbiased_for_a_full_jacobian():
    """d = 24 (so "auto" picks Hutchinson): the per-sample estimates scatter around the exact-divergence ODE on the
    same grid, and their mean matches it."""
    schedule = LinearNoiseSchedule(1000)
    mean, covariance = correlated_gaussian(24)
    x = draw(mean, covariance, 800)
    denoiser = CorrelatedGaussianDenoiser(mean, covariance)
    estimate = ode_log_density(denoiser, schedule, x, steps=40, generator=torch.Generator().manual_seed(0))
    exact = ode_log_density(denoiser, schedule, x, steps=40, divergence="exact")
    error = estimate - exact
    assert error.std().item() > 0.05  # a real stochastic estimate (a diagonal Jacobian would make it exact)
    assert abs(error.mean().item()) < 4 * error.std().item() / math.sqrt(800)
    closed_form = ode_closed_form(x, mean, covariance, schedule, 80.0)
    assert (exact - closed_form).abs().mean().item() < 0.05 * 24  # 40 steps in 24 dimensions: coarse but unbiased


def test_ode_likelihood_of_a_finite_dataset_is_the_gaussian_mixture_density():
    """The optimal denoiser of N points has marginals p_sigma = (1/N) sum_i N(x_i, sigma^2 I) at every sigma."""
    points = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.5]])
    process = EDMDiffusion(sigma_data=1.0, sigma_min=0.4, sigma_max=80.0)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(3, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(points.double(), 0.4), 1),
    )
    torch.manual_seed(0)
    x = mixture.sample((300,)).float()
    log_p = ode_log_density(OptimalDenoiser(points, dtype=torch.float64), process, x, steps=200)
    assert (log_p - mixture.log_prob(x.double())).abs().max().item() < 0.02


def test_class_conditional_likelihood_prefers_the_right_class():
    points = torch.tensor([[-2.0, 0.0], [-2.0, 0.3], [2.0, 0.0], [2.0, -0.3]])
    labels = torch.tensor([0, 0, 1, 1])
    process = EDMDiffusion(sigma_data=1.0, sigma_min=0.3, sigma_max=80.0)
    x = points + 0.2 * torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    denoiser = OptimalDenoiser(points, labels)
    right = log_likelihood(denoiser, process, x, labels=labels, steps=80)
    wrong = log_likelihood(denoiser, process, x, labels=1 - labels, steps=80)
    unconditional = log_likelihood(denoiser, process, x, steps=80)
    assert (right < unconditional).all() and (unconditional < wrong).all()
    assert torch.allclose(unconditional - right, torch.full((4,), 0.5, dtype=torch.float64), atol=0.05)  # log2(2 classes) / d, up to the prior's mismatch at sigma = 80


def expected_bound_terms(schedule: LinearNoiseSchedule, dims: int) -> torch.Tensor:
    """E over x0 ~ N(MEAN, STD^2 I) and x_t of each term, in closed form: the exact denoiser's squared error has
    expectation d STD^2 sigma^2 / (STD^2 + sigma^2) (the posterior variance of x0 given x_sigma)."""
    alpha_bars = schedule.alpha_bars_float64
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
    betas = 1.0 - alpha_bars / prev
    beta_tilde = betas * (1.0 - prev) / (1.0 - alpha_bars)
    sigma2 = (1.0 - alpha_bars) / alpha_bars
    posterior_var = STD**2 * sigma2 / (STD**2 + sigma2)  # per dimension
    kl = (prev.sqrt() * betas / (1.0 - alpha_bars)) ** 2 * dims * posterior_var / (2.0 * beta_tilde.clamp(min=1e-300))
    v = float(beta_tilde[1])
    decoder = dims * (0.5 * math.log(2 * math.pi * v) + 0.5 * float(posterior_var[0]) / v)
    a = float(alpha_bars[-1])
    prior = 0.5 * dims * (a * (MEAN**2 + STD**2) - a - math.log(1.0 - a))
    return torch.cat([torch.tensor([decoder]), kl[1:], torch.tensor([prior])])


@pytest.mark.parametrize(
    ("schedule", "prediction_type"),
    [(LinearNoiseSchedule(200, beta_start=1e-3, beta_end=0.05), "eps"), (RectifiedFlow(200), "flow")],
    ids=["vp_eps", "rectified_flow"],
)
def test_variational_bound_matches_its_closed_form_and_lies_above_the_true_density(schedule, prediction_type):
    """The flow is scored through its VP-equivalent chain: the same closed form with its alpha_bars."""
    dims, n = 2, 4000
    x = MEAN + STD * torch.randn(n, dims, generator=torch.Generator().manual_seed(0))
    model = ExactGaussianDenoiser(schedule, prediction_type)  # a trained-wrapper stand-in, through the denoiser view
    terms = variational_bound_terms(model, schedule, x, generator=torch.Generator().manual_seed(1))
    assert terms.shape == (n, schedule.T + 1)
    expected = expected_bound_terms(schedule, dims)
    standard_error = terms.std(dim=0) / math.sqrt(n)
    assert ((terms.mean(dim=0) - expected).abs() <= 5 * standard_error + 1e-9).all()
    bound = log_likelihood(model, schedule, x, "vlb", generator=torch.Generator().manual_seed(1))
    assert torch.allclose(bound, terms.sum(dim=1) / (dims * LN2))
    true_bits = -torch.distributions.Normal(MEAN, math.sqrt(STD**2 + schedule.sigma_min**2)).log_prob(x.double()).sum(1) / (dims * LN2)
    gap = (bound - true_bits).mean().item()  # KL(q(x_{0:T}) || p(x_{0:T})) / (d ln 2) >= 0
    assert gap > 5 * (bound - true_bits).std().item() / math.sqrt(n)


def test_bound_terms_are_the_kl_of_the_samplers_own_reverse_step(gaussian_schedule):
    """L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) with both Gaussians built from sample_ddpm's
    strided_posterior, the KL from torch.distributions."""
    schedule = gaussian_schedule
    x0 = MEAN + STD * torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    model = ExactGaussianDenoiser(schedule, "v")
    terms = variational_bound_terms(model, schedule, x0, generator=torch.Generator().manual_seed(3))
    noise_gen = torch.Generator().manual_seed(3)
    sigmas = schedule.sigmas.double()
    for t in range(schedule.T):
        noise = torch.randn(x0.shape, generator=noise_gen)
        if t not in (1, 7, 150, schedule.T - 1):
            continue
        a = schedule.alpha_bars_float64[t].sqrt()
        x_t = (a * (x0 + float(sigmas[t]) * noise)).float()
        prediction = model(x_t, torch.tensor(t))
        s = (1.0 - schedule.alpha_bars_float64[t]).sqrt()
        x0_hat = ((x_t - s.float() * prediction_to_eps(prediction, x_t, a.float(), s.float())) / a.float()).double()
        coef_x0, coef_xt, variance = strided_posterior(schedule, [t, t - 1]).double()[:, 0]
        q = torch.distributions.Normal(coef_x0 * x0.double() + coef_xt * x_t.double(), variance.sqrt())
        p = torch.distributions.Normal(coef_x0 * x0_hat + coef_xt * x_t.double(), variance.sqrt())
        reference = torch.distributions.kl_divergence(q, p).sum(dim=1)
        assert torch.allclose(terms[:, t], reference, rtol=1e-3, atol=1e-6), t


def prediction_to_eps(v, x_t, a, s):
    return s * x_t + a * v  # eps = s x_t + a v for v = a eps - s x0 (Salimans & Ho 2022)


def test_ode_likelihood_through_a_trained_wrapper_is_the_same_for_every_target(gaussian_schedule):
    """A wrapper is evaluated at its trained levels only (the grid is snapped); eps, x0 and v wrappers of the same
    exact denoiser give the same bits, near the true density (sigma_{T-1} = 13.3 here: the prior's mismatch)."""
    x = MEAN + STD * torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    bits = {
        kind: log_likelihood(ExactGaussianDenoiser(gaussian_schedule, kind), gaussian_schedule, x, steps=100)
        for kind in ("eps", "x0", "v")
    }
    assert torch.allclose(bits["eps"], bits["x0"], atol=1e-4) and torch.allclose(bits["eps"], bits["v"], atol=1e-4)
    variance = STD**2 + gaussian_schedule.sigma_min**2
    true_bits = -torch.distributions.Normal(MEAN, math.sqrt(variance)).log_prob(x.double()).sum(1) / (2 * LN2)
    assert abs((bits["eps"] - true_bits).mean().item()) < 0.05


def test_discretised_decoder_is_a_probability_over_the_bins():
    """Ho et al. 2020, eq. 13: the 256 bin probabilities sum to 1; an interior bin is Phi(b) - Phi(a)."""
    levels = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1  # every 8-bit value in [-1, 1]
    for mean, variance in [(0.3, 1e-4), (-0.999, 5e-5), (1.2, 0.01), (0.0, 2.0)]:
        log_p = decoder_log_likelihood(levels[:, None], torch.full((256, 1), mean, dtype=torch.float64), variance, 256)
        assert torch.isfinite(log_p).all()
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    normal = torch.distributions.Normal(torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64))
    inner = levels[160:170, None]  # 0.25 to 0.33, around the mean
    expected = (normal.cdf(inner + 1 / 255) - normal.cdf(inner - 1 / 255)).log().squeeze(1)
    got = decoder_log_likelihood(inner, torch.full_like(inner, 0.3), 0.05**2, 256)
    assert torch.allclose(got, expected, rtol=1e-9)


def test_eight_bit_likelihoods_bound_the_probability_of_the_bins():
    """For a smooth Gaussian model the dequantised ODE bits are -log2 P(bin) / d, P from the normal CDF; the
    discretised bound lies above them."""
    schedule = LinearNoiseSchedule(1000)
    g = torch.Generator().manual_seed(0)
    mean, std = 0.1, 0.4
    images = ((mean + std * torch.randn(400, 1, 2, 2, generator=g)).clamp(-1, 1) * 127.5 + 127.5).round() / 127.5 - 1
    denoiser = CorrelatedGaussianDenoiser(torch.full((4,), mean, dtype=torch.float64), std**2 * torch.eye(4, dtype=torch.float64))

    class OnImages(Denoiser):
        def forward(self, x, sigma, labels=None):
            return denoiser(x.flatten(1), sigma).reshape(x.shape)

    ode = log_likelihood(OnImages(), schedule, images, "ode", bins=256, steps=60, generator=g)
    normal = torch.distributions.Normal(mean, math.sqrt(std**2 + schedule.sigma_min**2))
    flat = images.flatten(1).double()
    bin_bits = -(normal.cdf(flat + 1 / 255) - normal.cdf(flat - 1 / 255)).log().sum(1) / (4 * LN2)
    interior = ((flat > -1) & (flat < 1)).all(dim=1)
    assert abs((ode - bin_bits)[interior].mean().item()) < 0.02
    vlb = log_likelihood(OnImages(), schedule, images, "vlb", bins=256, generator=g)
    assert vlb.mean().item() > bin_bits.mean().item()
    assert vlb.mean().item() < bin_bits.mean().item() + 1.0


def test_bad_arguments_say_what_to_do():
    schedule = LinearNoiseSchedule(100)
    x = torch.randn(4, 2)
    denoiser = CorrelatedGaussianDenoiser(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="method must be one of"):
        log_likelihood(denoiser, schedule, x, "elbo")
    with pytest.raises(ValueError, match="use method='ode'"):
        log_likelihood(denoiser, EDMDiffusion(), x, "vlb")
    with pytest.raises(ValueError, match="images scaled to"):
        log_likelihood(denoiser, schedule, x, bins=256)
    with pytest.raises(ValueError, match="divergence must be"):
        log_likelihood(denoiser, schedule, x, divergence="skilling")
    with pytest.raises(ValueError, match="steps"):
        log_likelihood(denoiser, schedule, x, steps=0)
    with pytest.raises(ValueError, match=r"\(B, \.\.\.\)"):
        log_likelihood(denoiser, schedule, torch.randn(2))
