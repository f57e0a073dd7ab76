"""Figures for 2-D point clouds: data vs samples, the forward process, the reverse trajectory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from diffusion_playground.checks import check_integer
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.diffusion.training_utils import sample_xt
from diffusion_playground.visualization.loss_curve import save_figure

_LIMITS = (-3.0, 3.0)


def _scatter(ax, points: Tensor, title: str, color: str = "tab:blue") -> None:
    _check_points_2d(points)
    points = points.detach().cpu()
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, color=color, linewidths=0)
    _square_axes(ax, title)


def _check_points_2d(points: Tensor, name: str = "points") -> None:
    """These panels show 2-D points: a (N, 2) tensor, not the first two coordinates of something else."""
    if not isinstance(points, Tensor) or points.ndim != 2 or points.shape[1] != 2:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"{name} must be a tensor of 2-D points, shape (N, 2); got {shape} (use torch.as_tensor for numpy)")


def _square_axes(ax, title: str) -> None:
    """The plotted square [-3, 3]^2 without ticks: every 2-D panel shows the same window."""
    ax.set_title(title, fontsize=9)
    ax.set_xlim(*_LIMITS)
    ax.set_ylim(*_LIMITS)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _field_grid(grid_size: int) -> Tensor:
    """The tails of a field's arrows: a grid_size x grid_size grid over the plotted square, (G*G, 2) on the CPU."""
    if grid_size < 2:
        raise ValueError(f"grid_size must be >= 2; got {grid_size}")
    axis = torch.linspace(*_LIMITS, grid_size)
    return torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)


def _denoiser_field(model: nn.Module, noise_schedule: NoiseSchedule) -> Callable[[Tensor, float], Tensor]:
    """``x0_hat(x_t, sigma)``: the model's clean-point prediction at points x_t (CPU, (N, 2)) of noise level sigma.

    The state x_t is the sigma-view state scaled by the process's a = ``noise_schedule.input_scale(sigma)``
    (Karras et al. 2022, eq. 4): sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2) for VP, 1 / (1 + sigma) for rectified
    flow, so x0_hat = D(x_t / a, sigma) with the model seen as a denoiser D (``as_denoiser``: a trained
    wrapper or e.g. an :class:`OptimalDenoiser`). Runs without gradients on the model's device; returns CPU
    tensors. Call it inside :func:`_eval_mode`.
    """
    from diffusion_playground.diffusion.backward import model_device  # the sampling side, imported where it is used
    from diffusion_playground.diffusion.denoiser import as_denoiser

    denoiser = as_denoiser(model, noise_schedule)
    device = model_device(model)

    @torch.no_grad()
    def x0_hat(x_t: Tensor, sigma: float) -> Tensor:
        sigma_tensor = torch.tensor(float(sigma), device=device)
        return denoiser(x_t.to(device) / noise_schedule.input_scale(sigma_tensor), sigma_tensor).cpu()

    return x0_hat


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode inside the block, back to its training flag after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


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
    steps: Sequence[int] | None = None,
    *,
    seed: int = 0,
    path: str | Path | None = None,
) -> Figure:
    """x_t ~ q(x_t | x_0) at several t (default: 0, T/20, T/10, T/4, T/2, T-1): the data dissolving into N(0, I)."""
    T = noise_schedule.T
    steps = sorted({0, T // 20, T // 10, T // 4, T // 2, T - 1}) if steps is None else list(steps)
    steps = [check_integer(f"steps[{i}]", t) for i, t in enumerate(steps)]
    if not steps or min(steps) < 0 or max(steps) >= T:
        raise ValueError(f"steps must be a non-empty list of time steps in [0, {T}); got {steps}")
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
    trajectory: Tensor,
    *,
    num_frames: int = 6,
    num_paths: int = 6,
    time_steps: Sequence[int] | Tensor | None = None,
    path: str | Path | None = None,
) -> Figure:
    """The reverse process from a ``generate_samples(..., return_trajectory=True)`` trajectory.

    Panels 1..num_frames: the cloud x_t from the starting noise (t = T-1 for a full walk) to the final samples,
    at steps spaced quadratically, denser towards the end, where the structure appears. Last panel: ``num_paths``
    individual samples, each in its own colour, from its noise (open circle) to its sample (dot) through the
    states the panels show (a DDPM path's step-to-step jitter would hide where it drifts), over the final samples
    in grey. A deterministic sampler's trajectory (ddim, euler) gives smooth paths.

    ``time_steps``: the trained step t of each state but the last (e.g. ``strided_time_steps(schedule, 50)`` for
    ``steps=50``), for the panel titles; default: every trained step was walked, T-1 down to 0.
    """
    if trajectory.ndim != 3 or trajectory.shape[-1] != 2:
        raise ValueError(f"trajectory must have shape (steps, B, 2); got {tuple(trajectory.shape)}")
    check_integer("num_frames", num_frames, minimum=2)
    check_integer("num_paths", num_paths, minimum=1)
    trajectory = trajectory.detach().cpu()
    last = trajectory.shape[0] - 1  # states 0..last: x_{T-1} (noise) first, the samples last
    steps = list(range(last - 1, -1, -1)) if time_steps is None else [int(t) for t in time_steps]
    if len(steps) != last:
        raise ValueError(f"time_steps must give the t of each of the {last} states before the samples; got {len(steps)}")
    frames = sorted({last - round(last * f) for f in (torch.linspace(1.0, 0.0, num_frames) ** 2).tolist()})
    fig = Figure(figsize=(2.3 * (len(frames) + 1), 2.6), layout="constrained")
    axes = fig.subplots(1, len(frames) + 1)
    for ax, index in zip(axes, frames):
        _scatter(ax, trajectory[index], f"t = {steps[index]}" if index < last else "samples")
    ax = axes[-1]
    _scatter(ax, trajectory[-1], "", "0.85")
    paths = trajectory[frames][:, :num_paths]  # (panels, paths, 2): through the states the panels show
    for k in range(paths.shape[1]):
        color = f"C{k % 10}"
        ax.plot(paths[:, k, 0], paths[:, k, 1], color=color, linewidth=1.0, alpha=0.9)
        ax.scatter(*paths[0, k], s=18, facecolors="none", edgecolors=color, zorder=3)
        ax.scatter(*paths[-1, k], s=14, color=color, zorder=3)
    _square_axes(ax, f"{paths.shape[1]} paths: o noise, • sample")
    if path is not None:
        save_figure(fig, path)
    return fig


@torch.no_grad()
def plot_denoiser_field_2d(
    model: torch.nn.Module,
    noise_schedule: NoiseSchedule,
    time_steps: Sequence[int] | None = None,
    *,
    samples: Tensor | None = None,
    grid_size: int = 17,
    path: str | Path | None = None,
) -> Figure:
    """Where the model pulls each point at a few t: arrows from x_t to the predicted clean point x0_hat(x_t, t).

    x0_hat = E[x0 | x_t] satisfies Tweedie's formula a_t x0_hat = x_t + (1 - a_t^2) grad log q(x_t) with
    a_t = sqrt(alpha_bar_t), so the arrows show the learned score field (plus a shrinkage towards 0 by a_t).
    At large t the arrows point to the data's bulk; at small t onto the moons. (Near t = T-1 an eps-predicting
    network's x0_hat = (x_t - s_t eps_hat) / a_t multiplies its errors by s_t / a_t, about 157 for the linear
    schedule: the default steps stop at T/2.) ``samples`` (optional,
    (steps, B, 2) from ``generate_samples(..., return_trajectory=True)`` on the same schedule) overlays x_t.
    """
    T = noise_schedule.T
    time_steps = sorted({T // 2, T // 5, T // 20, T // 100}, reverse=True) if time_steps is None else list(time_steps)
    time_steps = [check_integer(f"time_steps[{i}]", t) for i, t in enumerate(time_steps)]
    if not time_steps or min(time_steps) < 0 or max(time_steps) >= T:
        raise ValueError(f"time_steps must be a non-empty list of steps in [0, {T}); got {time_steps}")
    x0_hat = _denoiser_field(model, noise_schedule)
    grid = _field_grid(grid_size)  # (G*G, 2)
    fig = Figure(figsize=(2.6 * len(time_steps), 2.8), layout="constrained")
    axes = fig.subplots(1, len(time_steps), squeeze=False)[0]
    with _eval_mode(model):
        for ax, t in zip(axes, time_steps):
            if samples is not None:
                _scatter(ax, samples[samples.shape[0] - 2 - t], "", "tab:gray")
            arrows = x0_hat(grid, noise_schedule.sigmas[t].item()) - grid
            ax.quiver(grid[:, 0], grid[:, 1], arrows[:, 0], arrows[:, 1], color="tab:red", alpha=0.7,
                      angles="xy", scale_units="xy", scale=1.0, width=0.004)  # fmt: skip
            _square_axes(ax, f"t = {t}: x_t -> x0_hat")
    if path is not None:
        save_figure(fig, path)
    return fig
