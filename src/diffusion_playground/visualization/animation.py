"""Animated GIFs of the reverse process: 2-D points moving from noise to data, or a grid of images x_t over time.

Both take a ``generate_samples(..., return_trajectory=True)`` trajectory (states x_{T-1}, ..., x_0 stacked on
the first axis), pick ``frames`` of its states (denser towards the end, where the structure appears) and write
them with matplotlib's Pillow writer. Each returns the matplotlib Figure of the last frame.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.figure import Figure
from torch import Tensor
from tqdm.auto import tqdm

from diffusion_playground.visualization.image_grid import image_mosaic
from diffusion_playground.visualization.points_2d import _scatter


def frame_indices(num_states: int, frames: int) -> list[int]:
    """``frames`` strictly increasing state indices in [0, num_states), from the first to the last state.

    index_k = k + round((last - (frames - 1)) * (1 - (1 - u_k)^2)), u_k = k / (frames - 1): the rounded part is
    non-decreasing and k grows by one, so the indices never repeat (Pillow would merge repeated frames), and the
    quadratic makes them denser near the end of sampling.
    """
    if frames < 2:
        raise ValueError(f"frames must be >= 2 (the noise and the samples at least); got {frames}")
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
    frames: int = 40, fps: int = 10, dpi: int = 80, show_progress: bool = False,
) -> Figure:  # fmt: skip
    """A GIF of a 2-D point cloud moving from N(0, I) to the samples; trajectory (steps, B, 2)."""
    if trajectory.ndim != 3 or trajectory.shape[-1] != 2:
        raise ValueError(f"trajectory must have shape (steps, B, 2); got {tuple(trajectory.shape)}")
    trajectory = trajectory[:, :max_points].detach().cpu()  # (steps, B', 2)
    fig = Figure(figsize=(3.6, 3.8), layout="constrained")
    ax = fig.subplots()
    _scatter(ax, trajectory[0], "")
    points = ax.collections[0]
    _write_gif(fig, ax, lambda index: points.set_offsets(trajectory[index].numpy()), trajectory.shape[0],
               frames=frames, fps=fps, path=path, dpi=dpi, show_progress=show_progress)  # fmt: skip
    return fig


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
    ncol = min(ncol, trajectory.shape[1])
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
