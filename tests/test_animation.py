"""GIFs of the reverse process and the forward-process strip for images: frame counts, sizes, axes."""

from __future__ import annotations

import itertools

import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from diffusion_playground import LinearNoiseSchedule
from diffusion_playground.data import load_digits_images
from diffusion_playground.visualization import (
    animate_images,
    animate_points_2d,
    animate_reverse_process,
    plot_forward_process_images,
)
from diffusion_playground.visualization.animation import frame_indices

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
