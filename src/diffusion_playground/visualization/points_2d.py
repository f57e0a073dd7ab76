"""Figures for 2-D point clouds: data vs samples, the forward process, the reverse trajectory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.diffusion.training_utils import sample_xt
from diffusion_playground.visualization.loss_curve import save_figure

_LIMITS = (-3.0, 3.0)


def _scatter(ax, points: Tensor, title: str, color: str = "tab:blue") -> None:
    points = points.detach().cpu()
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, color=color, linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(*_LIMITS)
    ax.set_ylim(*_LIMITS)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_samples_2d(
    generated: Tensor, real: Tensor, *, title: str = "", path: str | Path | None = None
) -> Figure:
    """Real data and generated samples side by side."""
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax_real, ax_gen = fig.subplots(1, 2)
    _scatter(ax_real, real, f"data ({real.shape[0]} points)", "tab:gray")
    _scatter(ax_gen, generated, f"generated ({generated.shape[0]} samples)", "tab:blue")
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_forward_process_2d(
    x0: Tensor,
    noise_schedule: NoiseSchedule,
    steps: Sequence[int] = (0, 50, 100, 250, 500, 999),
    *,
    seed: int = 0,
    path: str | Path | None = None,
) -> Figure:
    """x_t ~ q(x_t | x_0) at several t: the data dissolving into N(0, I)."""
    steps = [t for t in steps if 0 <= t < noise_schedule.T]
    fig = Figure(figsize=(2.2 * len(steps), 2.4), layout="constrained")
    axes = fig.subplots(1, len(steps), squeeze=False)[0]
    generator = torch.Generator(device=x0.device).manual_seed(seed)
    for ax, t in zip(axes, steps):
        x_t, _, _ = sample_xt(x0, noise_schedule, t, generator=generator)
        _scatter(ax, x_t, f"t = {t}, alpha_bar = {noise_schedule.alpha_bars[t].item():.3f}")
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_trajectory_2d(
    trajectory: Tensor, *, num_frames: int = 6, num_paths: int = 40, path: str | Path | None = None
) -> Figure:
    """The reverse process from a ``generate_samples(..., return_trajectory=True)`` trajectory.

    Top row: the cloud x_t at ``num_frames`` times from t = T-1 (noise) to t = 0 (samples).
    Bottom: the paths of ``num_paths`` individual samples from noise (light) to data (dark).
    """
    if trajectory.ndim != 3 or trajectory.shape[-1] != 2:
        raise ValueError(f"trajectory must have shape (steps, B, 2); got {tuple(trajectory.shape)}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2; got {num_frames}")
    trajectory = trajectory.detach().cpu()
    num_steps = trajectory.shape[0]  # T + 1 states: x_{T-1} noise first, x_0 last
    frames = torch.linspace(0, num_steps - 1, num_frames).round().long().tolist()
    fig = Figure(figsize=(2.2 * num_frames, 2.4 + 4.4), layout="constrained")
    grid = fig.add_gridspec(2, num_frames, height_ratios=[1, 2])
    for column, index in enumerate(frames):
        _scatter(fig.add_subplot(grid[0, column]), trajectory[index], f"t = {num_steps - 2 - index}" if index < num_steps - 1 else "x_0")
    ax = fig.add_subplot(grid[1, :])
    paths = trajectory[:, :num_paths]  # (steps, paths, 2)
    for k in range(paths.shape[1]):
        ax.plot(paths[:, k, 0], paths[:, k, 1], color="tab:blue", alpha=0.35, linewidth=0.7)
    ax.scatter(paths[0, :, 0], paths[0, :, 1], s=10, color="tab:gray", label="start x_{T-1} (noise)")
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=10, color="tab:red", label="end x_0 (sample)")
    ax.set_aspect("equal")
    ax.set_xlim(*_LIMITS)
    ax.set_ylim(*_LIMITS)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("reverse-diffusion paths of individual samples", fontsize=9)
    if path is not None:
        save_figure(fig, path)
    return fig
