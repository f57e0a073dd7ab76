"""MNIST (LeCun et al. 1998) read from its IDX files with torch alone: 28x28 grayscale digits in [-1, 1].

The IDX format (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS"): a big-endian header
``0x00 0x00 <type> <ndim>`` then ``ndim`` uint32 sizes, then the values in row-major order. Type
0x08 is unsigned byte, so image files start with magic 0x00000803 = 2051 (sizes N, 28, 28) and
label files with 0x00000801 = 2049 (size N). Each file may be stored raw or gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor

from diffusion_playground.data.downloads import RemoteFile, dataset_error, find_or_download

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MNIST_MD5 = {  # of the .gz files, as published (also in torchvision's MNIST.resources)
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_NUM_CLASSES = 10
_SIDE = 28  # MNIST images are 28x28


def _remote(name: str) -> RemoteFile:
    return RemoteFile(name, MNIST_MD5[name], tuple(mirror + name for mirror in MNIST_MIRRORS))


def _find_idx(root: Path, remote: RemoteFile) -> Path | None:
    """The raw file if present, else the ``.gz``."""
    for path in (root / remote.name.removesuffix(".gz"), root / remote.name):
        if path.is_file():
            return path
    return None


def read_idx(path: str | Path, expected_magic: int) -> Tensor:
    """The uint8 tensor stored in an IDX file (raw or ``.gz``), shaped by its header.

    Raises:
        ValueError: wrong magic number, or a size that disagrees with the header (a truncated file).
    """
    path = Path(path)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4:
        raise ValueError(f"it holds {len(data)} bytes, fewer than an IDX header's 4")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise ValueError(f"its magic number is {magic:#010x}, expected {expected_magic:#010x}; it is not this IDX file")
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"it holds {len(data)} bytes, fewer than its {header_size}-byte header")
    sizes = struct.unpack(f">{ndim}I", data[4:header_size])
    expected_size = header_size + math.prod(sizes)
    if len(data) != expected_size:
        raise ValueError(f"it holds {len(data)} bytes but its header {sizes} promises {expected_size}")
    values = torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header_size, count=math.prod(sizes))
    return values.reshape(sizes)  # (N, rows, cols) or (N,)


def load_mnist(root: str | Path, train: bool = True, download: bool = False) -> tuple[Tensor, Tensor]:
    """MNIST as ``(images, labels)``: (N, 1, 28, 28) float32 in [-1, 1] and (N,) int64 in 0..9.

    Args:
        root: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, raw or ``.gz``.
        train: the 60,000 training images, or the 10,000 test images.
        download: fetch missing ``.gz`` files from the mirrors in ``MNIST_MIRRORS`` and check their MD5.

    Raises:
        DatasetNotFoundError: a file is missing (and download is False or failed), truncated, corrupt or
            holds images other than 28x28; the message names the files, the URL and the folder.
    """
    prefix = "train" if train else "t10k"
    files = [_remote(f"{prefix}-images-idx3-ubyte.gz"), _remote(f"{prefix}-labels-idx1-ubyte.gz")]
    expected = " and ".join(f"{remote.name.removesuffix('.gz')}[.gz]" for remote in files)
    image_path, label_path = find_or_download(
        "MNIST", root, files, download=download, find=_find_idx, expected=expected
    )

    def corrupt(path: Path, detail: object) -> Exception:
        reason = f"{path} is truncated or corrupt ({detail}); delete it and try again"
        return dataset_error("MNIST", root, files, reason, expected=expected)

    def read(path: Path, magic: int) -> Tensor:
        try:
            return read_idx(path, magic)
        except (ValueError, EOFError, OSError, zlib.error) as error:  # gzip raises all three on truncated data
            raise corrupt(path, error) from error

    images, labels = read(image_path, IDX_IMAGES_MAGIC), read(label_path, IDX_LABELS_MAGIC)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        detail = f"it holds {tuple(images.shape)} images for {tuple(labels.shape)} labels in {label_path.name}"
        raise corrupt(image_path, detail)
    if images.shape[1:] != (_SIDE, _SIDE):
        height, width = images.shape[1:]
        raise corrupt(image_path, f"it holds images of {height}x{width}, while MNIST images are {_SIDE}x{_SIDE}")
    if labels.numel() and labels.max() >= _NUM_CLASSES:
        raise corrupt(label_path, f"a label is {labels.max().item()}, not a digit 0..9")
    images = images.float()[:, None] / 127.5 - 1  # (N, 1, 28, 28), 0..255 -> [-1, 1]
    return images, labels.long()


__all__ = ["IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "MNIST_MD5", "MNIST_MIRRORS", "load_mnist", "read_idx"]
