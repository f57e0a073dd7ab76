"""Batch augmentations for the trainer's ``augment=`` argument: (x0 batch, generator) -> batch, on any device."""

from __future__ import annotations

import torch
from torch import Tensor


def random_horizontal_flip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each image of a (B, C, H, W) batch left-right with probability ``p`` (as DDPM does on CIFAR-10).

    The coin flips come from ``generator`` (on the batch's device), so a run resumed from a checkpoint
    flips exactly the images the uninterrupted run would have flipped.
    """
    if x.ndim != 4:
        raise ValueError(f"random_horizontal_flip needs images (B, C, H, W); got shape {tuple(x.shape)}")
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p  # (B,)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
