"""The math of Gaussian diffusion: schedules, the forward process, targets and samplers (no nn.Module state)."""

from diffusion_playground.diffusion.backward import SAMPLERS, generate_samples, sample_ddpm
from diffusion_playground.diffusion.denoiser import NULL_LABEL, Denoiser, ModelDenoiser, TimeViewModel, as_denoiser
from diffusion_playground.diffusion.guidance import ClassifierFreeGuidance
from diffusion_playground.diffusion.noise_schedule import (
    CosineNoiseSchedule,
    LinearNoiseSchedule,
    NoiseSchedule,
    alpha_bar_from_sigma,
    nearest_time_step,
    schedule_from_config,
    sigma_from_alpha_bar,
    sigma_to_t,
)
from diffusion_playground.diffusion.optimal_denoiser import OptimalDenoiser
from diffusion_playground.diffusion.samplers import sample_ddim, sample_dpmpp_2m, sample_euler, sample_heun
from diffusion_playground.diffusion.step_schedules import karras_sigmas, step_sigmas, uniform_time_steps
from diffusion_playground.diffusion.training_utils import denoising_loss, loss_weights, q_sample, sample_xt

__all__ = [
    "NULL_LABEL",
    "SAMPLERS",
    "ClassifierFreeGuidance",
    "CosineNoiseSchedule",
    "Denoiser",
    "LinearNoiseSchedule",
    "ModelDenoiser",
    "NoiseSchedule",
    "OptimalDenoiser",
    "TimeViewModel",
    "alpha_bar_from_sigma",
    "as_denoiser",
    "denoising_loss",
    "generate_samples",
    "karras_sigmas",
    "loss_weights",
    "nearest_time_step",
    "q_sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_heun",
    "sample_xt",
    "schedule_from_config",
    "sigma_from_alpha_bar",
    "sigma_to_t",
    "step_sigmas",
    "uniform_time_steps",
]
