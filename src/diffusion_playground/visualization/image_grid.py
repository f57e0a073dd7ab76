"""A grid of images (samples per class, frames of a trajectory) drawn as one mosaic."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from diffusion_playground.checks import check_integer, check_real
from diffusion_playground.visualization.loss_curve import save_figure


def image_mosaic(
    images: Tensor, ncol: int, *, padding: int = 1, value_range: tuple[float, float] = (-1.0, 1.0)
) -> Tensor:
    """Tile (N, C, H, W) images row by row into one (rows * (H + p) + p, ncol * (W + p) + p, C) array in [0, 1].

    Values are mapped from ``value_range`` to [0, 1] and clipped; the padding (and any empty cell of the
    last row) is white.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, C, H, W) with N >= 1 and C = 1 or 3; got {shape}")
    ncol = check_integer("ncol", ncol, minimum=1)
    padding = check_integer("padding", padding, minimum=0)
    low, high = value_range
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low; got {value_range}")
    N, C, H, W = images.shape
    nrow = -(-N // ncol)
    scaled = ((images.detach().float().cpu() - low) / (high - low)).clamp(0.0, 1.0)  # (N, C, H, W)
    mosaic = torch.ones(C, nrow * (H + padding) + padding, ncol * (W + padding) + padding)
    for i in range(N):
        row, col = divmod(i, ncol)
        top, left = padding + row * (H + padding), padding + col * (W + padding)
        mosaic[:, top : top + H, left : left + W] = scaled[i]
    return mosaic.permute(1, 2, 0)  # (rows, cols, C)


def plot_image_grid(
    images: Tensor,
    ncol: int,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    cell_inches: float = 0.5,
    path: str | Path | None = None,
) -> Figure:
    """Images (N, C, H, W) in ``value_range`` (default [-1, 1], the package's image range) as a grid of
    ``ncol`` columns, filled row by row; grayscale for C = 1, RGB for C = 3. Optional labels name each row
    (e.g. the class) and column (e.g. the time step); saved to ``path`` if given.
    """
    mosaic = image_mosaic(images, ncol, value_range=value_range)  # (rows, cols, C) in [0, 1]
    check_real("cell_inches", cell_inches, minimum=0.0, strict=True)
    nrow = -(-images.shape[0] // ncol)
    for name, labels, expected in (("row_labels", row_labels, nrow), ("col_labels", col_labels, ncol)):
        if labels is not None and len(labels) != expected:
            raise ValueError(f"{name} must hold one label per {name[:3]} ({expected}); got {len(labels)}")
    fig = Figure(figsize=(ncol * cell_inches + 0.6, nrow * cell_inches + 0.6), layout="constrained")
    ax = fig.subplots()
    if mosaic.shape[-1] == 1:
        ax.imshow(mosaic[..., 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(mosaic.numpy(), interpolation="nearest")
    H, W = images.shape[-2:]
    ax.set_yticks([1 + r * (H + 1) + (H - 1) / 2 for r in range(nrow)] if row_labels is not None else [])
    ax.set_xticks([1 + c * (W + 1) + (W - 1) / 2 for c in range(ncol)] if col_labels is not None else [])
    if row_labels is not None:
        ax.set_yticklabels(row_labels)
    if col_labels is not None:
        ax.set_xticklabels(col_labels, rotation=90 if max(len(s) for s in col_labels) > 3 else 0)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title is not None:
        ax.set_title(title)
    if path is not None:
        save_figure(fig, path)
    return fig


__all__ = ["image_mosaic", "plot_image_grid"]
