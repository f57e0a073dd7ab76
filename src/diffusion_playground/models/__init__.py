"""Backbones, conditioning embeddings, and the wrappers that turn a backbone into a denoiser."""

from diffusion_playground.models.backbones import (
    BaseBackbone,
    MLPBackbone,
    UNetBackbone,
    unet_large,
    unet_mnist,
    unet_mnist_cpu,
    unet_small,
    unet_tiny,
)
from diffusion_playground.models.autoencoder import ConvAutoencoder
from diffusion_playground.models.cond_embedding import ClassEmbedding, TimeEmbedding, sinusoidal_embedding
from diffusion_playground.models.multimodal_model import MultimodalModel
from diffusion_playground.models.time_and_class_conditioned_model import TimeAndClassConditionedModel
from diffusion_playground.models.time_conditioned_model import TimeConditionedModel

# EDMPreconditioner (models/edm_preconditioner.py) is a diffusion.denoiser.Denoiser, and diffusion/ imports this
# package while it loads: import it from diffusion_playground or its own module, not from here.

__all__ = [
    "BaseBackbone",
    "ClassEmbedding",
    "ConvAutoencoder",
    "MLPBackbone",
    "MultimodalModel",
    "TimeAndClassConditionedModel",
    "TimeConditionedModel",
    "TimeEmbedding",
    "UNetBackbone",
    "sinusoidal_embedding",
    "unet_large",
    "unet_mnist",
    "unet_mnist_cpu",
    "unet_small",
    "unet_tiny",
]
