"""The stand-in CIFAR-10 of quick mode is written in the real format: the real loader reads it back exactly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from diffusion_playground.data import load_cifar10
from diffusion_playground.data.fake_files import FAKE_CIFAR10_BATCHES, fake_cifar10_batch, write_fake_cifar10


@pytest.mark.parametrize("archive", [False, True])
def test_load_cifar10_reads_the_fake_files_exactly(tmp_path, archive):
    write_fake_cifar10(tmp_path, n_per_batch=10, n_test=4, archive=archive, seed=3)
    expected = [fake_cifar10_batch(n, 3 + i) for i, n in enumerate([10] * 5 + [4])]
    images, labels = load_cifar10(tmp_path)
    data = np.concatenate([data for _, data, _ in expected[:5]])  # (50, 3072) uint8
    assert images.shape == (50, 3, 32, 32) and labels.shape == (50,)
    assert torch.equal(images, torch.from_numpy(data).reshape(-1, 3, 32, 32).float() / 127.5 - 1)
    assert labels.tolist() == [label for _, _, batch_labels in expected[:5] for label in batch_labels]
    assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 5))  # every class, equally often
    test_images, test_labels = load_cifar10(tmp_path, train=False)
    assert test_images.shape == (4, 3, 32, 32) and test_labels.tolist() == expected[5][2]


def test_a_fake_batch_is_a_real_format_dict():
    raw, data, labels = fake_cifar10_batch(12, seed=0)
    batch = pickle.loads(raw, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (12, 3072)
    assert np.array_equal(batch[b"data"], data)
    assert batch[b"labels"] == labels and len(FAKE_CIFAR10_BATCHES) == 6


def test_a_batch_needs_an_image():
    with pytest.raises(ValueError, match="at least one image"):
        fake_cifar10_batch(0, seed=0)
