"""The sampler comparison plot: distance to the data and ODE-solver error against the number of network evaluations."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from matplotlib.figure import Figure

from diffusion_playground.visualization.loss_curve import save_figure

# (sampler, NFE) -> (sliced-W2 to the data, MMD^2, RMS distance to a reference solution of the same ODE)
SamplerResults = Mapping[tuple[str, int], tuple[float, float, float]]


def plot_error_vs_nfe(
    results: SamplerResults,
    reference_sliced_wasserstein: float,
    *,
    deterministic: Collection[str] = ("ddim", "euler", "heun", "dpmpp_2m"),
    title: str = "",
    path: str | Path | None = None,
) -> Figure:
    """Left: sliced-W2 to the data vs NFE, with the reference solve's figure dashed. Right (deterministic
    samplers only): RMS distance to the reference solution vs NFE, with slope -1 and -2 guides, so a solver's
    order reads off as its slope on the log-log axes (Euler/DDIM ~1; Heun, DPM-Solver++(2M) ~2)."""
    if not results:
        raise ValueError("no results to plot: pass {(sampler, nfe): (sliced_w2, mmd2, rms_to_reference)}")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_sw, ax_rms = fig.subplots(1, 2)
    samplers = list(dict.fromkeys(name for name, _ in results))
    colors = {name: f"C{i}" for i, name in enumerate(samplers)}  # one colour per sampler in both panels
    for sampler in samplers:
        rows = sorted((nfe, value) for (name, nfe), value in results.items() if name == sampler)
        nfes = [nfe for nfe, _ in rows]
        ax_sw.plot(nfes, [value[0] for _, value in rows], "o-", color=colors[sampler], label=sampler)
        if sampler in deterministic:
            ax_rms.plot(nfes, [value[2] for _, value in rows], "o-", color=colors[sampler], label=sampler)
    ax_sw.axhline(reference_sliced_wasserstein, color="k", ls="--", lw=1, label="reference ODE solve")
    ax_sw.set(xscale="log", yscale="log", xlabel="NFE", ylabel="sliced-W2 to the data", title="distance to the data")
    ax_rms.set(xscale="log", yscale="log", xlabel="NFE", ylabel="RMS distance to the reference",
               title="ODE solver error (same noise)")  # fmt: skip
    all_nfe = [nfe for _, nfe in results]
    low, high = min(all_nfe), max(all_nfe)
    start = max((value[2] for (name, nfe), value in results.items() if name in deterministic and nfe == low), default=1.0)
    for order, style in ((1, ":"), (2, "-.")):
        ax_rms.plot([low, high], [start, start * (high / low) ** -order], "k" + style, lw=1, label=f"slope -{order}")
    for ax in (ax_sw, ax_rms):
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig
