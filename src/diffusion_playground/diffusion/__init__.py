"""The math of Gaussian diffusion: schedules, the forward process, targets and samplers (no nn.Module state)."""

from diffusion_playground.diffusion.backward import generate_samples, sample_ddpm
from diffusion_playground.diffusion.noise_schedule import (
    CosineNoiseSchedule,
    LinearNoiseSchedule,
    NoiseSchedule,
    schedule_from_config,
)
from diffusion_playground.diffusion.training_utils import denoising_loss, loss_weights, q_sample, sample_xt

__all__ = [
    "CosineNoiseSchedule",
    "LinearNoiseSchedule",
    "NoiseSchedule",
    "denoising_loss",
    "generate_samples",
    "loss_weights",
    "q_sample",
    "sample_ddpm",
    "sample_xt",
    "schedule_from_config",
]
