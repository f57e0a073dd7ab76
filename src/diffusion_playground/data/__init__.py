"""Datasets as tensors: moons (scikit-learn)."""

from diffusion_playground.data.moons import load_moons

__all__ = ["load_moons"]
