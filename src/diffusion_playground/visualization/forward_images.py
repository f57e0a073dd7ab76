"""The forward process on images: a few images at several t, dissolving into noise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.diffusion.training_utils import sample_xt
from diffusion_playground.visualization.image_grid import image_mosaic
from diffusion_playground.visualization.loss_curve import save_figure


def plot_forward_process_images(
    images: Tensor,
    noise_schedule: NoiseSchedule,
    steps: Sequence[int] | None = None,
    *,
    seed: int = 0,
    cell_inches: float = 0.6,
    path: str | Path | None = None,
) -> Figure:
    """x_t ~ q(x_t | x_0) (Ho et al. 2020, eq. 4) for each of ``images`` (N, C, H, W) in [-1, 1]: one column per t
    (default: 0, T/20, T/10, T/4, T/2, T-1), the same images down each column; one axis per t."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C = 1 or 3; got {tuple(images.shape)}")
    T = noise_schedule.T
    steps = sorted({0, T // 20, T // 10, T // 4, T // 2, T - 1}) if steps is None else list(steps)
    if not steps or min(steps) < 0 or max(steps) >= T:
        raise ValueError(f"steps must be a non-empty list of time steps in [0, {T}); got {steps}")
    images = images.detach().cpu().float()
    N = images.shape[0]
    fig = Figure(figsize=(len(steps) * max(cell_inches + 0.3, 1.1), N * cell_inches + 0.7), layout="constrained")
    axes = fig.subplots(1, len(steps), squeeze=False)[0]
    generator = torch.Generator().manual_seed(seed)
    for ax, t in zip(axes, steps):
        x_t, _, _ = sample_xt(images, noise_schedule, t, generator=generator)  # (N, C, H, W)
        column = image_mosaic(x_t, 1).numpy()  # (rows, cols, C) in [0, 1]
        ax.imshow(column[..., 0] if column.shape[-1] == 1 else column, cmap="gray", vmin=0.0, vmax=1.0,
                  interpolation="nearest")  # fmt: skip
        ax.set_title(f"t = {t}\n$\\bar\\alpha_t$ = {noise_schedule.alpha_bars[t].item():.2f}", fontsize=8)
        ax.set_axis_off()
    if path is not None:
        save_figure(fig, path)
    return fig


__all__ = ["plot_forward_process_images"]
