"""Optional true FID (Heusel et al. 2017) through torchmetrics, for numbers comparable with published FIDs.

FID is the Fréchet distance between Gaussians fitted to the 2048-d pool features of the Inception-v3 network
that Heusel et al. used (TensorFlow's 2015-12-05 weights, ported by torch-fidelity), computed here by
``torchmetrics.image.fid.FrechetInceptionDistance`` (Lightning AI, torchmetrics docs, "Frechet Inception
Distance"), which resizes every image to 299 x 299. Neither torchmetrics nor torch-fidelity is a dependency of
this package, and the weights are downloaded on first use, so this figure is optional; without them
:func:`frechet_inception_distance` raises :class:`FIDUnavailableError`, which says what to install.

The offline figure of this package is the classifier-feature Fréchet distance of
:func:`~diffusion_playground.evaluation.classifier.classifier_metrics` (``python -m diffusion_playground evaluate``):
the same formula on the features of a small CNN trained on the dataset, comparable only within this package.
Both are biased upward at finite n (Chong & Forsyth 2020): compare runs at the same number of images; papers
usually report FID of 50,000 samples against the training set.
"""

from __future__ import annotations

import torch
from torch import Tensor

INSTALL_COMMAND = "pip install torchmetrics[image]"  # torchmetrics with its image extra, torch-fidelity


class FIDUnavailableError(ImportError):
    """torchmetrics, torch-fidelity or the Inception-v3 weights are missing; the message says what to install."""


def _unavailable(reason: str) -> FIDUnavailableError:
    return FIDUnavailableError(
        f"true FID is unavailable: {reason}. It needs torchmetrics with torch-fidelity: `{INSTALL_COMMAND}` "
        "(or `pip install torchmetrics torch-fidelity`). torch-fidelity downloads the Inception-v3 weights once, "
        "on first use, into the torch hub cache (torch.hub.get_dir()), so that first call needs internet access. "
        "Offline alternative: the classifier-feature Fréchet distance of "
        "diffusion_playground.evaluation.classifier_metrics (`python -m diffusion_playground evaluate CHECKPOINT`), "
        "comparable between runs of this package but not with published FIDs."
    )


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Images in [-1, 1], (B, C, H, W) with C = 1 or 3, as the uint8 RGB (B, 3, H, W) that torchmetrics' FID takes.

    b = round((x + 1) * 127.5), the inverse of the loaders' x = b / 127.5 - 1 (values outside [-1, 1], e.g.
    unclipped samples, are clipped first); a grey channel is repeated three times, as Inception-v3 wants RGB.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, C, H, W) with C = 1 or 3; got {tuple(images.shape)}")
    pixels = ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.expand(-1, 3, -1, -1).contiguous() if pixels.shape[1] == 1 else pixels


def frechet_inception_distance(
    real: Tensor,
    fake: Tensor,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 100,
) -> float:
    """True FID between real and generated images, both (N, C, H, W) in [-1, 1], C = 1 or 3, N >= 2.

    Uses ``torchmetrics.image.fid.FrechetInceptionDistance(feature=2048)`` on uint8 RGB images
    (:func:`to_uint8_rgb`), fed in batches of ``batch_size`` on ``device`` (default: CUDA when available, else
    the CPU, where Inception-v3 at 299 x 299 is slow). Raises :class:`FIDUnavailableError` (an ImportError) when
    torchmetrics or torch-fidelity is not installed or the Inception weights cannot be downloaded.
    """
    for name, images in (("real", real), ("fake", fake)):
        if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 2:
            raise ValueError(f"{name} must have shape (N >= 2, C, H, W) with C = 1 or 3; got {tuple(images.shape)}")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and fake images differ in shape: {tuple(real.shape[1:])} vs {tuple(fake.shape[1:])}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as error:
        raise _unavailable(f"torchmetrics could not be imported ({error})") from error
    try:
        metric = FrechetInceptionDistance(feature=2048, normalize=False)  # loads (or downloads) the weights
    except ImportError as error:  # torchmetrics raises ModuleNotFoundError when torch-fidelity is missing
        raise _unavailable(f"torch-fidelity is missing ({error})") from error
    except OSError as error:  # urllib's URLError is an OSError: no internet for the first download
        raise _unavailable(f"the Inception-v3 weights could not be downloaded ({error})") from error
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    metric = metric.to(device)
    for images, is_real in ((real, True), (fake, False)):
        for batch in images.split(batch_size):
            metric.update(to_uint8_rgb(batch).to(device), real=is_real)
    return float(metric.compute())


__all__ = ["INSTALL_COMMAND", "FIDUnavailableError", "frechet_inception_distance", "to_uint8_rgb"]
