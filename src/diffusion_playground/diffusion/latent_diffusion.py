"""Latent diffusion (Rombach et al. 2022): encode, diffuse, decode.

A trained autoencoder (models/autoencoder.py) maps images x to latents; scaled to unit variance,
z0 = E(x) * scale_factor, they are a dataset like any other: ``train_denoiser`` learns the diffusion on them (the
paper's eq. 2, the DDPM loss on z instead of x), ``generate_samples`` draws z0, and the decoder returns
x = D(z0 / scale_factor). The diffusion model sees latent_channels x H/4 x W/4 numbers instead of C x H x W pixels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from diffusion_playground.diffusion.backward import generate_samples
from diffusion_playground.diffusion.edm import EDMDiffusion
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.models.autoencoder import ConvAutoencoder
from diffusion_playground.training.denoiser_trainer import TrainingHistory, train_denoiser


@torch.no_grad()
def encode_latents(autoencoder: ConvAutoencoder, images: Tensor, batch_size: int = 256) -> Tensor:
    """z0 = E(x) * scale_factor for every image (the posterior mean: a deterministic dataset), on the CPU."""
    device = autoencoder.scale_factor.device
    latents = [autoencoder.encode(images[i : i + batch_size].to(device)).cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(latents) * float(autoencoder.scale_factor)


@torch.no_grad()
def decode_latents(autoencoder: ConvAutoencoder, latents: Tensor, batch_size: int = 256) -> Tensor:
    """x = D(z0 / scale_factor), on the CPU."""
    device = autoencoder.scale_factor.device
    scale = float(autoencoder.scale_factor)
    return torch.cat([autoencoder.decode(latents[i : i + batch_size].to(device) / scale).cpu()
                      for i in range(0, latents.shape[0], batch_size)])  # fmt: skip


def train_latent_diffusion(
    autoencoder: ConvAutoencoder, model: nn.Module, images: Tensor, noise_schedule: NoiseSchedule | EDMDiffusion,
    **train_kwargs: Any,
) -> TrainingHistory:  # fmt: skip
    """Encode ``images`` with the trained ``autoencoder``, then ``train_denoiser(model, latents, noise_schedule,
    **train_kwargs)`` (labels, epochs, checkpoint_dir, ... as for any dataset). ``model``'s backbone takes
    ``autoencoder.latent_shape`` inputs."""
    autoencoder.eval()
    return train_denoiser(model, encode_latents(autoencoder, images), noise_schedule, **train_kwargs)


@torch.no_grad()
def generate_latent_samples(
    autoencoder: ConvAutoencoder, model: nn.Module, noise_schedule: NoiseSchedule | EDMDiffusion, num_samples: int,
    **sampling: Any,
) -> Tensor:  # fmt: skip
    """Images from latent diffusion: z0 = ``generate_samples(model, noise_schedule, latent_shape, num_samples,
    **sampling)``, then x = D(z0 / scale_factor). Returns (num_samples, *image_shape) on the CPU."""
    if sampling.get("return_trajectory"):
        raise ValueError("generate_latent_samples returns images; for the latent trajectory call generate_samples on the latents")
    latents = generate_samples(model, noise_schedule, autoencoder.latent_shape, num_samples, **sampling)
    return decode_latents(autoencoder, latents)


__all__ = ["decode_latents", "encode_latents", "generate_latent_samples", "train_latent_diffusion"]
