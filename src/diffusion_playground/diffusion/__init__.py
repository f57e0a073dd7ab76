"""The math of diffusion: Gaussian schedules (VP, rectified flow, and EDM's continuous sigma), the forward process,
targets and samplers, inpainting and SDEdit, and categorical (D3PM) diffusion (no nn.Module state)."""

from diffusion_playground.diffusion.backward import SAMPLERS, generate_samples, sample_ddpm, sampler_sigmas
from diffusion_playground.diffusion.categorical import CategoricalDiffusion
from diffusion_playground.diffusion.multimodal import MultimodalDiffusion
from diffusion_playground.diffusion.edm import EDMDiffusion
from diffusion_playground.diffusion.editing import inpaint, sdedit
from diffusion_playground.diffusion.denoiser import NULL_LABEL, Denoiser, ModelDenoiser, TimeViewModel, as_denoiser
from diffusion_playground.diffusion.guidance import ClassifierFreeGuidance
from diffusion_playground.diffusion.likelihood import log_likelihood
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
from diffusion_playground.diffusion.rectified_flow import RectifiedFlow
from diffusion_playground.diffusion.samplers import sample_ddim, sample_dpmpp_2m, sample_euler, sample_heun
from diffusion_playground.diffusion.step_schedules import (
    DEFAULT_SIGMA_MAX,
    karras_sigmas,
    sigma_range,
    step_sigmas,
    strided_time_steps,
    uniform_time_steps,
)
from diffusion_playground.diffusion.training_utils import denoising_loss, loss_weights, q_sample, sample_xt

__all__ = [
    "DEFAULT_SIGMA_MAX",
    "NULL_LABEL",
    "SAMPLERS",
    "CategoricalDiffusion",
    "ClassifierFreeGuidance",
    "CosineNoiseSchedule",
    "Denoiser",
    "EDMDiffusion",
    "LinearNoiseSchedule",
    "ModelDenoiser",
    "MultimodalDiffusion",
    "NoiseSchedule",
    "OptimalDenoiser",
    "RectifiedFlow",
    "TimeViewModel",
    "alpha_bar_from_sigma",
    "as_denoiser",
    "denoising_loss",
    "generate_samples",
    "inpaint",
    "karras_sigmas",
    "log_likelihood",
    "loss_weights",
    "nearest_time_step",
    "q_sample",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_heun",
    "sample_xt",
    "sampler_sigmas",
    "sdedit",
    "schedule_from_config",
    "sigma_from_alpha_bar",
    "sigma_to_t",
    "sigma_range",
    "step_sigmas",
    "strided_time_steps",
    "uniform_time_steps",
]
