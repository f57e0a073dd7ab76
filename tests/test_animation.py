"""GIFs of the reverse process and the forward-process strip for images: frame counts, sizes, axes."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.quiver import Quiver
from PIL import Image

from diffusion_playground import LinearNoiseSchedule, OptimalDenoiser, generate_samples
from diffusion_playground.data import load_digits_images
from diffusion_playground.diffusion import step_sigmas
from diffusion_playground.visualization import (
    animate_images,
    animate_points_2d,
    animate_reverse_process,
    plot_forward_process_images,
)
from diffusion_playground.visualization.animation import frame_indices

from conftest import tiny_model

MAX_GIF_BYTES = 2 * 1024 * 1024


def _gif_frames(path) -> int:
    with Image.open(path) as gif:
        return gif.n_frames


def test_frame_indices_are_strictly_increasing_from_noise_to_samples():
    for num_states, frames in [(51, 40), (1001, 40), (10, 10), (3, 2)]:
        indices = frame_indices(num_states, frames)
        assert len(indices) == frames and indices[0] == 0 and indices[-1] == num_states - 1
        assert all(b > a for a, b in itertools.pairwise(indices))
    with pytest.raises(ValueError, match="more than the trajectory"):
        frame_indices(5, 6)


def test_points_gif_has_the_requested_frames_and_stays_small(tmp_path):
    trajectory = torch.randn(51, 2000, 2, generator=torch.Generator().manual_seed(0))  # (steps, B, 2)
    fig = animate_points_2d(trajectory, tmp_path / "points.gif", frames=12, fps=8)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    size = (tmp_path / "points.gif").stat().st_size
    assert 0 < size < MAX_GIF_BYTES, size
    assert _gif_frames(tmp_path / "points.gif") == 12


def _quivers(fig: Figure) -> list[Quiver]:
    return [artist for artist in fig.axes[0].collections if isinstance(artist, Quiver)]


def _never_show(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("plt.show() was called")

    monkeypatch.setattr(plt, "show", fail)


def test_points_gif_with_the_field_at_default_settings_has_40_frames_under_2_mb(tmp_path, monkeypatch):
    _never_show(monkeypatch)
    schedule = LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)
    denoiser = OptimalDenoiser(torch.randn(64, 2, generator=torch.Generator().manual_seed(1)))
    _, trajectory = generate_samples(denoiser, schedule, (2,), 2000, return_trajectory=True,
                                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    fig = animate_reverse_process(trajectory, tmp_path / "field.gif", field=(denoiser, schedule))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(_quivers(fig)) == 1 and _quivers(fig)[0].N == 15 * 15  # the default 15 x 15 grid
    size = (tmp_path / "field.gif").stat().st_size
    assert 0 < size < MAX_GIF_BYTES, size
    assert _gif_frames(tmp_path / "field.gif") == 40
    assert not _quivers(animate_points_2d(trajectory, tmp_path / "plain.gif", frames=5))  # no model, no arrows


def test_field_arrows_of_the_last_frame_pull_onto_the_data(tmp_path):
    schedule = LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)
    point = torch.tensor([[1.0, -0.5]])
    trajectory = torch.randn(21, 30, 2, generator=torch.Generator().manual_seed(0))  # (steps, B, 2)
    fig = animate_points_2d(trajectory, tmp_path / "one_point.gif", field=(OptimalDenoiser(point), schedule),
                            grid_size=5, frames=6, fps=4)  # fmt: skip
    assert _gif_frames(tmp_path / "one_point.gif") == 6
    (quiver,) = _quivers(fig)  # showing the samples' state: the field at sigma_0, where a x0_hat is about the point
    tails = torch.as_tensor(quiver.get_offsets()).float()
    drawn = torch.stack([torch.as_tensor(quiver.U), torch.as_tensor(quiver.V)], dim=1).float()
    pull = point - tails
    max_length = 0.9 * 6.0 / 4  # 0.9 spacings of a 5 x 5 grid on [-3, 3]
    expected = pull * (max_length / pull.norm(dim=1, keepdim=True).clamp(min=max_length))
    assert torch.allclose(drawn, expected, atol=2e-3)
    assert "t = 0" in fig.axes[0].texts[0].get_text()


def test_field_follows_the_given_sigmas_and_restores_the_training_flag(tmp_path):
    schedule = LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)
    model = tiny_model(schedule.T).train()
    sigmas = step_sigmas(schedule, 8, "karras")  # what heun / euler / dpmpp_2m walk
    _, trajectory = generate_samples(model, schedule, (2,), 40, sampler="heun", steps=8, return_trajectory=True)
    assert trajectory.shape[0] == sigmas.numel()
    fig = animate_points_2d(trajectory, tmp_path / "heun.gif", field=(model, schedule), sigmas=sigmas, frames=4)
    assert _gif_frames(tmp_path / "heun.gif") == 4 and len(_quivers(fig)) == 1
    assert model.training
    with pytest.raises(ValueError, match="one noise level per state"):
        animate_points_2d(trajectory, tmp_path / "x.gif", field=(model, schedule), sigmas=sigmas[1:], frames=4)
    with pytest.raises(ValueError, match="pass field"):
        animate_points_2d(trajectory, tmp_path / "x.gif", sigmas=sigmas, frames=4)
    with pytest.raises(ValueError, match="pass its sigmas"):
        animate_points_2d(torch.randn(60, 5, 2), tmp_path / "x.gif", field=(model, schedule), frames=4)


def test_image_gif_at_default_settings_has_40_frames_under_2_mb(tmp_path):
    trajectory = torch.rand(51, 10, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (steps, B, C, H, W)
    fig = animate_reverse_process(trajectory, tmp_path / "images.gif", ncol=10)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    size = (tmp_path / "images.gif").stat().st_size
    assert 0 < size < MAX_GIF_BYTES, size
    assert _gif_frames(tmp_path / "images.gif") == 40


def test_animation_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="must end in .gif"):
        animate_points_2d(torch.randn(5, 10, 2), tmp_path / "x.mp4", frames=3)
    with pytest.raises(ValueError, match="fps must be >= 1"):
        animate_images(torch.randn(5, 2, 1, 8, 8), tmp_path / "x.gif", frames=3, fps=0)
    with pytest.raises(ValueError, match="trajectory must be"):
        animate_reverse_process(torch.randn(5, 2), tmp_path / "x.gif")


def test_forward_process_strip_has_one_axis_per_time_step_and_writes_a_file(tmp_path):
    images, _ = load_digits_images(train=False)
    schedule = LinearNoiseSchedule.scaled(100)
    fig = plot_forward_process_images(images[:4], schedule, path=tmp_path / "forward.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 6  # default t: 0, T/20, T/10, T/4, T/2, T-1
    assert (tmp_path / "forward.png").stat().st_size > 1000
    fig = plot_forward_process_images(images[:3], schedule, steps=[0, 99])
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="steps must be"):
        plot_forward_process_images(images[:3], schedule, steps=[100])
