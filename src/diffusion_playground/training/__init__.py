"""The one trainer and its checkpoints."""

from diffusion_playground.training.checkpoint import CheckpointError, load_checkpoint
from diffusion_playground.training.denoiser_trainer import TrainingHistory, train_denoiser

__all__ = ["CheckpointError", "TrainingHistory", "load_checkpoint", "train_denoiser"]
