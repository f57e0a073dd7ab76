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

from diffusion_playground.data.downloads import DatasetNotFoundError, RemoteFile, dataset_error, find_or_download

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
_READ_ERRORS = (ValueError, EOFError, OSError, zlib.error, tarfile.TarError)  # what gzip and tar raise on bad data
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
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) from one pickled batch.

    Raises:
        ValueError: not a readable pickle, or not the arrays a batch holds.
    """
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:  # a damaged pickle can raise nearly anything (pickle's docs say so)
        raise ValueError(f"it is not a readable pickle: {type(error).__name__}: {error}") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError("it is not a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        raise ValueError(f"its data is {found}, expected a (N, 3072) uint8 array")
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"its labels are {labels.dtype} {labels.shape}, expected a list of ints")
    if len(labels) != len(data):
        raise ValueError(f"it holds {len(data)} images but {len(labels)} labels")
    outside = labels[(labels < 0) | (labels >= len(CIFAR10_CLASSES))]
    if outside.size:
        raise ValueError(f"a label is {outside[0]}, expected 0..9 (one of CIFAR-10's classes)")
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)  # (N, 3, 32, 32): R, G, B planes
    return images, torch.from_numpy(labels.astype(np.int64))


def _missing_batches(folder: Path, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not (folder / name).is_file()]


def _find_cifar10(names: tuple[str, ...]):
    """The extracted folder when it holds every batch needed, else the archive, else None."""

    def find(root: Path, remote: RemoteFile) -> Path | None:
        folder = root / CIFAR10_FOLDER
        if not _missing_batches(folder, names):
            return folder
        return root / remote.name if (root / remote.name).is_file() else None

    return find


def _error(root: Path, reason: str) -> DatasetNotFoundError:
    return dataset_error("CIFAR-10", root, [_ARCHIVE], reason, expected=_EXPECTED)


def _corrupt(root: Path, what: object, detail: object) -> DatasetNotFoundError:
    return _error(root, f"{what} is truncated or corrupt ({detail}); delete it and try again")


def _folder_batches(root: Path, folder: Path, names: tuple[str, ...]) -> list[tuple[Tensor, Tensor]]:
    """Each named batch from the extracted folder; an error names the batch to delete."""
    batches = []
    for name in names:
        try:
            batches.append(_read_batch((folder / name).read_bytes()))
        except _READ_ERRORS as error:
            raise _corrupt(root, f"{name} in {folder}", error) from error
    return batches


def _archive_batches(root: Path, archive: Path, names: tuple[str, ...]) -> list[tuple[Tensor, Tensor]]:
    """Each named batch from the archive, in one streaming pass to its end (so a truncated end is noticed too);
    an error names the archive to delete and the member it was reading."""
    wanted = {f"{CIFAR10_FOLDER}/{name}": name for name in names}
    batches, where = {}, "opening it"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                where = member.name
                if member.name in wanted and member.isfile():
                    batches[wanted[member.name]] = _read_batch(tar.extractfile(member).read())
                where = f"after {member.name}"  # reading the next header
    except _READ_ERRORS as error:
        raise _corrupt(root, archive, f"{where}: {error}") from error
    missing = [f"{CIFAR10_FOLDER}/{name}" for name in names if name not in batches]
    if missing:
        raise _corrupt(root, archive, f"it lacks {', '.join(missing)}")
    return [batches[name] for name in names]


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
            corrupt; the message names the files (the batch, when one is at fault), the URL and the folder.
    """
    root = Path(root).expanduser()
    names = _TRAIN_BATCHES if train else _TEST_BATCHES
    folder = root / CIFAR10_FOLDER
    missing = _missing_batches(folder, names)
    if folder.is_dir() and missing and not (root / _ARCHIVE.name).is_file() and not download:
        reason = f"the folder {folder.resolve()} is missing {', '.join(missing)}, and {_ARCHIVE.name} is not there"
        raise _error(root, reason)
    (source,) = find_or_download(
        "CIFAR-10", root, [_ARCHIVE], download=download, find=_find_cifar10(names), expected=_EXPECTED
    )
    read = _folder_batches if source.is_dir() else _archive_batches
    batches = read(root, source, names)
    images = torch.cat([images for images, _ in batches]).float() / 127.5 - 1  # (N, 3, 32, 32), 0..255 -> [-1, 1]
    labels = torch.cat([labels for _, labels in batches])
    return images, labels


__all__ = ["CIFAR10_CLASSES", "CIFAR10_MD5", "CIFAR10_URL", "load_cifar10"]
