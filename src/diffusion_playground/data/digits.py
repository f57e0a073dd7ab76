"""scikit-learn's bundled handwritten digits as images in [-1, 1]: the image dataset that works offline.

``sklearn.datasets.load_digits`` ships 1,797 real 8x8 handwritten digits (UCI "Optical Recognition of
Handwritten Digits", Alpaydin & Kaynak 1998) inside the scikit-learn package, so every test, quick-mode
notebook and benchmark can train an image model without a download. Pixels hold counts 0..16.

Sizes: the native 8x8 suits a 2-level U-Net (``unet_tiny``: 8 -> 4); ``image_size=16`` (or 24, 32, ...)
repeats every pixel into an s x s block (nearest-neighbour scaling), which keeps the digits' values exact
and gives the 4-level layouts used on 32x32 data enough pixels to down-sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor

_NATIVE_SIZE = 8
_MAX_VALUE = 16.0  # pixel counts lie in 0..16
_TEST_FRACTION = 0.2
_SPLIT_SEED = 0


def load_digits_images(train: bool = True, *, image_size: int = 8) -> tuple[Tensor, Tensor]:
    """The scikit-learn digits as ``(images, labels)``: (N, 1, image_size, image_size) float32 in [-1, 1]
    and (N,) int64 in 0..9.

    Args:
        train: the training split (1,438 images) or the held-out test split (359 images); the split
            is a fixed random 80/20 permutation, the same on every call.
        image_size: 8 (native) or a multiple of 8, reached by repeating each pixel (nearest scaling).
    """
    if image_size < _NATIVE_SIZE or image_size % _NATIVE_SIZE:
        raise ValueError(
            f"image_size must be 8 (the digits' native size) or a multiple of it (16, 24, 32, ...); got {image_size}"
        )
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None]  # (N, 1, 8, 8)
    labels = torch.as_tensor(digits.target, dtype=torch.long)  # (N,)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    num_test = round(_TEST_FRACTION * len(labels))
    index = order[num_test:] if train else order[:num_test]
    images = images[index] / (_MAX_VALUE / 2) - 1  # 0..16 -> [-1, 1]
    if image_size != _NATIVE_SIZE:
        images = F.interpolate(images, scale_factor=image_size // _NATIVE_SIZE, mode="nearest")  # (N, 1, s, s)
    return images.contiguous(), labels[index]


__all__ = ["load_digits_images"]
