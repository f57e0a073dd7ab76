"""Latent diffusion's pieces: the autoencoder, its trainer and checkpoints, and encode -> diffuse -> decode."""

from __future__ import annotations

import pytest
import torch

from diffusion_playground import LinearNoiseSchedule, OptimalDenoiser, TimeConditionedModel, load_checkpoint, train_denoiser
from diffusion_playground.data import load_digits_images
from diffusion_playground.diffusion.latent_diffusion import (
    decode_latents,
    encode_latents,
    generate_latent_samples,
    train_latent_diffusion,
)
from diffusion_playground.models.autoencoder import ConvAutoencoder, gaussian_kl
from diffusion_playground.models.backbones.unet import UNetBackbone
from diffusion_playground.training.autoencoder_trainer import load_autoencoder, train_autoencoder
from diffusion_playground.training.checkpoint import CheckpointError, list_checkpoints

from conftest import tiny_model


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_digits_images()[0][:128]  # (128, 1, 8, 8) in [-1, 1]


def small_autoencoder(seed: int = 0, **options) -> ConvAutoencoder:
    torch.manual_seed(seed)
    return ConvAutoencoder(1, 8, latent_channels=2, channels=(8, 16), **options)


def test_shapes_follow_f_equals_4_and_odd_sides_round_up():
    for side, latent_side in [(28, 7), (32, 8), (8, 2), (9, 3)]:
        autoencoder = ConvAutoencoder(1, side)
        x = torch.randn(3, 1, side, side)
        z = autoencoder.encode(x)
        assert z.shape == (3, *autoencoder.latent_shape) == (3, 4, latent_side, latent_side)
        assert autoencoder.decode(z).shape == x.shape
    mu, log_var = ConvAutoencoder(1, 8, kl=False).encode_moments(torch.randn(2, 1, 8, 8))
    assert mu.shape == (2, 4, 2, 2) and bool((log_var == -30).all())  # deterministic: sigma = 3e-7


def test_the_kl_term_is_the_closed_form_of_torch_distributions():
    mu, log_var = torch.randn(5, 4, 3, 3, dtype=torch.float64), torch.randn(5, 4, 3, 3, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(gaussian_kl(mu, log_var), expected)


def test_training_lowers_the_reconstruction_error_and_the_scale_factor_gives_unit_variance(digits):
    autoencoder = small_autoencoder()
    history = train_autoencoder(autoencoder, digits, epochs=15, batch_size=32, lr=3e-3)
    assert history.step == 15 * 4 and len(history.losses) == 60
    assert sum(history.reconstruction[-4:]) / 4 < 0.5 * sum(history.reconstruction[:4]) / 4
    latents = encode_latents(autoencoder, digits)
    assert latents.std().item() == pytest.approx(1.0, rel=1e-4)
    assert float(autoencoder.scale_factor) == pytest.approx(history.scale_factor)
    assert torch.allclose(decode_latents(autoencoder, latents), autoencoder.decode(autoencoder.encode(digits)), atol=1e-5)


def test_resuming_gives_the_same_weights_and_a_crash_leaves_the_previous_checkpoint(digits, tmp_path):
    straight = small_autoencoder()
    train_autoencoder(straight, digits, epochs=3, batch_size=32)
    resumed = small_autoencoder()
    train_autoencoder(resumed, digits, epochs=2, batch_size=32, checkpoint_dir=tmp_path)
    (tmp_path / "checkpoint-step00000999.pt").write_bytes(b"half a file")  # a newer file that does not load
    with pytest.warns(RuntimeWarning, match="skipping unusable checkpoint"):
        history = train_autoencoder(small_autoencoder(seed=1), digits, epochs=3, batch_size=32, checkpoint_dir=tmp_path)
    assert history.epoch == 3 and history.step == 12
    with pytest.warns(RuntimeWarning, match="skipping unusable checkpoint"):
        loaded = load_autoencoder(tmp_path)
    for name, value in straight.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert [p.name for p in list_checkpoints(tmp_path) if p.name != "checkpoint-step00000999.pt"] == [
        "checkpoint-step00000012.pt", "checkpoint-step00000008.pt"]  # keep_last=2 valid ones  # fmt: skip


def test_checkpoints_of_the_other_kind_and_other_settings_are_refused(digits, tmp_path):
    train_autoencoder(small_autoencoder(), digits, epochs=1, batch_size=32, checkpoint_dir=tmp_path / "ae")
    with pytest.raises(CheckpointError, match="was written with"):
        train_autoencoder(small_autoencoder(), digits, epochs=2, batch_size=16, checkpoint_dir=tmp_path / "ae")
    with pytest.raises(CheckpointError, match="is an autoencoder checkpoint .train_autoencoder.: load it with load_autoencoder"):
        load_checkpoint(next((tmp_path / "ae").glob("checkpoint-*.pt")))
    train_denoiser(tiny_model(), torch.randn(64, 2), LinearNoiseSchedule(50), epochs=1, checkpoint_dir=tmp_path / "denoiser")
    with pytest.raises(CheckpointError, match="is a denoiser checkpoint"):
        load_autoencoder(next((tmp_path / "denoiser").glob("checkpoint-*.pt")))
    with pytest.raises(ValueError, match=r"images must be a float tensor \(N, 1, 8, 8\)"):
        train_autoencoder(small_autoencoder(), torch.zeros(4, 1, 28, 28), epochs=1)


def test_with_the_exact_denoiser_of_the_latents_the_pipeline_returns_decoded_training_latents(digits):
    """encode -> diffuse -> decode with E[z0 | z_sigma] exact: the samples are latents of the data (the exact
    denoiser memorises), so their decodings are the autoencoder's reconstructions of training digits."""
    autoencoder = small_autoencoder()
    train_autoencoder(autoencoder, digits, epochs=2, batch_size=32)
    latents = encode_latents(autoencoder, digits[:16])
    images = generate_latent_samples(autoencoder, OptimalDenoiser(latents), LinearNoiseSchedule.scaled(200), 8,
                                     sampler="dpmpp_2m", steps=30, generator=torch.Generator().manual_seed(0))  # fmt: skip
    reconstructions = decode_latents(autoencoder, latents)  # (16, 1, 8, 8)
    distances = torch.cdist(images.flatten(1), reconstructions.flatten(1)).min(dim=1).values
    assert images.shape == (8, 1, 8, 8) and distances.max().item() < 1e-2


def test_a_backbone_trained_on_latents_samples_images(digits, tmp_path):
    autoencoder = small_autoencoder()
    train_autoencoder(autoencoder, digits, epochs=1, batch_size=32)
    backbone = UNetBackbone(in_channels=2, image_size=2, cond_dim=16, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                            attention_resolutions=(), norm_groups=4)  # fmt: skip
    model = TimeConditionedModel(backbone, time_emb_dim=16, num_time_steps=50)
    schedule = LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)
    history = train_latent_diffusion(autoencoder, model, digits, schedule, epochs=1, batch_size=32, checkpoint_dir=tmp_path)
    assert history.step == 4 and list_checkpoints(tmp_path)
    images = generate_latent_samples(autoencoder, history.ema_model, schedule, 3, sampler="ddim", steps=5)
    assert images.shape == (3, 1, 8, 8) and bool(torch.isfinite(images).all())
    with pytest.raises(ValueError, match="returns images"):
        generate_latent_samples(autoencoder, history.ema_model, schedule, 3, return_trajectory=True)
