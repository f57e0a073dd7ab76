"""Image-sample figures from a small CNN classifier: class accuracy and a classifier-feature Fréchet distance.

The classifier is trained on the real training images of one dataset and cached as a checkpoint. Two figures:

* class accuracy: how often the classifier assigns a class-conditional sample to the class it was drawn for;
  compare with its accuracy on real held-out images (:func:`class_accuracy` on the test split).
* classifier-feature Fréchet distance: the Fréchet (Wasserstein-2) distance between Gaussians fitted to the
  penultimate-layer features of real and generated images (the formula of FID, Heusel et al. 2017, eq. 6):
  d^2 = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r^{1/2} S_g S_r^{1/2})^{1/2}).

These numbers are comparable only within this package (same classifier architecture, training recipe and
dataset): the features are not Inception-v3's, so they are *not* FID values and cannot be compared with
published FIDs. Like FID they are biased upward at finite n; compare runs at the same number of samples and
report the real-test-vs-real-train distance as the floor.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffusion_playground.atomic_files import ensure_writable_folder
from diffusion_playground.training.checkpoint import CheckpointError, load_verified, save_checkpoint_atomic

_CACHE_FORMAT = 1


class SmallCNN(nn.Module):
    """Two conv blocks, global average pooling, a ``feature_dim`` layer (the features) and a linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "width": width, "feature_dim": feature_dim}
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 2 * width)
            nn.Linear(2 * width, feature_dim), nn.SiLU(),  # (B, feature_dim): the penultimate features
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)  # (B, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, num_classes) logits


def train_classifier(
    images: Tensor, labels: Tensor, num_classes: int, *, epochs: int = 15, batch_size: int = 128, lr: float = 3e-3,
    seed: int = 0, device: str | torch.device = "cpu", show_progress: bool = False,
) -> SmallCNN:  # fmt: skip
    """Train :class:`SmallCNN` with AdamW and cross-entropy on (N, C, H, W) images in [-1, 1]; returns it in eval mode."""
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError(f"need images (N, C, H, W) and labels (N,); got {tuple(images.shape)} and {tuple(labels.shape)}")
    torch.manual_seed(seed)
    model = SmallCNN(images.shape[1], num_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc="training the classifier", disable=not show_progress, leave=False):
        order = torch.randperm(images.shape[0], generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(images[index].to(device)), labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def load_or_train_classifier(
    cache_path: str | Path, images: Tensor, labels: Tensor, num_classes: int, *, device: str | torch.device = "cpu",
    **training: object,
) -> SmallCNN:  # fmt: skip
    """The classifier cached at ``cache_path``, or one trained on (images, labels) and saved there."""
    cache_path = Path(cache_path)
    if cache_path.exists():
        state = _read_cache(cache_path)  # refuses a file that is not a classifier cache: it is never overwritten
        if state["config"]["in_channels"] == images.shape[1]:
            model = SmallCNN(**state["config"])
            model.load_state_dict(state["weights"])
            return model.to(device).eval()
    else:
        ensure_writable_folder(cache_path.parent, "the classifier cache's folder")  # before training, not after
    model = train_classifier(images, labels, num_classes, device=device, **training)
    save_checkpoint_atomic({"format": _CACHE_FORMAT, "config": model.config, "weights": model.state_dict()}, cache_path)
    return model


def _read_cache(path: Path) -> dict:
    """The cached classifier's state, or a ValueError for a file that is not a readable cache: a checkpoint or any
    other file passed by mistake is never overwritten (nor is a damaged cache, which might be something else)."""
    what_to_do = "delete it to train the classifier again, or pass another path (default outputs/classifiers/DATASET.pt)"
    try:
        state = load_verified(path) if path.is_file() else None
    except CheckpointError as error:
        raise ValueError(f"{path} is damaged or not a classifier cache ({error}); {what_to_do}") from error
    if not isinstance(state, dict) or state.get("format") != _CACHE_FORMAT:
        raise ValueError(f"{path} exists and is not a classifier cache of this package; {what_to_do}")
    return state


@torch.no_grad()
def classifier_outputs(model: SmallCNN, images: Tensor, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """``(features (N, feature_dim), predicted classes (N,))`` on the CPU, in float64 and int64."""
    device = next(model.parameters()).device
    features, predictions = [], []
    for start in range(0, images.shape[0], batch_size):
        h = model.features(images[start : start + batch_size].to(device))  # (b, feature_dim)
        features.append(h.double().cpu())
        predictions.append(model.head(h).argmax(dim=1).cpu())
    return torch.cat(features), torch.cat(predictions)


def class_accuracy(model: SmallCNN, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``images`` the classifier assigns to ``labels``."""
    return float((classifier_outputs(model, images)[1] == labels.cpu()).double().mean())


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix, by eigen-decomposition."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Squared Fréchet distance between Gaussians fitted to two feature sets (n, d) (Dowson & Landau 1982).

    d^2 = ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}); the inner matrix is
    symmetric PSD, so both square roots come from ``torch.linalg.eigh`` (no scipy), in float64.
    """
    for name, x in (("features_a", features_a), ("features_b", features_b)):
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"{name} must have shape (n >= 2, d); got {tuple(x.shape)}")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature sizes differ: {features_a.shape[1]} vs {features_b.shape[1]}")
    a, b = features_a.double().cpu(), features_b.double().cpu()
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)  # (d,)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (d, d)
    sqrt_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(sqrt_a @ cov_b @ sqrt_a)
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross.trace()
    return max(float(value), 0.0)  # rounding can leave a tiny negative number for identical sets


def classifier_metrics(
    model: SmallCNN, generated: Tensor, requested: Tensor, real_train: Tensor, real_test: Tensor, test_labels: Tensor
) -> dict[str, float]:
    """Accuracy and Fréchet distance of ``generated`` (drawn for ``requested`` classes), with their real-data floors.

    Returns ``accuracy`` (generated vs requested), ``accuracy_real`` (real test images), ``frechet``
    (generated vs real train features), ``frechet_floor`` (real test vs real train features), and the sizes
    ``num_generated`` and ``num_real_test`` (the distance's upward bias shrinks with n: compare at similar n).
    """
    train_features, _ = classifier_outputs(model, real_train)
    generated_features, predicted = classifier_outputs(model, generated)
    test_features, test_predicted = classifier_outputs(model, real_test)
    return {
        "accuracy": float((predicted == requested.cpu()).double().mean()),
        "accuracy_real": float((test_predicted == test_labels.cpu()).double().mean()),
        "frechet": frechet_distance(generated_features, train_features),
        "frechet_floor": frechet_distance(test_features, train_features),
        "num_generated": generated.shape[0],
        "num_real_test": real_test.shape[0],
    }


__all__ = [
    "SmallCNN",
    "class_accuracy",
    "classifier_metrics",
    "classifier_outputs",
    "frechet_distance",
    "load_or_train_classifier",
    "train_classifier",
]
