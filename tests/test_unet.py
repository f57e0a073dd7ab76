"""UNetBackbone: shapes for every supported size, zero-initialised output, conditioning, clear errors,
preset sizes, training inside a wrapper and rebuilding from a checkpoint's config."""

from __future__ import annotations

import pytest
import torch

from diffusion_playground import (
    LinearNoiseSchedule,
    TimeAndClassConditionedModel,
    TimeConditionedModel,
    generate_samples,
    load_checkpoint,
    train_denoiser,
)
from diffusion_playground.data import load_digits_images
from diffusion_playground.models import UNetBackbone, unet_large, unet_mnist, unet_small, unet_tiny
from diffusion_playground.models.backbones.unet import SelfAttention2d
from diffusion_playground.training.checkpoint import model_config, model_from_config


def small_unet(in_channels: int, image_size, **kwargs) -> UNetBackbone:
    config = dict(cond_dim=16, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                  head_channels=8, norm_groups=4)  # fmt: skip
    return UNetBackbone(in_channels, image_size, **{**config, **kwargs})


def randomise_zero_initialised_layers(backbone: UNetBackbone) -> None:
    """Give the zero-initialised convs (output, last conv of every residual branch) random weights, as
    training would, so the output depends on the input and on cond."""
    generator = torch.Generator().manual_seed(1)
    for parameter in backbone.parameters():
        if not parameter.any():
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.1


@pytest.mark.parametrize(
    ("in_channels", "image_size", "kwargs"),
    [
        (3, 32, dict(channel_mult=(1, 2, 2), attention_resolutions=(16, 8))),  # CIFAR-10
        (1, 28, dict(channel_mult=(1, 2, 2), attention_resolutions=(7,))),  # MNIST: 28 -> 14 -> 7
        (1, 8, dict(attention_resolutions=(4,))),  # scikit-learn digits
        (1, 16, dict(channel_mult=(1, 2, 2, 2))),  # digits scaled 2x: 16 -> 8 -> 4 -> 2
        (2, (13, 10), dict(channel_mult=(1, 1, 1))),  # odd, non-square: 13x10 -> 7x5 -> 4x3
    ],
)
def test_output_has_the_input_shape_and_is_zero_at_initialisation(in_channels, image_size, kwargs):
    backbone = small_unet(in_channels, image_size, **kwargs)
    x = torch.randn(2, *backbone.input_shape)
    out = backbone(x, torch.randn(2, 16))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output conv
    randomise_zero_initialised_layers(backbone)
    out = backbone(x, torch.randn(2, 16))
    assert out.shape == x.shape and out.abs().max() > 0


def test_the_conditioning_changes_the_output():
    backbone = small_unet(1, 8).eval()
    randomise_zero_initialised_layers(backbone)
    x = torch.randn(1, 1, 8, 8).expand(2, -1, -1, -1)
    out = backbone(x, torch.randn(2, 16, generator=torch.Generator().manual_seed(0)))
    assert not torch.allclose(out[0], out[1])  # same x, different cond


def test_gradients_reach_every_parameter_once_the_zero_layers_have_moved():
    backbone = small_unet(1, 8, attention_resolutions=(4,))
    randomise_zero_initialised_layers(backbone)
    (backbone(torch.randn(4, 1, 8, 8), torch.randn(4, 16)) - 1).square().mean().backward()
    missing = [name for name, p in backbone.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_self_attention_matches_a_brute_force_softmax():
    attention = SelfAttention2d(channels=8, head_channels=4, norm_groups=2)
    torch.nn.init.normal_(attention.proj.weight)
    h = torch.randn(2, 8, 3, 5)
    q, k, v = attention.qkv(attention.norm(h)).reshape(2, 3, 2, 4, 15).unbind(dim=1)  # (B, nh, hs, HW) each
    weights = torch.softmax(torch.einsum("bncq,bnck->bnqk", q, k) / 4**0.5, dim=-1)  # (B, nh, HW, HW)
    attended = torch.einsum("bnqk,bnck->bncq", weights, v).reshape(2, 8, 3, 5)
    assert torch.allclose(attention(h), h + attention.proj(attended), atol=1e-5)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.randn(2, 3, 8, 8), r"expects images of shape \(batch, 1, 8, 8\); got \(2, 3, 8, 8\)"),  # channels
        (torch.randn(2, 1, 4, 4), r"expects images of shape \(batch, 1, 8, 8\); got \(2, 1, 4, 4\)"),  # undersized
        (torch.randn(2, 8, 8), r"expects images of shape \(batch, 1, 8, 8\)"),  # no channel axis
    ],
)
def test_a_wrongly_shaped_input_names_the_expected_shape(x, message):
    backbone = small_unet(1, 8)
    with pytest.raises(ValueError, match=message):
        backbone(x, torch.randn(x.shape[0], 16))
    model = TimeConditionedModel(backbone, time_emb_dim=16)  # the wrapper says it too
    with pytest.raises(ValueError, match=r"\(batch, 1, 8, 8\)"):
        model(x, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(image_size=4, channel_mult=(1, 2, 2, 2)), r"4x4 is too small for 4 levels.*>= 8"),
        (dict(image_size=28, channel_mult=(1, 2, 2), attention_resolutions=(16,)), r"\[16\].*sides \[28, 14, 7\]"),
        (dict(channel_mult=()), "channel_mult"),
        (dict(image_size=(8, 8, 8)), r"an int or a pair \(H, W\); got \(8, 8, 8\)"),
        (dict(dropout=1.0), "dropout"),
        (dict(base_channels=0), "base_channels must be >= 1"),
    ],
)
def test_an_impossible_configuration_is_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_unet(1, **{"image_size": 8, **kwargs})


def test_a_wrong_cond_size_is_explained():
    with pytest.raises(ValueError, match=r"cond_emb must have shape \(batch, cond_dim\) = \(2, 16\)"):
        small_unet(1, 8)(torch.randn(2, 1, 8, 8), torch.randn(2, 32))


@pytest.mark.parametrize(
    ("preset", "expected", "input_shape"),
    [(unet_small, 3e6, (3, 32, 32)), (unet_large, 53e6, (3, 32, 32)), (unet_mnist, None, (1, 28, 28)),
     (unet_tiny, None, (1, 8, 8))],  # fmt: skip
)
def test_presets_have_their_advertised_size_and_print_it(preset, expected, input_shape, capsys):
    backbone = preset()
    count = backbone.num_parameters()
    assert backbone.input_shape == input_shape
    assert f"{preset.__name__}: {count:,} parameters" in capsys.readouterr().out
    if expected is not None:
        assert abs(count - expected) / expected < 0.1, f"{preset.__name__} has {count:,} parameters"


def test_preset_overrides_and_odd_mnist_size_run_forward():
    backbone = unet_mnist(cond_dim=32, base_channels=8, num_res_blocks=1)
    assert backbone.cond_dim == 32
    assert backbone(torch.randn(2, 1, 28, 28), torch.randn(2, 32)).shape == (2, 1, 28, 28)


def test_a_wrapped_unet_rebuilds_from_its_checkpoint_config():
    model = TimeAndClassConditionedModel(unet_small(cond_dim=64), num_classes=10, time_emb_dim=64, num_time_steps=100)
    rebuilt = model_from_config(model_config(model))
    rebuilt.load_state_dict(model.state_dict())  # same architecture: every key and shape fits
    assert isinstance(rebuilt.backbone, UNetBackbone) and rebuilt.backbone.input_shape == (3, 32, 32)
    assert rebuilt.backbone.num_parameters() == model.backbone.num_parameters()


def test_a_unet_trains_on_digits_inside_the_class_conditional_wrapper_and_reloads(tmp_path):
    schedule = LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)
    model = TimeAndClassConditionedModel(unet_tiny(), num_classes=10, num_time_steps=50)
    images, labels = load_digits_images()
    history = train_denoiser(model, images, schedule, labels=labels, epochs=1, batch_size=32, lr=2e-3, max_steps=6,
                             checkpoint_dir=tmp_path, show_progress=False, device="cpu")  # fmt: skip
    assert history.step == 6 and all(torch.isfinite(torch.tensor(history.losses)))
    reloaded = load_checkpoint(tmp_path, device="cpu")  # rebuilt from the recorded UNetBackbone arguments
    t, y = torch.tensor([0, 10, 20, 49]), labels[:4]
    with torch.no_grad():
        out = history.ema_model(images[:4], t, y)
        assert out.shape == (4, 1, 8, 8) and out.abs().max() > 0
        assert torch.equal(reloaded(images[:4], t, y), out)
    # class-conditional sampling: the requested number per class, with and without guidance
    requested = torch.arange(10).repeat_interleave(3)  # 3 samples of each digit
    for guidance_scale in (0.0, 2.0):
        samples = generate_samples(reloaded, schedule, (1, 8, 8), 30, class_labels=requested, sampler="ddim",
                                   steps=5, guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert samples.shape == (30, 1, 8, 8) and torch.isfinite(samples).all()
