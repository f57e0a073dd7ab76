"""Image datasets: scikit-learn digits (offline), MNIST IDX files and CIFAR-10 pickles written here in
their real formats, and the clear errors for missing, truncated or corrupt files and failed downloads."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from diffusion_playground.data import (
    DatasetNotFoundError,
    cifar10,
    load_cifar10,
    load_digits_images,
    load_mnist,
    mnist,
)
from diffusion_playground.data.downloads import RemoteFile, download_file

from image_files import CIFAR_BATCHES, idx_bytes, mnist_arrays, write_cifar, write_mnist


# ---------------------------------------------------------------------------- scikit-learn digits


def test_digits_are_images_in_minus_one_to_one_with_labels():
    images, labels = load_digits_images()
    assert images.shape == (1438, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (1438,) and labels.dtype == torch.int64
    assert images.min() == -1 and images.max() == 1
    assert set(labels.tolist()) == set(range(10))


def test_digits_train_and_test_splits_are_disjoint_fixed_and_complete():
    train_images, train_labels = load_digits_images(train=True)
    test_images, test_labels = load_digits_images(train=False)
    assert len(train_labels) + len(test_labels) == 1797
    assert torch.equal(load_digits_images(train=False)[0], test_images)  # the same split on every call
    train_rows = {tuple(row.tolist()) for row in train_images.flatten(1)}
    assert sum(tuple(row.tolist()) in train_rows for row in test_images.flatten(1)) < 5  # (a few digits repeat)


def test_digits_scale_up_by_repeating_pixels():
    small, labels = load_digits_images(train=False)
    large, large_labels = load_digits_images(train=False, image_size=16)
    assert large.shape == (359, 1, 16, 16) and torch.equal(labels, large_labels)
    assert torch.equal(large[:, :, ::2, ::2], small) and torch.equal(large[:, :, 1::2, 1::2], small)


@pytest.mark.parametrize("image_size", [4, 12, 0])
def test_digits_reject_sizes_that_are_not_multiples_of_eight(image_size):
    with pytest.raises(ValueError, match=f"multiple of it.*got {image_size}"):
        load_digits_images(image_size=image_size)


# ---------------------------------------------------------------------------- MNIST (IDX files)


def expected_scaling(values: torch.Tensor) -> torch.Tensor:
    return values.float() / 127.5 - 1


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_raw_and_gzipped_idx_files_into_minus_one_to_one(tmp_path, gz):
    train_images, train_labels = write_mnist(tmp_path, "train", n=6, gz=gz, seed=0)
    test_images, test_labels = write_mnist(tmp_path, "t10k", n=3, gz=gz, seed=1)
    images, labels = load_mnist(tmp_path)
    assert images.shape == (6, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and torch.equal(labels, train_labels)
    assert torch.equal(images, expected_scaling(train_images)[:, None])
    assert images.min() == -1 and images.max() == 1
    images, labels = load_mnist(tmp_path, train=False)
    assert torch.equal(images, expected_scaling(test_images)[:, None]) and torch.equal(labels, test_labels)


def test_mnist_offline_without_files_names_the_files_the_url_and_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        load_mnist(tmp_path / "mnist")
    message = str(caught.value)
    assert isinstance(caught.value, DatasetNotFoundError)
    for part in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "https://ossci-datasets.s3.amazonaws.com/mnist/",
                 str((tmp_path / "mnist").resolve()), "download=True"]:  # fmt: skip
        assert part in message


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-10], r"train-images-idx3-ubyte is truncated or corrupt .*header \(6, 28, 28\) promises"),
        (lambda data: data[:6], "fewer than its 16-byte header"),
        (lambda data: data + b"\0", "promises"),
        (lambda data: b"\0\0\x08\x01" + data[4:], "magic number is 0x00000801, expected 0x00000803"),
    ],
)
def test_mnist_truncated_or_foreign_files_are_explained(tmp_path, damage, message):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetNotFoundError, match=message) as caught:
        load_mnist(tmp_path)
    assert "delete it" in str(caught.value) and str(tmp_path.resolve()) in str(caught.value)


def test_mnist_truncated_gzip_and_mismatched_counts_are_explained(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DatasetNotFoundError, match="train-labels-idx1-ubyte.gz is truncated or corrupt"):
        load_mnist(tmp_path)
    write_mnist(tmp_path / "other", n=6)
    (tmp_path / "other" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.zeros(5), 2049))
    with pytest.raises(DatasetNotFoundError, match=r"\(6, 28, 28\) images for \(5,\) labels"):
        load_mnist(tmp_path / "other")


# ---------------------------------------------------------------------------- downloads (urlopen replaced: no network)


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers; ``announced`` fakes a Content-Length."""

    def __init__(self, body: bytes, announced: int | None = None) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body) if announced is None else announced)}


def serve(monkeypatch, files: dict[str, bytes], announced_extra: int = 0) -> list[str]:
    """Replace urlopen with one serving ``files`` by file name; returns the list of requested URLs."""
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        body = files[url.rsplit("/", 1)[-1]]
        return FakeResponse(body, len(body) + announced_extra)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


def gzipped_mnist(n: int = 4) -> tuple[dict[str, bytes], torch.Tensor, torch.Tensor]:
    images, labels = mnist_arrays(n, seed=3)
    files = {"train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(images, 2051)),
             "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(labels, 2049))}  # fmt: skip
    return files, images, labels


def test_mnist_download_checks_md5_and_moves_files_into_place(tmp_path, monkeypatch):
    files, images, labels = gzipped_mnist()
    for name, body in files.items():
        monkeypatch.setitem(mnist.MNIST_MD5, name, hashlib.md5(body).hexdigest())
    requested = serve(monkeypatch, files)
    loaded_images, loaded_labels = load_mnist(tmp_path, download=True)
    assert torch.equal(loaded_images, expected_scaling(images)[:, None]) and torch.equal(loaded_labels, labels)
    assert requested == [f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}" for name in files]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # no partial files
    load_mnist(tmp_path, download=True)
    assert len(requested) == 2  # present files are not fetched again


@pytest.mark.parametrize(
    ("announced_extra", "wrong_md5", "message"),
    [(0, True, "checksum mismatch: MD5 [0-9a-f]{32}, expected f68b3c2dcbeaaa9fbdd348bbdeb94873"),
     (100, False, "truncated: received \\d+ of \\d+ bytes")],  # fmt: skip
)
def test_a_corrupt_or_truncated_download_leaves_nothing_that_looks_valid(
    tmp_path, monkeypatch, announced_extra, wrong_md5, message
):
    files, _, _ = gzipped_mnist()
    if not wrong_md5:
        for name, body in files.items():
            monkeypatch.setitem(mnist.MNIST_MD5, name, hashlib.md5(body).hexdigest())
    requested = serve(monkeypatch, files, announced_extra)
    with pytest.raises(DatasetNotFoundError, match=message) as caught:
        load_mnist(tmp_path, download=True)
    assert len(requested) == 2  # both mirrors tried for the first file, then one error
    assert "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz" in str(caught.value)
    assert str(tmp_path.resolve()) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_network_gives_one_clear_error(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    message = "downloading cifar-10-python.tar.gz failed.*name resolution"
    with pytest.raises(DatasetNotFoundError, match=message) as caught:
        load_cifar10(tmp_path / "cifar", download=True)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(caught.value)
    assert "pass download=True" not in str(caught.value)  # it was passed: no advice to do so
    assert list((tmp_path / "cifar").iterdir()) == []


def test_a_failure_while_writing_removes_the_partial_file(tmp_path, monkeypatch):
    class DyingResponse(FakeResponse):
        def read(self, size=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection reset by peer")
            return super().read(10)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: DyingResponse(b"x" * 100))
    remote = RemoteFile("file.bin", "0" * 32, ("https://example.invalid/file.bin",))
    with pytest.raises(OSError, match="connection reset"):
        download_file(remote, tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- CIFAR-10 (pickled batches)


def expected_cifar(contents, names) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.concatenate([contents[name][0] for name in names])
    images = expected_scaling(torch.from_numpy(data)).reshape(-1, 3, 32, 32)  # (N, 3, 32, 32): R, G, B planes
    return images, torch.tensor([label for name in names for label in contents[name][1]])


@pytest.mark.parametrize("archive", [False, True])
def test_cifar10_reads_the_folder_or_the_archive(tmp_path, archive):
    contents = write_cifar(tmp_path, n=3, archive=archive)
    images, labels = load_cifar10(tmp_path)
    expected_images, expected_labels = expected_cifar(contents, CIFAR_BATCHES[:5])
    assert images.shape == (15, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    assert images.min() == -1 and images.max() == 1
    assert torch.equal(images[0, 0, 0, :2], torch.tensor([-1.0, 1.0]))  # the first bytes are red, top-left
    images, labels = load_cifar10(tmp_path, train=False)
    expected_images, expected_labels = expected_cifar(contents, ["test_batch"])
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_cifar10_offline_without_files_names_the_files_the_url_and_the_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_cifar10(tmp_path)
    for part in ["cifar-10-python.tar.gz", "cifar-10-batches-py/", "data_batch_5", "test_batch",
                 "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", str(tmp_path.resolve())]:  # fmt: skip
        assert part in str(caught.value)


def test_cifar10_truncated_archive_or_corrupt_batch_is_explained(tmp_path):
    write_cifar(tmp_path / "archive", archive=True)
    path = tmp_path / "archive" / "cifar-10-python.tar.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetNotFoundError, match="cifar-10-python.tar.gz is truncated or corrupt.*delete it"):
        load_cifar10(tmp_path / "archive")
    write_cifar(tmp_path / "folder")
    (tmp_path / "folder" / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py is truncated or corrupt"):
        load_cifar10(tmp_path / "folder", train=False)


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path, monkeypatch):
    calls = []

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())  # harmless stand-in for os.system

    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Payload()}, protocol=2))
    monkeypatch.setattr(os, "getcwd", lambda: calls.append("ran"))
    with pytest.raises(DatasetNotFoundError, match="holds no posix.getcwd|holds no os.getcwd"):
        load_cifar10(tmp_path, train=False)
    assert calls == []


def test_cifar10_download_checks_md5_then_reads_the_archive(tmp_path, monkeypatch):
    source = tmp_path / "source"
    contents = write_cifar(source, archive=True)
    body = (source / "cifar-10-python.tar.gz").read_bytes()
    monkeypatch.setattr(cifar10, "_ARCHIVE", RemoteFile("cifar-10-python.tar.gz", hashlib.md5(body).hexdigest(),
                                                        (cifar10.CIFAR10_URL,)))  # fmt: skip
    serve(monkeypatch, {"cifar-10-python.tar.gz": body})
    images, labels = load_cifar10(tmp_path / "root", train=False, download=True)
    assert torch.equal(labels, torch.tensor(contents["test_batch"][1]))
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["cifar-10-python.tar.gz"]
