"""CategoricalDiffusion (D3PM, Austin et al. 2021): definitions, brute-force Bayes, the loss and a short training run."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from diffusion_playground import (
    CategoricalDiffusion,
    LinearNoiseSchedule,
    MLPBackbone,
    TimeAndClassConditionedModel,
    TimeConditionedModel,
    load_checkpoint,
    train_denoiser,
)
from diffusion_playground.diffusion.noise_schedule import schedule_from_config

TRANSITIONS = ["uniform", "absorbing"]
FAST = {"batch_size": 64, "show_progress": False, "device": "cpu", "lr": 3e-3, "ema_decay": 0.95}


def one_step_matrices(process: CategoricalDiffusion) -> Tensor:
    """Q_t from the definitions (Austin et al. 2021, appendix A.2), in float64: (T, S, S)."""
    K, S = process.num_categories, process.num_states
    betas = process.betas.double()[:, None, None]  # (T, 1, 1)
    if process.transition == "uniform":
        return (1 - betas) * torch.eye(K, dtype=torch.float64) + betas * torch.full((K, K), 1 / K, dtype=torch.float64)
    to_mask = torch.zeros(S, S, dtype=torch.float64)
    to_mask[:, K] = 1.0  # 1 e_mask^T
    return (1 - betas) * torch.eye(S, dtype=torch.float64) + betas * to_mask


def cumulative_products(Q: Tensor) -> Tensor:
    """Q_bar_t = Q_0 Q_1 ... Q_t by repeated matrix products: (T, S, S)."""
    products = [Q[0]]
    for Q_t in Q[1:]:
        products.append(products[-1] @ Q_t)
    return torch.stack(products)


def random_model(data_dim: int, time_steps: int, seed: int = 0) -> TimeConditionedModel:
    """An untrained MLP whose (normally zero-initialised) output layer is random, so its logits are not all equal."""
    torch.manual_seed(seed)
    backbone = MLPBackbone(data_dim, cond_dim=16, hidden_dim=32, num_blocks=1)
    model = TimeConditionedModel(backbone, 16, num_time_steps=time_steps)
    nn.init.normal_(model.backbone.output[1].weight, std=0.5)
    return model


class FixedLogits(nn.Module):
    """A "model" whose output ignores (x_t, t): always ``logits`` (D*S,) for every sample."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.logits.expand(x.shape[0], -1)


class Identity(nn.Module):
    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x


# ------------------------------------------------------------------------------ transition matrices


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_transition_matrices_are_stochastic_and_q_bar_is_the_product_of_q(transition):
    process = CategoricalDiffusion(3, 12, transition)
    Q = one_step_matrices(process)
    assert torch.allclose(process.Q.double(), Q, atol=1e-6)
    assert torch.allclose(process.Q.sum(-1), torch.ones(12, process.num_states), atol=1e-6)
    assert torch.allclose(process.Q_bar.sum(-1), torch.ones(12, process.num_states), atol=1e-6)
    assert torch.allclose(process.Q_bar.double(), cumulative_products(Q), atol=1e-6)
    # q(x_t | x_0) is row x_0 of Q_bar_t, for every category and step
    x0 = torch.arange(3).repeat(12)[:, None]  # (36, 1)
    t = torch.arange(12).repeat_interleave(3)  # (36,)
    assert torch.allclose(process.q_probs(x0, t)[:, 0], process.Q_bar[t, x0[:, 0]], atol=1e-6)


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_q_probs_is_the_histogram_of_a_simulated_chain(transition):
    process = CategoricalDiffusion(3, 6, transition)
    Q = process.Q
    generator = torch.Generator().manual_seed(0)
    n, t = 20_000, 3
    x = torch.full((n,), 1)  # x_0 = category 1
    for s in range(t + 1):  # x_s ~ Cat(x_{s-1} Q_s), one step at a time
        x = torch.multinomial(Q[s][x], 1, generator=generator).squeeze(1)
    chain = torch.bincount(x, minlength=process.num_states) / n
    direct = process.q_sample(torch.full((n, 1), 1), t, generator).flatten()
    direct = torch.bincount(direct, minlength=process.num_states) / n
    expected = process.q_probs(torch.tensor([[1]]), t)[0, 0]
    assert torch.allclose(chain, expected, atol=0.015), (chain, expected)
    assert torch.allclose(direct, expected, atol=0.015), (direct, expected)


# ------------------------------------------------------------------------------ posterior


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_posterior_is_bayes_rule_by_brute_force(transition):
    K, T = 3, 6
    process = CategoricalDiffusion(K, T, transition)
    S = process.num_states
    Q = one_step_matrices(process)
    Q_bar = cumulative_products(Q)
    cases = [(t, i, k) for t in range(1, T) for i in range(K) for k in range(S) if Q_bar[t, i, k] > 0]
    t = torch.tensor([c[0] for c in cases])
    x0 = torch.tensor([c[1] for c in cases])[:, None]  # (N, 1)
    x_t = torch.tensor([c[2] for c in cases])[:, None]  # (N, 1)
    posterior = process.q_posterior_probs(x_t, nn.functional.one_hot(x0, S).float(), t)[:, 0]  # (N, S)
    mixture = torch.softmax(torch.randn(len(cases), 1, S, generator=torch.Generator().manual_seed(0)), -1)
    if process.mask_index is not None:
        mixture[..., process.mask_index] = 0.0  # x_0 is never MASK
        mixture = mixture / mixture.sum(-1, keepdim=True)
    p_theta = process.q_posterior_probs(x_t, mixture, t)[:, 0]  # (N, S)
    for n, (step, i, k) in enumerate(cases):
        for j in range(S):
            # q(x_{t-1} = j | x_t = k, x_0 = i) = Q_t[j, k] Q_bar_{t-1}[i, j] / Q_bar_t[i, k]
            bayes = Q[step, j, k] * Q_bar[step - 1, i, j] / Q_bar[step, i, k]
            assert posterior[n, j].item() == pytest.approx(bayes.item(), abs=1e-5), (step, i, k, j)
        # p(x_{t-1} = j | x_t = k) ∝ sum_i q(x_{t-1} = j, x_t = k | x_0 = i) p(x_0 = i)  (Austin et al. 2021, eq. 4)
        joint = torch.stack([Q[step, j, k] * (mixture[n, 0].double() @ Q_bar[step - 1, :, j]) for j in range(S)])
        if joint.sum() > 0:
            assert torch.allclose(p_theta[n].double(), joint / joint.sum(), atol=1e-5), (step, i, k)


def test_posterior_at_the_first_step_is_refused():
    process = CategoricalDiffusion(3, 5)
    with pytest.raises(ValueError, match="t >= 1"):
        process.q_posterior_probs(torch.zeros(2, 1, dtype=torch.long), torch.full((2, 1, 3), 1 / 3), 0)


# ------------------------------------------------------------------------------ the end of the chain


def test_absorbing_ends_all_mask_and_uniform_ends_uniform():
    absorbing = CategoricalDiffusion(4, 8, "absorbing")
    x0 = torch.randint(0, 4, (16, 5), generator=torch.Generator().manual_seed(0))
    assert (absorbing.q_sample(x0, absorbing.T - 1) == 4).all()
    assert torch.allclose(absorbing.alpha_bars, 1 - torch.arange(1, 9) / 8, atol=1e-7)  # 1 - t/T, t from 1
    uniform = CategoricalDiffusion(4, 50, "uniform")
    assert torch.allclose(uniform.q_probs(x0, uniform.T - 1), torch.full((16, 5, 4), 0.25), atol=1e-3)
    assert uniform.q_probs(x0, 0).amax(-1).min() > 0.99  # the first step barely corrupts


# ------------------------------------------------------------------------------ network interface


def test_encode_and_model_logits_are_inverse_layouts():
    process = CategoricalDiffusion(3, 4, "absorbing")  # S = 4
    images = torch.randint(0, 4, (2, 3, 5, 6), generator=torch.Generator().manual_seed(0))
    code = process.encode(images)  # (2, 12, 5, 6)
    assert code.shape == (2, 12, 5, 6) and set(code.unique().tolist()) == {-1.0, 1.0}
    for c in range(3):
        for s in range(4):
            assert torch.equal(code[:, c * 4 + s] == 1, images[:, c] == s)
    vectors = images[:, :, 0, 0]  # (2, 3)
    assert process.encode(vectors).shape == (2, 12)
    # reading the code back as logits gives each element's own state (MASK excluded: it is -inf)
    logits = process.model_logits(Identity(), images.clamp(max=2), 0)  # (2, 3, 5, 6, 4)
    assert torch.equal(logits.argmax(-1), images.clamp(max=2))
    assert (logits[..., 3] == float("-inf")).all()


# ------------------------------------------------------------------------------ loss


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_loss_terms_are_nonnegative_with_finite_gradients(transition):
    process = CategoricalDiffusion(3, 10, transition)
    model = random_model(4 * process.num_states, 10)
    x0 = torch.randint(0, 3, (40, 4), generator=torch.Generator().manual_seed(1))
    t = torch.arange(10).repeat(4)  # every step, including 0 and T - 1
    vb, ce = process.loss_terms(model, x0, t, generator=torch.Generator().manual_seed(2))
    assert vb.shape == ce.shape == (40, 4)
    assert (vb > -1e-6).all() and (ce > 0).all()
    assert torch.equal(vb[t == 0], ce[t == 0])  # L_0 is the cross-entropy
    (vb + ce).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_an_oracle_model_has_zero_loss_and_a_random_one_does_not(transition):
    process = CategoricalDiffusion(3, 10, transition)
    pattern = torch.tensor([[0, 2, 1, 1]])
    x0 = pattern.expand(40, -1)
    t = torch.arange(10).repeat(4)
    oracle = FixedLogits(30.0 * process.encode(pattern)[0])  # logits of the true x_0, whatever x_t is
    vb, ce = process.loss_terms(oracle, x0, t, generator=torch.Generator().manual_seed(0))
    assert vb.abs().max() < 1e-6 and ce.max() < 1e-6
    random = random_model(4 * process.num_states, 10)
    vb, _ = process.loss_terms(random, x0, t, generator=torch.Generator().manual_seed(0))
    assert vb[t > 0].mean() > 0.01


def test_hybrid_loss_adds_lambda_times_the_cross_entropy():
    x0 = torch.randint(0, 3, (32, 4), generator=torch.Generator().manual_seed(0))
    uniform_logits = FixedLogits(torch.zeros(4 * 4))  # p~(x_0 | x_t) uniform over the K = 3 categories
    losses = {}
    for hybrid_lambda in (0.0, 0.5):
        process = CategoricalDiffusion(3, 10, "absorbing", hybrid_lambda=hybrid_lambda)
        losses[hybrid_lambda] = process.training_loss(uniform_logits, x0, generator=torch.Generator().manual_seed(0))
    assert losses[0.0] >= 0
    assert (losses[0.5] - losses[0.0]).item() == pytest.approx(0.5 * torch.log(torch.tensor(3.0)).item(), rel=1e-5)


# ------------------------------------------------------------------------------ training, sampling, checkpoints


def two_patterns(n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """D = 4 binary vectors: pattern A = [0, 0, 1, 1] with probability 0.7, else B = [1, 1, 1, 0]; with labels."""
    patterns = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    labels = (torch.rand(n, generator=torch.Generator().manual_seed(seed)) > 0.7).long()
    return patterns[labels], labels, patterns


def pattern_fractions(samples: Tensor, patterns: Tensor) -> Tensor:
    """Fraction of samples equal to each pattern: (num_patterns,)."""
    return (samples[:, None, :] == patterns[None]).all(-1).float().mean(0)


@pytest.mark.parametrize("transition", TRANSITIONS)
def test_training_learns_the_patterns_and_the_checkpoint_rebuilds_the_process(tmp_path, transition):
    data, _, patterns = two_patterns(512)
    process = CategoricalDiffusion(2, 20, transition)
    model = TimeConditionedModel(
        MLPBackbone(data_dim=4 * process.num_states, cond_dim=32, hidden_dim=64, num_blocks=2), 32, num_time_steps=20
    )
    history = train_denoiser(model, data, process, epochs=25, checkpoint_dir=tmp_path, save_every=None, **FAST)
    assert history.step == 200
    assert sum(history.losses[-40:]) / 40 < 0.6 * sum(history.losses[:10]) / 10
    samples = process.sample(history.ema_model, (2000, 4), generator=torch.Generator().manual_seed(0))
    assert samples.dtype == torch.long and samples.shape == (2000, 4)
    fractions = pattern_fractions(samples, patterns)
    assert fractions.sum() > 0.9, f"only {fractions.sum():.2f} of the samples are one of the two patterns"
    frequency = fractions[0] / fractions.sum()
    assert 0.6 < frequency < 0.8, f"pattern A has frequency {frequency:.2f} among the patterns, expected 0.7"

    loaded_model, loaded = load_checkpoint(tmp_path, device="cpu", with_schedule=True)
    assert isinstance(loaded, CategoricalDiffusion) and loaded.config() == process.config()
    assert torch.equal(loaded.Q_bar, process.Q_bar) and torch.equal(loaded.Q, process.Q)
    again = loaded.sample(loaded_model, (2000, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, samples)


def test_class_conditional_training_samples_each_class_pattern():
    data, labels, patterns = two_patterns(512, seed=1)
    process = CategoricalDiffusion(2, 10, "uniform")
    backbone = MLPBackbone(data_dim=4 * process.num_states, cond_dim=32, hidden_dim=64, num_blocks=2)
    model = TimeAndClassConditionedModel(backbone, 2, 32, num_time_steps=10, cond_drop_prob=0.0)
    history = train_denoiser(model, data, process, labels=labels, epochs=25, **FAST)
    for label in (0, 1):
        generator = torch.Generator().manual_seed(0)
        samples, trajectory = process.sample(
            history.ema_model, (500, 4), class_labels=label, generator=generator, return_trajectory=True
        )
        assert trajectory.shape == (11, 500, 4) and torch.equal(trajectory[-1], samples)
        assert pattern_fractions(samples, patterns)[label] > 0.9


def test_config_round_trip_keeps_custom_betas():
    process = CategoricalDiffusion(5, 4, "uniform", hybrid_lambda=0.1, betas=torch.tensor([0.1, 0.2, 0.3, 0.5]))
    rebuilt = schedule_from_config(process.config())
    assert isinstance(rebuilt, CategoricalDiffusion) and torch.equal(rebuilt.betas, process.betas)
    assert rebuilt.hybrid_lambda == 0.1


# ------------------------------------------------------------------------------ errors


def test_clear_errors_for_bad_data_and_a_backbone_of_the_wrong_width():
    process = CategoricalDiffusion(3, 5)
    model = random_model(4 * 3, 5)
    with pytest.raises(ValueError, match="integer tensor"):
        process.training_loss(model, torch.rand(8, 4))
    with pytest.raises(ValueError, match=r"in \[0, 3\); got values from 0 to 3"):
        process.training_loss(model, torch.tensor([[0, 1, 2, 3]]))
    with pytest.raises(ValueError, match=r"data_dim \(MLPBackbone\) = C\*S = 2\*3 = 6"):
        process.training_loss(model, torch.zeros(8, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in_channels = C\*S = 1\*3 = 3"):
        unet_like = TimeConditionedModel(MLPBackbone(12, cond_dim=16), 16, num_time_steps=5)
        unet_like.backbone.input_shape = (2, 4, 4)  # a backbone built for in_channels=2
        process.model_logits(unet_like, torch.zeros(1, 1, 4, 4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="num_time_steps=5"):
        CategoricalDiffusion(3, 8).training_loss(model, torch.zeros(8, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        train_denoiser(model, torch.rand(8, 4), process, epochs=1, **FAST)
    with pytest.raises(ValueError, match="floating-point tensor for a Gaussian noise schedule"):
        train_denoiser(model, torch.zeros(8, 4, dtype=torch.long), LinearNoiseSchedule(5), epochs=1, **FAST)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CategoricalDiffusion(1), "num_categories"),
        (lambda: CategoricalDiffusion(3, 1), "time_steps"),
        (lambda: CategoricalDiffusion(3, 10, "gaussian"), "transition must be one of"),
        (lambda: CategoricalDiffusion(3, 10, hybrid_lambda=-1.0), "hybrid_lambda"),
        (lambda: CategoricalDiffusion(3, 10, betas=torch.full((4,), 0.1)), "time_steps=len"),
        (lambda: CategoricalDiffusion(3, 2, betas=torch.tensor([1.0, 1.0])), "only at the last step"),
        (lambda: CategoricalDiffusion(3, 2, betas=torch.tensor([0.0, 0.5])), r"\(0, 1\]"),
    ],
)
def test_constructor_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()
