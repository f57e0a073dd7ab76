"""The one trainer and its checkpoints, and the autoencoder's own short trainer (latent diffusion's first stage)."""

from diffusion_playground.training.autoencoder_trainer import AutoencoderHistory, load_autoencoder, train_autoencoder

from diffusion_playground.training.checkpoint import CheckpointError, load_checkpoint
from diffusion_playground.training.denoiser_trainer import TrainingHistory, train_denoiser

__all__ = [
    "AutoencoderHistory",
    "CheckpointError",
    "TrainingHistory",
    "load_autoencoder",
    "load_checkpoint",
    "train_autoencoder",
    "train_denoiser",
]
