"""The training loss curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure


def ema_smooth(values: Sequence[float], smoothing: float) -> list[float]:
    """Bias-corrected exponential moving average s_k = (1 - b) sum_j b^(k-j) v_j / (1 - b^(k+1)), b = smoothing."""
    smoothed, running = [], 0.0
    for k, value in enumerate(values):
        running = smoothing * running + (1.0 - smoothing) * value
        smoothed.append(running / (1.0 - smoothing ** (k + 1)))
    return smoothed


def plot_loss_curve(losses: Sequence[float], *, smoothing: float = 0.98, path: str | Path | None = None) -> Figure:
    """Per-step losses (faint) and their EMA-smoothed line, log-scaled; saved to ``path`` if given."""
    if len(losses) == 0:
        raise ValueError("no losses to plot: train for at least one step first")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1); got {smoothing}")
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    steps = range(1, len(losses) + 1)
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss per step")
    ax.plot(steps, ema_smooth(losses, smoothing), color="tab:blue", linewidth=1.8, label=f"EMA ({smoothing})")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("denoising loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (parent folders created), return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
