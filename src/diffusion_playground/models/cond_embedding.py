"""Conditioning embeddings: the time step t and the class label y turned into vectors for a backbone."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffusion_playground.checks import check_integer


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer positional encoding of the time step (Vaswani et al. 2017, section 3.5; Ho et al. 2020, appendix B).

    emb(t)[i] = sin(t / max_period^(i / half)) for i < half, cos(...) for the second half.
    Returns a (B, dim) float tensor for t of shape (B,).
    """
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None, :]  # (B, half)
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (B, 2*half)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=1)  # (B, dim)
    return embedding


class TimeEmbedding(nn.Module):
    """Sinusoidal encoding of t followed by a 2-layer MLP (Ho et al. 2020; Dhariwal & Nichol 2021).

    t may be an integer step or a continuous value, e.g. EDM's c_noise = ln(sigma) / 4 (edm_preconditioner.py)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"the time embedding dimension must be >= 2; got {dim}")
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        embedding = sinusoidal_embedding(t, self.dim).to(self.mlp[0].weight.dtype)  # float64 for model.double()
        return self.mlp(embedding)  # (B, dim)


class ClassEmbedding(nn.Module):
    """A learned embedding of ``num_classes`` labels plus one extra "null" class (index num_classes).

    The null class is the unconditional model of classifier-free guidance (Ho & Salimans 2022):
    during training each label is replaced by the null class with probability ``cond_drop_prob``,
    so one network learns both p(x | y) and p(x). ``y=None`` means "all null".
    """

    def __init__(self, num_classes: int, dim: int, cond_drop_prob: float = 0.1) -> None:
        super().__init__()
        num_classes = check_integer("num_classes", num_classes, minimum=1)
        if not 0.0 <= cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must lie in [0, 1]; got {cond_drop_prob}")
        self.num_classes = num_classes
        self.cond_drop_prob = cond_drop_prob
        self.embedding = nn.Embedding(num_classes + 1, dim)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(
        self, y: Tensor | None, batch: int, device: torch.device, null_mask: Tensor | None = None
    ) -> Tensor:
        """Embed labels y (B,); rows where ``null_mask`` (B,) is True, or all rows if y is None, get the null class."""
        if y is None:
            y = torch.full((batch,), self.null_class, device=device, dtype=torch.long)
        elif self.training and self.cond_drop_prob > 0:
            drop = torch.rand(y.shape, device=y.device) < self.cond_drop_prob
            null_mask = drop if null_mask is None else null_mask | drop
        if null_mask is not None:
            y = torch.where(null_mask, torch.full_like(y, self.null_class), y)
        return self.embedding(y)  # (B, dim)
