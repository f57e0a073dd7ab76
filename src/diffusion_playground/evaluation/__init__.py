"""Sample-quality metrics."""

from diffusion_playground.evaluation.metrics import median_bandwidth, mmd_rbf, sample_quality, sliced_wasserstein

__all__ = ["median_bandwidth", "mmd_rbf", "sample_quality", "sliced_wasserstein"]
