"""Sample-quality metrics: MMD and sliced W2 for points, and the modes a sample reaches; classifier accuracy and
feature Fréchet distance for images.

The optional true FID (:func:`frechet_inception_distance`) needs torchmetrics with torch-fidelity, imported only
when it is called.
"""

from diffusion_playground.evaluation.classifier import (
    SmallCNN,
    class_accuracy,
    classifier_metrics,
    frechet_distance,
    load_or_train_classifier,
    train_classifier,
)
from diffusion_playground.evaluation.fid import FIDUnavailableError, frechet_inception_distance
from diffusion_playground.evaluation.metrics import (
    median_bandwidth,
    mmd_rbf,
    mode_fractions,
    modes_covered,
    sample_quality,
    sliced_wasserstein,
)
from diffusion_playground.evaluation.spectrum import radial_power_spectrum

__all__ = [
    "FIDUnavailableError",
    "SmallCNN",
    "class_accuracy",
    "classifier_metrics",
    "frechet_distance",
    "frechet_inception_distance",
    "load_or_train_classifier",
    "median_bandwidth",
    "mmd_rbf",
    "radial_power_spectrum",
    "mode_fractions",
    "modes_covered",
    "sample_quality",
    "sliced_wasserstein",
    "train_classifier",
]
