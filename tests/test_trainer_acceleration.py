"""The trainer's speed settings (mixed precision, channels_last, torch.compile) keep its results, on the CPU."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from diffusion_playground import BaseBackbone, TimeConditionedModel, train_denoiser
from diffusion_playground.training import acceleration
from diffusion_playground.training.acceleration import autocast_dtype, use_channels_last

from conftest import tiny_model

FAST = dict(batch_size=32, show_progress=False, device="cpu")


class TinyConvBackbone(BaseBackbone):
    """Two convolutions with the conditioning added per channel: enough to exercise NHWC."""

    def __init__(self, channels: int = 1, cond_dim: int = 16):
        super().__init__()
        self.cond_dim, self.input_shape = cond_dim, (channels, 8, 8)
        self.conv_in = nn.Conv2d(channels, 8, 3, padding=1)
        self.cond = nn.Linear(cond_dim, 8)
        self.conv_out = nn.Conv2d(8, channels, 3, padding=1)

    def forward(self, x, cond_emb):
        h = torch.nn.functional.silu(self.conv_in(x) + self.cond(cond_emb)[:, :, None, None])  # (B, 8, H, W)
        return self.conv_out(h)


def conv_model(schedule) -> TimeConditionedModel:
    return TimeConditionedModel(TinyConvBackbone(), time_emb_dim=16, num_time_steps=schedule.T)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_bf16_autocast_tracks_fp32_training(schedule, points):
    fp32 = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, precision="fp32", **FAST)
    bf16 = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, precision="bf16", **FAST)
    assert bf16.losses != fp32.losses  # the forward pass really ran in bf16
    assert bf16.losses == pytest.approx(fp32.losses, rel=0.05)


def test_bf16_on_a_cpu_without_native_bf16_warns_that_it_is_slow(monkeypatch):
    monkeypatch.setattr(acceleration, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without native bf16 kernels.*use precision='fp32'"):
        assert acceleration.autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(acceleration, "cpu_has_fast_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert acceleration.autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16


def test_channels_last_training_resumes_exactly(tmp_path, schedule, images):
    torch.manual_seed(0)
    straight_model = conv_model(schedule)
    resumed_model = conv_model(schedule)
    resumed_model.load_state_dict(straight_model.state_dict())
    straight = train_denoiser(straight_model, images, schedule, epochs=2, channels_last=True, **FAST)
    assert straight_model.backbone.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    train_denoiser(resumed_model, images, schedule, epochs=2, channels_last=True, max_steps=5, checkpoint_dir=tmp_path, **FAST)
    resumed = train_denoiser(conv_model(schedule), images, schedule, epochs=2, channels_last=True, checkpoint_dir=tmp_path, **FAST)
    assert resumed.losses == straight.losses
    for a, b in zip(straight.ema_model.parameters(), resumed.ema_model.parameters()):
        assert torch.equal(a, b)


def test_augmentation_draws_from_the_trainer_generator(schedule, images):
    seen = []

    def flip(x, generator):
        seen.append(generator)
        return x.flip(-1)

    train_denoiser(conv_model(schedule), images, schedule, epochs=1, augment=flip, **FAST)
    assert len(seen) == 4 and all(isinstance(g, torch.Generator) for g in seen)


def test_torch_compile_trains_like_eager(schedule, points):
    eager = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, **FAST)
    compiled = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, compile=True, **FAST)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-3)


def test_precision_and_memory_format_choices_are_checked():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="needs a CUDA device"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match=r"one of \('auto', 'fp32', 'bf16', 'fp16'\)"):
        autocast_dtype("fp8", cpu)
    assert use_channels_last(None, 4, cuda) and not use_channels_last(None, 4, cpu) and not use_channels_last(None, 2, cuda)
    with pytest.raises(ValueError, match=r"image batches \(B, C, H, W\)"):
        use_channels_last(True, 2, cpu)


def test_random_horizontal_flip_mirrors_about_half_the_images():
    from diffusion_playground.data.augmentation import random_horizontal_flip

    x = torch.arange(2000 * 4, dtype=torch.float32).reshape(2000, 1, 1, 4)
    flipped = random_horizontal_flip(x, torch.Generator().manual_seed(0))
    mirrored = (flipped == x.flip(-1)).all(dim=(1, 2, 3))
    assert ((flipped == x).all(dim=(1, 2, 3)) | mirrored).all()
    assert 900 < mirrored.sum() < 1100
    assert torch.equal(flipped, random_horizontal_flip(x, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        random_horizontal_flip(torch.zeros(3, 2))


def test_bf16_training_resumes_exactly(tmp_path, schedule, points):
    straight = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, precision="bf16", **FAST)
    train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, precision="bf16", max_steps=6, checkpoint_dir=tmp_path, **FAST)
    resumed = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, precision="bf16", checkpoint_dir=tmp_path, **FAST)
    assert resumed.losses == straight.losses
    for a, b in zip(straight.ema_model.parameters(), resumed.ema_model.parameters()):
        assert torch.equal(a, b)
