"""Sample-quality metrics: MMD and sliced W2 for points; classifier accuracy and feature Fréchet distance for images."""

from diffusion_playground.evaluation.classifier import (
    SmallCNN,
    class_accuracy,
    classifier_metrics,
    frechet_distance,
    load_or_train_classifier,
    train_classifier,
)
from diffusion_playground.evaluation.metrics import median_bandwidth, mmd_rbf, sample_quality, sliced_wasserstein

__all__ = [
    "SmallCNN",
    "class_accuracy",
    "classifier_metrics",
    "frechet_distance",
    "load_or_train_classifier",
    "median_bandwidth",
    "mmd_rbf",
    "sample_quality",
    "sliced_wasserstein",
    "train_classifier",
]
