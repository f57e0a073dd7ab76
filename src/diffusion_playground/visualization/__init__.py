"""Figures (matplotlib Figure objects; nothing is shown or kept in global state)."""

from diffusion_playground.visualization.animation import animate_images, animate_points_2d, animate_reverse_process
from diffusion_playground.visualization.forward_images import plot_forward_process_images
from diffusion_playground.visualization.image_grid import image_mosaic, plot_image_grid
from diffusion_playground.visualization.loss_curve import plot_loss_curve, save_figure
from diffusion_playground.visualization.points_2d import (
    plot_denoiser_field_2d,
    plot_forward_process_2d,
    plot_samples_2d,
    plot_trajectory_2d,
)
from diffusion_playground.visualization.sampler_error import plot_error_vs_nfe

__all__ = [
    "animate_images",
    "animate_points_2d",
    "animate_reverse_process",
    "image_mosaic",
    "plot_denoiser_field_2d",
    "plot_error_vs_nfe",
    "plot_forward_process_2d",
    "plot_forward_process_images",
    "plot_image_grid",
    "plot_loss_curve",
    "plot_samples_2d",
    "plot_trajectory_2d",
    "save_figure",
]
