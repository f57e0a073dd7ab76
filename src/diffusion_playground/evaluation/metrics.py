"""Sample-quality figures for point clouds: kernel MMD^2, the sliced Wasserstein-2 distance, and the modes a sample
reaches (:func:`modes_covered`, for mixtures such as the eight Gaussians).

The first two compare two samples; both are 0 only when the distributions agree, and both are biased
upward at finite n. :func:`sample_quality` therefore also reports each figure between two
independent real samples of the same size (the "data vs data" floor), and the ratio
generated/floor: 1 means "as close to the data as fresh data is".
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusion_playground.checks import check_integer, check_real

_CHUNK = 2048


def _check_points(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (n >= 2, d); got {shape} (flatten images first)")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_pair(x: Tensor, y: Tensor) -> None:
    """Two point clouds of the same dimension (the metrics compare them point against point)."""
    _check_points("x", x)
    _check_points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension; got x of shape {tuple(x.shape)}, y of {tuple(y.shape)}")


def median_bandwidth(x: Tensor, max_points: int = 2000) -> float:
    """Median pairwise distance of (a subsample of) x, the median heuristic (Gretton et al. 2012, section 8)."""
    _check_points("x", x)
    check_integer("max_points", max_points, minimum=2)
    x = x[:max_points].double()
    distances = torch.cdist(x, x)
    upper = distances[torch.triu(torch.ones_like(distances, dtype=torch.bool), diagonal=1)]
    return float(upper.median())


def _mean_rbf_kernel(x: Tensor, y: Tensor, bandwidth: float) -> float:
    """mean_{i,j} exp(-||x_i - y_j||^2 / (2 h^2)), computed in row chunks to bound memory."""
    total = 0.0
    for start in range(0, x.shape[0], _CHUNK):
        squared = torch.cdist(x[start : start + _CHUNK], y).square()  # (chunk, m)
        total += torch.exp(-squared / (2 * bandwidth**2)).sum().item()
    return total / (x.shape[0] * y.shape[0])


def mmd_rbf(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Squared maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2012, eq. 5, biased V-statistic).

    MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y),  k(a, b) = exp(-||a - b||^2 / (2 h^2)),
    h = the median pairwise distance of y (the reference sample) unless given.
    """
    _check_pair(x, y)
    x, y = x.double(), y.double().to(x.device)
    h = check_real("bandwidth", bandwidth, minimum=0.0, strict=True) if bandwidth is not None else median_bandwidth(y)
    if h == 0.0:
        raise ValueError("the reference sample y has a median pairwise distance of 0 (its points coincide); pass bandwidth=")
    return _mean_rbf_kernel(x, x, h) + _mean_rbf_kernel(y, y, h) - 2 * _mean_rbf_kernel(x, y, h)


def random_directions(dim: int, num_projections: int, generator: torch.Generator | None = None) -> Tensor:
    """num_projections directions uniform on the unit sphere S^{dim-1}, shape (dim, num_projections)."""
    directions = torch.randn(dim, num_projections, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=0, keepdim=True)


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    num_projections: int = 256,
    *,
    generator: torch.Generator | None = None,
    directions: Tensor | None = None,
) -> float:
    """Sliced Wasserstein-2 distance (Rabin et al. 2011; Bonneel et al. 2015).

    SW_2(x, y) = ( E_theta W_2^2(theta^T x, theta^T y) )^{1/2}, theta uniform on the sphere,
    where the 1-D W_2 between two equal-size samples pairs their sorted values.
    The larger sample is subsampled (with ``generator``) when the sizes differ.
    """
    _check_pair(x, y)
    check_integer("num_projections", num_projections, minimum=1)
    x, y = x.double(), y.double().to(x.device)
    n = min(x.shape[0], y.shape[0])
    if x.shape[0] > n:
        x = x[torch.randperm(x.shape[0], generator=generator)[:n]]
    if y.shape[0] > n:
        y = y[torch.randperm(y.shape[0], generator=generator)[:n]]
    if directions is None:
        directions = random_directions(x.shape[1], num_projections, generator)
    if directions.ndim != 2 or directions.shape[0] != x.shape[1]:
        raise ValueError(f"directions must have shape (dim={x.shape[1]}, P); got {tuple(directions.shape)}")
    directions = directions.to(x.device, torch.float64)
    x_sorted = (x @ directions).sort(dim=0).values  # (n, P)
    y_sorted = (y @ directions).sort(dim=0).values  # (n, P)
    return float((x_sorted - y_sorted).square().mean().sqrt())


def sample_quality(
    generated: Tensor, real: Tensor, real_reference: Tensor, num_projections: int = 256, seed: int = 0
) -> dict[str, float]:
    """Sliced-W2 and MMD^2 of ``generated`` vs ``real``, and of ``real_reference`` vs ``real`` (the floor).

    ``real`` and ``real_reference`` are two independent samples of the data, the same size as
    ``generated``. The kernel bandwidth and the projection directions are shared by both comparisons.

    Returns:
        ``sliced_wasserstein``, ``sliced_wasserstein_floor``, ``sliced_wasserstein_ratio``,
        ``mmd2``, ``mmd2_floor``, ``mmd2_ratio``.
    """
    _check_pair(generated, real)
    _check_pair(real_reference, real)
    check_integer("num_projections", num_projections, minimum=1)
    generator = torch.Generator().manual_seed(seed)
    directions = random_directions(real.shape[1], num_projections, generator)
    bandwidth = median_bandwidth(real)
    result = {
        "sliced_wasserstein": sliced_wasserstein(generated, real, generator=generator, directions=directions),
        "sliced_wasserstein_floor": sliced_wasserstein(real_reference, real, generator=generator, directions=directions),
        "mmd2": mmd_rbf(generated, real, bandwidth),
        "mmd2_floor": mmd_rbf(real_reference, real, bandwidth),
    }
    if result["sliced_wasserstein_floor"] == 0.0:
        raise ValueError("real_reference is the same sample as real: the floor is 0; draw an independent second sample")
    result["sliced_wasserstein_ratio"] = result["sliced_wasserstein"] / result["sliced_wasserstein_floor"]
    result["mmd2_ratio"] = result["mmd2"] / result["mmd2_floor"]
    return result


def mode_fractions(samples: Tensor, centres: Tensor, *, radius: float | None = None) -> Tensor:
    """For each centre k, the fraction of ``samples`` whose nearest centre is k and that lie within ``radius`` of it.

    Args:
        samples: (n, d) points, e.g. a model's samples of the eight Gaussians.
        centres: (k, d) mode centres, e.g. :func:`~diffusion_playground.data.toys_2d.eight_gaussians_centres`.
        radius: how close to its nearest centre a sample must be to count; None = a third of the smallest distance
            between two centres (for the eight Gaussians of the default std: 0.36, about 2 of their stds,
            which hold 87% of each Gaussian).

    Returns:
        a (k,) float64 tensor of fractions of all n samples; they sum to at most 1 (samples beyond every radius
        count for no mode).
    """
    _check_points("samples", samples)
    d = samples.shape[1]
    if not isinstance(centres, Tensor) or centres.ndim != 2 or centres.shape[0] < 1 or centres.shape[1] != d:
        shape = tuple(centres.shape) if isinstance(centres, Tensor) else type(centres).__name__
        raise ValueError(f"centres must be a tensor of shape (k >= 1, d={d}); got {shape}")
    if not torch.isfinite(centres).all():
        raise ValueError("centres contains NaN or infinite values")
    centres = centres.double().to(samples.device)
    if radius is None:
        if centres.shape[0] < 2:
            raise ValueError(
                "radius=None takes a third of the smallest distance between centres; with one centre pass radius="
            )
        between = torch.cdist(centres, centres)
        radius = float(between[~torch.eye(centres.shape[0], dtype=torch.bool, device=between.device)].min()) / 3
        if radius == 0.0:
            raise ValueError("two centres coincide, so radius=None would be 0; pass distinct centres or radius=")
    radius = check_real("radius", radius, minimum=0.0, strict=True)
    distances = torch.cdist(samples.double(), centres)  # (n, k)
    nearest_distance, nearest = distances.min(dim=1)
    counts = torch.bincount(nearest[nearest_distance <= radius], minlength=centres.shape[0])
    return counts.double().cpu() / samples.shape[0]


def modes_covered(
    samples: Tensor, centres: Tensor, *, radius: float | None = None, min_fraction: float = 0.01
) -> int:
    """How many of the ``centres`` the samples reach: those with at least ``min_fraction`` of all samples nearest
    to them and within ``radius`` (see :func:`mode_fractions`, which gives the fractions themselves).

    For the eight Gaussians, ``modes_covered(samples, eight_gaussians_centres())`` is 8 when no mode is dropped.
    """
    min_fraction = check_real("min_fraction", min_fraction, minimum=0.0, maximum=1.0, strict=True)
    return int((mode_fractions(samples, centres, radius=radius) >= min_fraction).sum())
