"""The denoiser-field figure and the sampler error-vs-NFE figure."""

from __future__ import annotations

import pytest
import torch

from diffusion_playground import LinearNoiseSchedule, OptimalDenoiser, generate_samples
from diffusion_playground.visualization import plot_denoiser_field_2d, plot_error_vs_nfe

from conftest import tiny_model


def test_denoiser_field_arrows_point_at_the_predicted_clean_points(tmp_path):
    schedule = LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)
    point = torch.tensor([[1.0, -0.5]])
    fig = plot_denoiser_field_2d(OptimalDenoiser(point), schedule, [49, 0], grid_size=5, path=tmp_path / "field.png")
    assert len(fig.axes) == 2 and (tmp_path / "field.png").stat().st_size > 1000
    quiver = fig.axes[1].collections[0]  # t = 0: every arrow ends on the one data point
    tails = torch.as_tensor(quiver.get_offsets())
    heads = tails + torch.stack([torch.as_tensor(quiver.U), torch.as_tensor(quiver.V)], dim=1)
    assert torch.allclose(heads.float(), point.expand_as(heads), atol=1e-4)
    model = tiny_model(schedule.T)
    _, trajectory = generate_samples(model, schedule, (2,), 8, return_trajectory=True)
    assert len(plot_denoiser_field_2d(model, schedule, samples=trajectory).axes) == 4  # default t: T/2, T/5, T/20, T/100
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        plot_denoiser_field_2d(model, schedule, [50])


def test_error_vs_nfe_plot_has_one_line_per_sampler_and_order_guides(tmp_path):
    results = {(name, nfe): (0.1 / nfe, 1e-3, 1.0 / nfe**order) for name, order in (("ddpm", 1), ("ddim", 1), ("heun", 2))
               for nfe in (5, 10, 20)}  # fmt: skip
    fig = plot_error_vs_nfe(results, 0.004, path=tmp_path / "nfe.png")
    ax_sw, ax_rms = fig.axes
    assert len(ax_sw.get_lines()) == 3 + 1  # samplers + the reference line
    assert len(ax_rms.get_lines()) == 2 + 2  # deterministic samplers + slope guides
    assert (tmp_path / "nfe.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no results"):
        plot_error_vs_nfe({}, 0.1)
