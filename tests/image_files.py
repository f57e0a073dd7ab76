"""Tiny MNIST and CIFAR-10 files in their real formats, written into a test's tmp folder."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import torch


def idx_bytes(values: torch.Tensor, magic: int) -> bytes:
    """An IDX file: big-endian magic, one uint32 per dimension, then the uint8 values row-major."""
    return struct.pack(f">I{values.ndim}I", magic, *values.shape) + values.to(torch.uint8).numpy().tobytes()


def mnist_arrays(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=generator, dtype=torch.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the range, so the scaling is visible
    return images, torch.randint(0, 10, (n,), generator=generator)


def write_mnist(root: Path, prefix: str = "train", n: int = 6, gz: bool = False, seed: int = 0):
    """``{prefix}-images-idx3-ubyte`` and ``{prefix}-labels-idx1-ubyte`` (``.gz`` when asked); returns the arrays."""
    images, labels = mnist_arrays(n, seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, data in [(f"{prefix}-images-idx3-ubyte", idx_bytes(images, 2051)),
                       (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, 2049))]:  # fmt: skip
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return images, labels


def cifar_batch_bytes(n: int, seed: int) -> tuple[bytes, np.ndarray, list[int]]:
    """A pickled batch like the real ones: a dict of bytes keys, (n, 3072) uint8 data, a list of labels."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    data[0, :2] = (0, 255)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    batch = {b"batch_label": b"testing batch", b"labels": labels, b"data": data,
             b"filenames": [f"image_{i}.png".encode() for i in range(n)]}  # fmt: skip
    return pickle.dumps(batch, protocol=2), data, labels


CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar(root: Path, n: int = 3, archive: bool = False) -> dict[str, tuple[np.ndarray, list[int]]]:
    """The six batches in ``cifar-10-batches-py/``, or inside ``cifar-10-python.tar.gz``; returns their contents."""
    contents, raw = {}, {}
    for seed, name in enumerate(CIFAR_BATCHES):
        raw[name], data, labels = cifar_batch_bytes(n, seed)
        contents[name] = (data, labels)
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, data in raw.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        folder = root / "cifar-10-batches-py"
        folder.mkdir()
        for name, data in raw.items():
            (folder / name).write_bytes(data)
    return contents
