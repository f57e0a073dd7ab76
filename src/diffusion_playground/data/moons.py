"""Two interleaving half circles ("moons") from scikit-learn, standardised: the 2-D toy dataset."""

from __future__ import annotations

from functools import lru_cache

import torch
from sklearn.datasets import make_moons
from torch import Tensor

_REFERENCE_SIZE = 200_000


@lru_cache(maxsize=8)
def _moons_statistics(noise: float) -> tuple[Tensor, Tensor]:
    """Mean and std of the moons distribution, estimated once on a large fixed sample, so every
    call (training data, fresh evaluation samples) uses the same affine map."""
    points, _ = make_moons(n_samples=_REFERENCE_SIZE, noise=noise, random_state=12345)
    points = torch.as_tensor(points, dtype=torch.float32)
    return points.mean(dim=0), points.std(dim=0)


def load_moons(
    n_samples: int = 8000, *, noise: float = 0.05, seed: int = 0, return_labels: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """``n_samples`` points of sklearn's ``make_moons``, standardised to zero mean and unit variance per axis.

    Args:
        n_samples: number of points.
        noise: std of the Gaussian noise sklearn adds to the points (before standardisation).
        seed: sklearn's random_state; different seeds give independent samples of the same distribution.
        return_labels: also return which moon (0 or 1) each point belongs to.

    Returns:
        a float32 tensor of shape (n_samples, 2), and the (n_samples,) int64 labels if asked.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1; got {n_samples}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise}")
    points, moon = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    mean, std = _moons_statistics(noise)
    points = (torch.as_tensor(points, dtype=torch.float32) - mean) / std  # (N, 2)
    if return_labels:
        return points, torch.as_tensor(moon, dtype=torch.long)
    return points
