"""EDM training (Karras et al. 2022): the preconditioner, the log-normal noise levels and the loss, against closed forms.

For zero-mean data of per-dimension variance sigma_data^2 and x = x0 + sigma n, the best *linear* estimate of x0 is
c_skip x with c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), its squared error per dimension is
(1 - c_skip)^2 sigma_data^2 + c_skip^2 sigma^2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2) = c_out^2, and
lambda(sigma) = 1 / c_out^2: an EDMPreconditioner whose network outputs F = 0 (a zero-initialised output layer) has
an EDM loss of exactly 1 per dimension at every sigma. For Gaussian data c_skip x is E[x0 | x], the exact denoiser,
whose probability-flow ODE dx/dsigma = (x - c_skip x) / sigma = sigma x / (sigma^2 + sigma_data^2) keeps
x / sqrt(sigma^2 + sigma_data^2) constant.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffusion_playground import (
    EDMDiffusion,
    EDMPreconditioner,
    LinearNoiseSchedule,
    MLPBackbone,
    OptimalDenoiser,
    TimeConditionedModel,
    generate_samples,
    load_checkpoint,
    train_denoiser,
)
from diffusion_playground.diffusion import NULL_LABEL, Denoiser, karras_sigmas, schedule_from_config

FAST = dict(batch_size=64, show_progress=False, device="cpu")
SIGMAS = (0.002, 0.05, 0.5, 1.0, 3.0, 80.0)


def edm_model(sigma_data: float = 0.5, num_classes: int | None = None, **kwargs) -> EDMPreconditioner:
    backbone = MLPBackbone(data_dim=2, cond_dim=16, hidden_dim=32, num_blocks=2)  # output layer zero-initialised: F = 0
    return EDMPreconditioner(backbone, num_classes, sigma_data=sigma_data, **kwargs)


def standardised(x: torch.Tensor, std: float) -> torch.Tensor:
    """x with each coordinate's sample mean 0 and sample standard deviation ``std`` exactly."""
    return (x - x.mean(dim=0)) / x.std(dim=0, unbiased=False) * std


def two_moons(n: int, std: float, seed: int = 0) -> torch.Tensor:
    """A non-Gaussian 2-D dataset: two interleaved half circles, standardised."""
    g = torch.Generator().manual_seed(seed)
    angle = math.pi * torch.rand(n, generator=g)
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    return standardised(torch.stack([x, y], dim=1) + 0.05 * torch.randn(n, 2, generator=g), std)


class RecordingDenoiser(Denoiser):
    """D = ``scale`` x, recording every (x, sigma) it is called with."""

    def __init__(self, scale: float = 0.0) -> None:
        super().__init__()
        self.scale, self.calls = scale, []

    def forward(self, x, sigma, labels=None):
        self.calls.append((x.clone(), torch.as_tensor(sigma).clone()))
        return self.scale * x


# ---------------------------------------------------------------------------- the preconditioner


@pytest.mark.parametrize("sigma_data", [0.5, 1.3])
def test_the_coefficients_are_table_1s_and_the_loss_weight_is_one_over_c_out_squared(sigma_data):
    model, process = edm_model(sigma_data), EDMDiffusion(sigma_data=sigma_data)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = model.coefficients(sigma)
    for s, skip, out, inp, noise in zip(SIGMAS, c_skip, c_out, c_in, c_noise):
        assert skip.item() == pytest.approx(sigma_data**2 / (s**2 + sigma_data**2), rel=1e-12)
        assert out.item() == pytest.approx(s * sigma_data / math.sqrt(s**2 + sigma_data**2), rel=1e-12)
        assert inp.item() == pytest.approx(1 / math.sqrt(s**2 + sigma_data**2), rel=1e-12)
        assert noise.item() == pytest.approx(math.log(s) / 4, rel=1e-12)
    ones = torch.ones_like(sigma)
    assert torch.allclose(process.loss_weight(sigma) * c_out**2, ones)  # the effective weight of F's error is 1
    assert torch.allclose(c_in**2 * (sigma**2 + sigma_data**2), ones)  # unit-variance network input
    target_variance = ((1 - c_skip) ** 2 * sigma_data**2 + c_skip**2 * sigma**2) / c_out**2
    assert torch.allclose(target_variance, ones)  # unit-variance target (x0 - c_skip x) / c_out


def test_with_F_zero_the_preconditioner_is_the_exact_denoiser_of_gaussian_data():
    """E[x0 | x] = sigma_data^2 / (sigma^2 + sigma_data^2) x for x0 ~ N(0, sigma_data^2 I): c_skip x, i.e. F = 0."""
    model = edm_model(sigma_data=0.7)
    x = 5 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    for s in SIGMAS:
        assert torch.allclose(model(x, torch.tensor(s)), 0.7**2 / (s**2 + 0.7**2) * x, rtol=1e-6, atol=0)
    per_sample = torch.tensor(SIGMAS).repeat(11)[:64]  # (B,) levels give the rows' own c_skip
    assert torch.allclose(model(x, per_sample), (0.49 / (per_sample**2 + 0.49))[:, None] * x, rtol=1e-6, atol=0)


def test_one_level_for_the_batch_equals_that_level_per_sample():
    torch.manual_seed(0)
    model = edm_model()
    nn.init.normal_(model.backbone.output[1].weight)  # a network with F != 0
    x = torch.randn(8, 2)
    assert torch.allclose(model(x, torch.tensor(0.3)), model(x, torch.full((8,), 0.3)), atol=1e-6)
    assert not torch.allclose(model(x, torch.tensor(0.3)), model(x, torch.tensor(0.3 * 1.1)))  # sigma is seen


# ---------------------------------------------------------------------------- the training process


@pytest.mark.parametrize(("P_mean", "P_std"), [(-1.2, 1.2), (0.4, 0.3)])
def test_training_noise_levels_are_log_normal(P_mean, P_std):  # noqa: N803
    sigma = EDMDiffusion(P_mean, P_std).sample_sigmas(200_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert sigma.log().mean().item() == pytest.approx(P_mean, abs=0.01)  # standard error P_std / 447
    assert sigma.log().std().item() == pytest.approx(P_std, rel=0.01)


def test_the_loss_is_lambda_weighted_squared_error_of_x0_plus_sigma_n():
    """The draws the loss makes: x = x0 + sigma n with n ~ N(0, I), and its value mean(lambda ||D - x0||^2 / d)."""
    process, spy = EDMDiffusion(sigma_data=0.5), RecordingDenoiser(scale=0.3)
    x0 = torch.randn(50_000, 2, generator=torch.Generator().manual_seed(1))
    loss = process.training_loss(spy, x0, generator=torch.Generator().manual_seed(2))
    (x, sigma), = spy.calls
    assert sigma.shape == (50_000,)
    n = (x - x0) / sigma[:, None]
    assert n.mean().item() == pytest.approx(0.0, abs=0.01) and n.std().item() == pytest.approx(1.0, abs=0.01)
    expected = (process.loss_weight(sigma) * (0.3 * x - x0).square().mean(dim=1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("data", ["gaussian", "moons"])
@pytest.mark.parametrize("P_mean", [-3.0, -1.2, 2.0])
def test_the_untrained_loss_is_one_per_dimension_at_any_noise_level(data, P_mean):  # noqa: N803
    """F = 0: D = c_skip x, error c_out^2 per dimension for any zero-mean data of variance sigma_data^2 (module
    docstring), times lambda = 1 / c_out^2. Per sample the weighted error is chi^2-like with variance <= 2 / d."""
    sigma_data = 0.5
    x0 = torch.randn(40_000, 2, generator=torch.Generator().manual_seed(3)) if data == "gaussian" else two_moons(40_000, 1.0)
    x0 = standardised(x0, sigma_data)
    loss = EDMDiffusion(P_mean=P_mean, sigma_data=sigma_data).training_loss(
        edm_model(sigma_data), x0, generator=torch.Generator().manual_seed(4)
    )
    assert loss.item() == pytest.approx(1.0, abs=0.03)  # 3 standard errors (sqrt(2 / 40000) = 0.007 for moons' tails)


# ---------------------------------------------------------------------------- training, checkpoints, resume


@pytest.fixture(scope="module")
def moons() -> torch.Tensor:
    return two_moons(512, std=1.0)


def test_a_short_run_lowers_the_loss_and_its_checkpoint_rebuilds_the_model(tmp_path, moons):
    torch.manual_seed(0)
    process = EDMDiffusion(sigma_data=1.0)
    history = train_denoiser(edm_model(1.0), moons, process, epochs=60, lr=1e-2, checkpoint_dir=tmp_path,
                             save_every=None, **FAST)  # fmt: skip
    assert sum(history.losses[:16]) / 16 == pytest.approx(1.0, abs=0.1)  # F = 0 at the start: the closed form above
    held_out = two_moons(20_000, std=1.0, seed=5)
    with torch.no_grad():  # the EMA model's loss on fresh points, one fixed draw: standard error ~0.01
        trained = process.training_loss(history.ema_model, held_out, generator=torch.Generator().manual_seed(0)).item()
    assert trained < 0.9  # measured 0.82 after these 480 steps, from 1.00 untrained
    model, schedule = load_checkpoint(tmp_path, device="cpu", with_schedule=True)
    assert isinstance(model, EDMPreconditioner) and isinstance(schedule, EDMDiffusion)
    assert schedule.config() == process.config() == schedule_from_config(process.config()).config()
    x, sigma = 2 * torch.randn(32, 2), torch.exp(torch.randn(32))
    with torch.no_grad():
        assert torch.equal(model(x, sigma), history.ema_model(x, sigma))


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, moons):
    torch.manual_seed(0)
    straight_model, first_model, process = edm_model(1.0), edm_model(1.0), EDMDiffusion(sigma_data=1.0)
    first_model.load_state_dict(straight_model.state_dict())
    straight = train_denoiser(straight_model, moons, process, epochs=2, **FAST)
    first = train_denoiser(first_model, moons, process, epochs=2, max_steps=11, checkpoint_dir=tmp_path, **FAST)
    assert first.step == 11
    torch.manual_seed(1234)  # a resumed run depends on the checkpoint only
    resumed_model = edm_model(1.0)
    resumed = train_denoiser(resumed_model, moons, process, epochs=2, checkpoint_dir=tmp_path, **FAST)
    assert resumed.step == straight.step == 16
    assert resumed.losses == straight.losses
    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="noise schedule"):  # another P_mean is another objective
        train_denoiser(edm_model(1.0), moons, EDMDiffusion(P_mean=0.0, sigma_data=1.0), epochs=3,
                       checkpoint_dir=tmp_path, **FAST)  # fmt: skip


# ---------------------------------------------------------------------------- sampling


def test_heun_walks_table_1s_grid_with_35_evaluations():
    spy = RecordingDenoiser()
    generate_samples(spy, EDMDiffusion(), (2,), 3, sampler="heun", steps=18, generator=torch.Generator().manual_seed(0))
    levels = [float(sigma) for _, sigma in spy.calls]
    grid = karras_sigmas(18, 0.002, 80.0).tolist()  # rho = 7, Karras et al. 2022 eq. 5
    assert len(levels) == 35  # Heun: 2N - 1 (Table 1's NFE for CIFAR-10)
    assert levels[0::2] == pytest.approx(grid[:-1]) and levels[1::2] == pytest.approx(grid[1:-1])
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(spy.calls[0][0], z * math.sqrt(1 + 80.0**2))  # the start: noise of std ~ sigma_max = 80


def exact_scale(sigma_data: float, sigma_min: float = 0.002, sigma_max: float = 80.0) -> float:
    """samples / z for the exact ODE of D = c_skip x: z sqrt(1 + sigma_max^2) is x at sigma_max (generate_samples'
    start), x / sqrt(sigma^2 + sigma_data^2) is constant down to sigma_min, then the last step returns c_skip x."""
    at_sigma_min = math.sqrt(1 + sigma_max**2) * math.sqrt(sigma_min**2 + sigma_data**2) / math.sqrt(sigma_max**2 + sigma_data**2)
    return at_sigma_min * sigma_data**2 / (sigma_min**2 + sigma_data**2)


@pytest.mark.parametrize(("sampler", "order"), [("heun", 2), ("dpmpp_2m", 2), ("euler", 1)])
def test_samplers_on_gaussian_data_converge_to_std_sigma_data_at_their_order(sampler, order):
    """F = 0 is E[x0 | x] for N(0, sigma_data^2) data: every sampler's map z -> sample is a scalar, which tends to
    ``exact_scale`` (= sigma_data (1 + 3e-5)) with an error ~ N^-order."""
    model, process = edm_model(sigma_data=0.5), EDMDiffusion(sigma_data=0.5)
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))  # generate_samples' first draw
    errors = []
    for steps in (18, 72):
        samples = generate_samples(model, process, (2,), 16, sampler=sampler, steps=steps,
                                   generator=torch.Generator().manual_seed(0))  # fmt: skip
        ratio = samples / z
        assert ratio.std().item() < 1e-5 * ratio.mean().item()  # one scale for every sample
        errors.append(abs(ratio.mean().item() - exact_scale(0.5)))
    expected = 4.0**order  # 4x the steps
    assert 0.4 * expected < errors[0] / errors[1] < 2.5 * expected, errors
    assert errors[1] < (0.005 if order == 2 else 0.03)


def test_every_sigma_view_sampler_runs_on_a_trained_preconditioner(moons):
    torch.manual_seed(0)
    process = EDMDiffusion(sigma_data=1.0)
    model = train_denoiser(edm_model(1.0), moons, process, epochs=4, lr=3e-3, **FAST).ema_model
    for sampler in ("heun", "euler", "dpmpp_2m", "ddim"):
        samples = generate_samples(model, process, (2,), 64, sampler=sampler, steps=10, generator=torch.Generator().manual_seed(0))
        assert samples.shape == (64, 2) and torch.isfinite(samples).all(), sampler
    samples, trajectory = generate_samples(model, process, (2,), 8, sampler="heun", steps=5, return_trajectory=True)
    assert trajectory.shape == (6, 8, 2) and torch.equal(trajectory[-1], samples)  # VP scale: 1 at sigma = 0
    on_vp_levels = generate_samples(model, LinearNoiseSchedule(100), (2,), 8, sampler="ddpm")  # any sigma is exact
    assert torch.isfinite(on_vp_levels).all()
    exact = generate_samples(OptimalDenoiser(moons), process, (2,), 8, sampler="heun", steps=18)  # any denoiser
    assert torch.cdist(exact, moons).min(dim=1).values.max() < 0.05  # the exact denoiser lands on data points


def test_guided_sampling_of_a_class_conditional_preconditioner(tmp_path):
    """Two blobs at x = -2 (class 0) and x = +2 (class 1): guided samples of each class land on its own blob."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(512) % 2
    data = torch.stack([4.0 * labels - 2.0, torch.zeros(512)], dim=1) + 0.3 * torch.randn(512, 2, generator=g)
    torch.manual_seed(0)
    model = edm_model(sigma_data=1.5, num_classes=2, cond_drop_prob=0.2)
    process = EDMDiffusion(sigma_data=1.5)
    train_denoiser(model, data, process, labels=labels, epochs=30, lr=3e-3, checkpoint_dir=tmp_path,
                   save_every=None, **FAST)  # fmt: skip
    model = load_checkpoint(tmp_path, device="cpu")
    assert model.num_classes == 2 and model.class_embedding.cond_drop_prob == 0.2
    wanted = torch.arange(200) % 2
    samples = generate_samples(model, process, (2,), 200, sampler="heun", steps=18, class_labels=wanted,
                               guidance_scale=2.0, generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.isfinite(samples).all()
    on_own_blob = (samples[:, 0] > 0).long() == wanted
    assert on_own_blob.float().mean().item() > 0.95
    x = torch.randn(4, 2)
    mixed = model(x, torch.tensor(1.0), torch.tensor([1, NULL_LABEL, 0, NULL_LABEL]))
    assert torch.allclose(mixed[[1, 3]], model(x, torch.tensor(1.0))[[1, 3]], atol=1e-6)  # NULL_LABEL = unconditional


# ---------------------------------------------------------------------------- errors


def test_bad_settings_and_inputs_raise_clear_errors(moons):
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        EDMDiffusion(sigma_data=0.0)
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        edm_model(sigma_data=-1.0)
    with pytest.raises(ValueError, match="P_std must be > 0"):
        EDMDiffusion(P_std=0.0)
    with pytest.raises(ValueError, match="need sigma_min < sigma_max"):
        EDMDiffusion(sigma_min=80.0, sigma_max=80.0)
    with pytest.raises(ValueError, match="finite"):
        EDMDiffusion(P_mean=float("nan"))
    with pytest.raises(TypeError, match="must be a BaseBackbone"):
        EDMPreconditioner(nn.Linear(2, 2))
    model, process = edm_model(), EDMDiffusion()
    with pytest.raises(ValueError, match="sigma > 0"):
        model(torch.randn(3, 2), torch.tensor(0.0))
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(3, 5), torch.tensor(1.0))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(3, 2), torch.tensor(1.0), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        edm_model(num_classes=2)(torch.randn(3, 2), torch.tensor(1.0), torch.tensor([0, 2, 0]))
    with pytest.raises(ValueError, match="same sigma_data"):
        EDMDiffusion(sigma_data=1.0).training_loss(model, moons)
    time_model = TimeConditionedModel(MLPBackbone(2, cond_dim=16), time_emb_dim=16)
    with pytest.raises(TypeError, match="EDMPreconditioner"):
        train_denoiser(time_model, moons, process, epochs=1, **FAST)
    with pytest.raises(TypeError, match="train it with EDMDiffusion"):
        train_denoiser(model, moons, LinearNoiseSchedule(100), epochs=1, **FAST)
    with pytest.raises(TypeError, match="EDMPreconditioner"):
        generate_samples(time_model, process, (2,), 4, sampler="heun", steps=5)
    with pytest.raises(ValueError, match="sampler='ddpm'"):
        generate_samples(model, process, (2,), 4, sampler="ddpm", steps=5)
    with pytest.raises(ValueError, match="no trained steps.*num_steps=None"):
        generate_samples(model, process, (2,), 4, sampler="heun")
    with pytest.raises(ValueError, match="no trained steps.*step_schedule='uniform'"):
        generate_samples(model, process, (2,), 4, sampler="ddim", steps=5, step_schedule="uniform")
    with pytest.raises(ValueError, match="sigma_min <= sigma_max within"):
        generate_samples(model, process, (2,), 4, sampler="heun", steps=5, sigma_max=200.0)
