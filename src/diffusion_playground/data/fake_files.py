"""Tiny stand-in datasets written in the real file formats, for quick-mode notebooks and offline tests.

:func:`write_fake_cifar10` writes ``cifar-10-batches-py/`` (or ``cifar-10-python.tar.gz``) exactly as the
published "python version" of CIFAR-10 lays it out (see :mod:`diffusion_playground.data.cifar10`): six
pickled dicts whose ``b"data"`` is a (n, 3072) uint8 array (1024 red, then green, then blue values of a
32x32 image, row-major) and whose ``b"labels"`` is a list of ints in 0..9. The real
:func:`~diffusion_playground.data.load_cifar10` then reads them, so a notebook or a test exercises the
whole loading path without the 163 MB download.

The images are not noise: each class has its own colour and a bright square at its own place
(class k: hue k/10, square at one of ten positions), plus a little pixel noise, so that a tiny model
trained for seconds can already show class-dependent samples.
"""

from __future__ import annotations

import colorsys
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

FAKE_CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_SIDE = 32
_SQUARE = 10  # side of the bright square in pixels


def fake_cifar10_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 3072) uint8 rows in CIFAR-10's layout for the given labels: a class colour, a class-placed square, noise."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    images = np.empty((labels.shape[0], 3, _SIDE, _SIDE), dtype=np.float32)  # (n, 3, 32, 32) in [0, 1]
    for i, label in enumerate(labels):
        colour = np.array(colorsys.hsv_to_rgb(label / 10, 0.8, 0.45), dtype=np.float32)  # (3,)
        images[i] = colour[:, None, None]
        row, col = divmod(int(label), 5)  # ten places: 2 rows x 5 columns
        top, left = 4 + row * 14, 1 + col * 5 + int(rng.integers(0, 2))
        images[i, :, top : top + _SQUARE, left : left + _SQUARE] = np.minimum(1.0, colour[:, None, None] + 0.5)
    images += rng.normal(0.0, 0.04, images.shape).astype(np.float32)
    data = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    return data.reshape(labels.shape[0], 3 * _SIDE * _SIDE)  # (n, 3072): R plane, G plane, B plane


def fake_cifar10_batch(n: int, seed: int) -> tuple[bytes, np.ndarray, list[int]]:
    """One pickled batch like the real ones (a dict with bytes keys, protocol 2); returns (bytes, data, labels).

    Labels cycle through the ten classes (then shuffled), so every class appears when n >= 10.
    """
    if n < 1:
        raise ValueError(f"a batch needs at least one image; got n={n}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10)
    data = fake_cifar10_images(labels, seed=seed)
    batch = {
        b"batch_label": b"fake batch written by diffusion_playground.data.fake_files",
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"fake_{seed}_{i}.png".encode() for i in range(n)],
    }
    return pickle.dumps(batch, protocol=2), data, batch[b"labels"]


def write_fake_cifar10(
    root: str | Path, n_per_batch: int = 20, n_test: int | None = None, *, archive: bool = False, seed: int = 0
) -> Path:
    """Write a tiny CIFAR-10 in the real format into ``root``; ``load_cifar10(root)`` reads it.

    Args:
        root: the folder that will hold ``cifar-10-batches-py/`` (or the ``.tar.gz``).
        n_per_batch: images in each of ``data_batch_1`` ... ``data_batch_5`` (the training set has 5x this many).
        n_test: images in ``test_batch`` (default: ``n_per_batch``).
        archive: write ``cifar-10-python.tar.gz`` instead of the extracted folder.
        seed: batch i is drawn with seed ``seed + i``.

    Returns:
        the path written: the folder ``root/cifar-10-batches-py`` or the archive.
    """
    root = Path(root)
    sizes = [n_per_batch] * 5 + [n_per_batch if n_test is None else n_test]
    raw = {name: fake_cifar10_batch(n, seed + i)[0] for i, (name, n) in enumerate(zip(FAKE_CIFAR10_BATCHES, sizes))}
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        path = root / "cifar-10-python.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for name, data in raw.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path
    folder = root / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    for name, data in raw.items():
        (folder / name).write_bytes(data)
    return folder


__all__ = ["FAKE_CIFAR10_BATCHES", "fake_cifar10_batch", "fake_cifar10_images", "write_fake_cifar10"]
