"""plot_image_grid / image_mosaic: pixel placement and scaling, grayscale and RGB, labels, clear errors."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from diffusion_playground.visualization import image_mosaic, plot_image_grid


def test_mosaic_places_each_image_in_its_cell_scaled_to_unit_range():
    images = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # (3, 1, 2, 3)
    mosaic = image_mosaic(images, ncol=2, padding=1)  # 2 rows, 2 columns of 2x3 cells
    assert mosaic.shape == (2 * 3 + 1, 2 * 4 + 1, 1)
    assert torch.equal(mosaic[1:3, 1:4, 0], torch.zeros(2, 3)), "value -1 maps to black (0)"
    assert torch.equal(mosaic[1:3, 5:8, 0], torch.full((2, 3), 0.5)), "value 0 maps to mid-grey (0.5)"
    assert torch.equal(mosaic[4:6, 1:4, 0], torch.ones(2, 3)), "value 1 maps to white (1)"
    assert torch.equal(mosaic[4:6, 5:8, 0], torch.ones(2, 3)), "the empty last cell is white"
    assert torch.equal(mosaic[0, :, 0], torch.ones(9)), "padding is white"


def test_mosaic_clips_out_of_range_values_and_keeps_rgb():
    images = torch.tensor([-3.0, 0.0, 3.0]).reshape(1, 3, 1, 1)  # one RGB pixel
    mosaic = image_mosaic(images, ncol=1, padding=0)
    assert torch.equal(mosaic, torch.tensor([[[0.0, 0.5, 1.0]]]))


def test_plot_image_grid_returns_a_figure_with_row_and_column_labels(tmp_path):
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    fig = plot_image_grid(images, 3, row_labels=["a", "b"], col_labels=["t=9", "t=5", "t=0"], title="grid",
                          path=tmp_path / "grid.png")  # fmt: skip
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["t=9", "t=5", "t=0"]
    assert (tmp_path / "grid.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("images", "kwargs", "message"),
    [
        (torch.zeros(2, 2, 4, 4), {}, "C = 1 or 3"),
        (torch.zeros(4, 4), {}, r"\(N, C, H, W\)"),
        (torch.zeros(2, 1, 4, 4), {"row_labels": ["only one", "two", "three"]}, "one label per row"),
        (torch.zeros(2, 1, 4, 4), {"value_range": (1.0, -1.0)}, "high > low"),
    ],
)
def test_bad_arguments_raise_value_errors_that_say_what_was_expected(images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_image_grid(images, 2, **kwargs)
