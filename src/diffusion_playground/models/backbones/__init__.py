"""Backbones: networks mapping (x_t, cond_emb) to a tensor of x_t's shape."""

from diffusion_playground.models.backbones.base_backbone import BaseBackbone
from diffusion_playground.models.backbones.mlp import MLPBackbone

__all__ = ["BaseBackbone", "MLPBackbone"]
