"""CIFAR-10 (Krizhevsky 2009) read from its python pickle batches with torch alone: 32x32 RGB in [-1, 1].

The "python version" (https://www.cs.toronto.edu/~kriz/cifar.html) is one archive holding the folder
``cifar-10-batches-py/`` with ``data_batch_1`` ... ``data_batch_5`` (10,000 training images each) and
``test_batch``. Each is a pickled dict whose ``b"data"`` is a (10000, 3072) uint8 array, a row being
the 1024 red, then green, then blue values of a 32x32 image in row-major order, and whose
``b"labels"`` is a list of 10,000 ints in 0..9. The loader reads the extracted folder or, without
extracting, the ``.tar.gz`` itself.

Pickles can run code when loaded; :class:`_BatchUnpickler` only builds what a batch holds (dicts,
lists, bytes, numbers and a NumPy array), so a tampered file fails instead of executing.
"""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffusion_playground.data.downloads import RemoteFile, dataset_error, find_or_download

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCHES = ("test_batch",)
_ARCHIVE = RemoteFile("cifar-10-python.tar.gz", CIFAR10_MD5, (CIFAR10_URL,))
_EXPECTED = (
    f"{_ARCHIVE.name}, or the folder {CIFAR10_FOLDER}/ extracted from it "
    f"({', '.join(_TRAIN_BATCHES + _TEST_BATCHES)})"
)
_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array-unpickling function, wherever this numpy version keeps it


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR-10 batch holds (Python 2 pickles from NumPy 1, or
    ones written by NumPy 2), and refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes in protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR-10 batch holds no {module}.{name}; refusing to load it")
        return self._ALLOWED[(module, name)]


def _read_batch(raw: bytes) -> tuple[Tensor, Tensor]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) from one pickled batch."""
    batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError("it is not a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        found = f"{type(data).__name__} {getattr(data, 'shape', '')}"
        raise ValueError(f"its data is {found}, expected a (N, 3072) uint8 array")
    labels = torch.as_tensor(list(labels), dtype=torch.long)
    if labels.shape != (data.shape[0],) or (labels.numel() and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"it holds {data.shape[0]} images but labels of shape {tuple(labels.shape)} or outside 0..9")
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)  # (N, 3, 32, 32): R, G, B planes
    return images, labels


def _find_cifar10(names: tuple[str, ...]):
    """The extracted folder when it holds every batch needed, else the archive, else None."""

    def find(root: Path, remote: RemoteFile) -> Path | None:
        folder = root / CIFAR10_FOLDER
        if all((folder / name).is_file() for name in names):
            return folder
        return root / remote.name if (root / remote.name).is_file() else None

    return find


def _read_raw_batches(source: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The bytes of each named batch, from the folder or from the archive in one streaming pass."""
    if source.is_dir():
        return {name: (source / name).read_bytes() for name in names}
    wanted = {f"{CIFAR10_FOLDER}/{name}": name for name in names}
    found = {}
    with tarfile.open(source, "r:gz") as archive:
        for member in archive:
            if member.name in wanted and member.isfile():
                found[wanted[member.name]] = archive.extractfile(member).read()
    missing = sorted(set(names) - set(found))
    if missing:
        raise ValueError(f"the archive lacks {', '.join(f'{CIFAR10_FOLDER}/{name}' for name in missing)}")
    return found


def load_cifar10(root: str | Path, train: bool = True, download: bool = False) -> tuple[Tensor, Tensor]:
    """CIFAR-10 as ``(images, labels)``: (N, 3, 32, 32) float32 in [-1, 1] and (N,) int64 in 0..9.

    Args:
        root: folder holding ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``.
        train: the 50,000 training images (data_batch_1..5), or the 10,000 test images (test_batch).
        download: fetch the archive from ``CIFAR10_URL`` when missing and check its MD5.

    For random horizontal flips while training, pass
    ``train_denoiser(..., augment=random_horizontal_flip)`` (:mod:`diffusion_playground.data.augmentation`).

    Raises:
        DatasetNotFoundError: the files are missing (and download is False or failed), truncated or
            corrupt; the message names the files, the URL and the folder.
    """
    names = _TRAIN_BATCHES if train else _TEST_BATCHES
    (source,) = find_or_download(
        "CIFAR-10", root, [_ARCHIVE], download=download, find=_find_cifar10(names), expected=_EXPECTED
    )
    try:
        raw = _read_raw_batches(source, names)
        batches = [_read_batch(raw[name]) for name in names]
    except (ValueError, EOFError, OSError, zlib.error, tarfile.TarError, pickle.UnpicklingError) as error:
        reason = f"{source} is truncated or corrupt ({error}); delete it and try again"
        raise dataset_error("CIFAR-10", root, [_ARCHIVE], reason, expected=_EXPECTED) from error
    images = torch.cat([images for images, _ in batches]).float() / 127.5 - 1  # (N, 3, 32, 32), 0..255 -> [-1, 1]
    labels = torch.cat([labels for _, labels in batches])
    return images, labels


__all__ = ["CIFAR10_CLASSES", "CIFAR10_MD5", "CIFAR10_URL", "load_cifar10"]
