"""Animated GIFs of the reverse process: 2-D points moving from noise to data, or a grid of images x_t over time.

Both take a ``generate_samples(..., return_trajectory=True)`` trajectory (states from the starting noise to x_0
stacked on the first axis; the start is x_{T-1} with ``steps=None``, else the grid's first level, sigma_max),
pick ``frames`` of its states (denser towards the end, where the structure appears) and write them with
matplotlib's Pillow writer. Each returns the matplotlib Figure of the last frame. Given the model, the
2-D animation also draws its learned score field under the moving points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffusion_playground.checks import check_integer
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule, nearest_time_step
from diffusion_playground.diffusion.step_schedules import step_sigmas
from diffusion_playground.visualization.image_grid import image_mosaic
from diffusion_playground.visualization.points_2d import _denoiser_field, _eval_mode, _field_grid, _scatter


def frame_indices(num_states: int, frames: int) -> list[int]:
    """``frames`` strictly increasing state indices in [0, num_states), from the first to the last state.

    index_k = k + round((last - (frames - 1)) * (1 - (1 - u_k)^2)), u_k = k / (frames - 1): the rounded part is
    non-decreasing and k grows by one, so the indices never repeat (Pillow would merge repeated frames), and the
    quadratic makes them denser near the end of sampling.
    """
    check_integer("frames (at least the noise and the samples)", frames, minimum=2)
    if frames > num_states:
        raise ValueError(
            f"frames={frames} is more than the trajectory's {num_states} states; sample with more steps or ask for fewer frames"
        )
    spare = num_states - frames  # the indices' room beyond one state per frame
    return [k + round(spare * (1 - (1 - k / (frames - 1)) ** 2)) for k in range(frames)]


def _step_label(index: int, last: int) -> str:
    return "samples" if index == last else f"step {index} of {last}"


def _write_gif(
    fig: Figure, ax, show: Callable[[int], None], num_states: int, *, frames: int, fps: int, path: str | Path, dpi: int,
    show_progress: bool,
) -> Path:  # fmt: skip
    """For ``frames`` state indices, call ``show(index)``, title ``ax`` with the step, and save the frames as a GIF."""
    if fps < 1:
        raise ValueError(f"fps must be >= 1; got {fps}")
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"the animation is written as a GIF; path must end in .gif, got {path}")
    indices, last = frame_indices(num_states, frames), num_states - 1

    def draw(frame: int) -> None:
        show(indices[frame])
        ax.set_title(_step_label(indices[frame], last), fontsize=9)

    draw(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    animation = FuncAnimation(fig, draw, frames=len(indices), blit=False, repeat=False)
    with tqdm(total=len(indices), desc="writing GIF", disable=not show_progress, leave=False) as bar:
        animation.save(path, writer=PillowWriter(fps=fps), dpi=dpi, progress_callback=lambda i, n: bar.update(1))
    return path


def animate_points_2d(
    trajectory: Tensor,
    path: str | Path,
    *,
    max_points: int = 2000,
    field: tuple[nn.Module, NoiseSchedule] | None = None,
    sigmas: Tensor | Sequence[float] | None = None,
    grid_size: int = 15,
    frames: int = 40, fps: int = 10, dpi: int = 80, show_progress: bool = False,
) -> Figure:  # fmt: skip
    """A GIF of a 2-D point cloud moving from N(0, I) to the samples; trajectory (steps, B, 2).

    ``field=(model, noise_schedule)``, the model (or denoiser) and schedule that drew the trajectory, adds under
    the points of each frame the model's pull on a ``grid_size`` x ``grid_size`` grid at that state's noise level
    sigma: arrows from x to a x0_hat(x, sigma), a = sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2). With x = a x0_hat +
    s eps_hat, s = sqrt(1 - a^2), and Tweedie's formula grad log q(x) = -eps_hat / s (Efron 2011; moons README,
    the targets table), a x0_hat - x = -s eps_hat = (1 - a^2) grad log q(x): the learned score times the noise
    variance. The arrows point to the origin in the first frames (the score of N(0, I) is -x) and onto the moons
    in the last, and stay finite at the noisiest states, where x0_hat alone multiplies an eps-network's error by
    s / a (:func:`plot_denoiser_field_2d` draws x -> x0_hat at chosen t). Arrows longer than 0.9 grid spacings
    are drawn 0.9 spacings long (same direction), so they never cross the next arrow.

    ``sigmas`` gives each state's noise level (``steps`` values from the first state's to 0 for the samples). Default: the
    evenly spaced trained steps of ``step_sigmas(noise_schedule, steps - 1)``; otherwise pass the grid the sampler
    walked, ``sampler_sigmas(model, noise_schedule, sampler, N, ...)`` with the arguments given to
    ``generate_samples`` (a grid snapped to the trained levels may have fewer than N steps). The samples' field (sigma = 0) is drawn at sigma_0, the smallest trained level.
    """
    if trajectory.ndim != 3 or trajectory.shape[-1] != 2:
        raise ValueError(f"trajectory must have shape (steps, B, 2); got {tuple(trajectory.shape)}")
    if field is None and sigmas is not None:
        raise ValueError("sigmas place the field's arrows in time; pass field=(model, noise_schedule) with them")
    trajectory = trajectory[:, :max_points].detach().cpu()  # (steps, B', 2)
    fig = Figure(figsize=(3.6, 3.8), layout="constrained")
    ax = fig.subplots()
    _scatter(ax, trajectory[0], "")
    points = ax.collections[0]
    if field is None:
        _write_gif(fig, ax, lambda index: points.set_offsets(trajectory[index].numpy()), trajectory.shape[0],
                   frames=frames, fps=fps, path=path, dpi=dpi, show_progress=show_progress)  # fmt: skip
        return fig
    model, noise_schedule = field
    levels = _state_sigmas(noise_schedule, sigmas, trajectory.shape[0]).clamp(min=noise_schedule.sigma_min)
    time_steps = nearest_time_step(noise_schedule, levels).tolist()  # for the label only
    x0_hat, grid = _denoiser_field(model, noise_schedule), _field_grid(grid_size)  # grid (G*G, 2)
    max_length = 0.9 * (grid[1, 0] - grid[0, 0]).item()  # 0.9 grid spacings
    arrows = ax.quiver(grid[:, 0], grid[:, 1], torch.zeros(len(grid)), torch.zeros(len(grid)), color="tab:red",
                       alpha=0.6, angles="xy", scale_units="xy", scale=1.0, width=0.004, zorder=0.5)  # fmt: skip
    label = ax.text(0.02, 0.02, "", transform=ax.transAxes, fontsize=7, color="tab:red")

    def show(index: int) -> None:
        points.set_offsets(trajectory[index].numpy())
        sigma = levels[index].item()
        pull = noise_schedule.input_scale(torch.tensor(sigma)) * x0_hat(grid, sigma) - grid  # a x0_hat - x_t = s^2 score (Tweedie)
        pull = pull * (max_length / pull.norm(dim=1, keepdim=True).clamp(min=max_length))  # cap the length
        arrows.set_UVC(pull[:, 0], pull[:, 1])
        label.set_text(f"arrows: t = {time_steps[index]}")

    with _eval_mode(model):
        _write_gif(fig, ax, show, trajectory.shape[0], frames=frames, fps=fps, path=path, dpi=dpi,
                   show_progress=show_progress)  # fmt: skip
    return fig


def _state_sigmas(noise_schedule: NoiseSchedule, sigmas: Tensor | Sequence[float] | None, num_states: int) -> Tensor:
    """The noise level of each of a trajectory's ``num_states`` states, (num_states,) float32 on the CPU."""
    if sigmas is None:
        if not 2 <= num_states <= noise_schedule.T + 1:
            raise ValueError(
                f"a trajectory of {num_states} states is not an evenly spaced walk on this schedule's "
                f"T={noise_schedule.T} steps; pass its sigmas (e.g. step_sigmas(noise_schedule, N, step_schedule) "
                "with the N and step_schedule given to generate_samples)"
            )
        return step_sigmas(noise_schedule, num_states - 1, "uniform").float()
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).cpu()
    if sigmas.shape != (num_states,):
        raise ValueError(
            f"sigmas must hold one noise level per state of the trajectory ({num_states}); got shape {tuple(sigmas.shape)}"
        )
    return sigmas


def animate_images(
    trajectory: Tensor,
    path: str | Path,
    *,
    ncol: int = 8,
    value_range: tuple[float, float] = (-1.0, 1.0),
    cell_inches: float = 0.45,
    frames: int = 40, fps: int = 10, dpi: int = 80, show_progress: bool = False,
) -> Figure:  # fmt: skip
    """A GIF of a grid of images x_t from noise to samples; trajectory (steps, B, C, H, W), C = 1 or 3."""
    if trajectory.ndim != 5 or trajectory.shape[2] not in (1, 3):
        raise ValueError(f"trajectory must have shape (steps, B, C, H, W) with C = 1 or 3; got {tuple(trajectory.shape)}")
    trajectory = trajectory.detach().cpu()
    ncol = min(check_integer("ncol", ncol, minimum=1), trajectory.shape[1])
    nrow = -(-trajectory.shape[1] // ncol)

    def mosaic(index: int):
        tiles = image_mosaic(trajectory[index], ncol, value_range=value_range)  # (rows, cols, C) in [0, 1]
        return tiles[..., 0].numpy() if tiles.shape[-1] == 1 else tiles.numpy()

    fig = Figure(figsize=(ncol * cell_inches + 0.4, nrow * cell_inches + 0.6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(mosaic(0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    _write_gif(fig, ax, lambda index: image.set_data(mosaic(index)), trajectory.shape[0],
               frames=frames, fps=fps, path=path, dpi=dpi, show_progress=show_progress)  # fmt: skip
    return fig


def animate_reverse_process(trajectory: Tensor, path: str | Path, **options: object) -> Figure:
    """:func:`animate_points_2d` for (steps, B, 2) trajectories, :func:`animate_images` for (steps, B, C, H, W)."""
    if trajectory.ndim == 3:
        return animate_points_2d(trajectory, path, **options)
    if trajectory.ndim == 5:
        return animate_images(trajectory, path, **options)
    raise ValueError(
        f"trajectory must be (steps, B, 2) points or (steps, B, C, H, W) images; got shape {tuple(trajectory.shape)}"
    )


__all__ = ["animate_images", "animate_points_2d", "animate_reverse_process", "frame_indices"]
