"""Backbones: networks mapping (x_t, cond_emb) to a tensor of x_t's shape."""

from diffusion_playground.models.backbones.base_backbone import BaseBackbone
from diffusion_playground.models.backbones.mlp import MLPBackbone
from diffusion_playground.models.backbones.unet import (
    UNetBackbone,
    unet_large,
    unet_mnist,
    unet_mnist_cpu,
    unet_small,
    unet_tiny,
)

__all__ = [
    "BaseBackbone",
    "MLPBackbone",
    "UNetBackbone",
    "unet_large",
    "unet_mnist",
    "unet_mnist_cpu",
    "unet_small",
    "unet_tiny",
]
