"""The radially averaged power spectrum of images: how much of their variance sits at each spatial frequency.

With the orthonormal 2-D DFT, X[k] = (1 / sqrt(H W)) sum_n x[n] exp(-2 pi i k.n / (H, W)), Parseval gives
sum_k |X[k]|^2 = sum_n x[n]^2, so the power |X[k]|^2 is in the same units as a pixel's variance, and white noise of
variance s^2 has the flat spectrum E |X[k]|^2 = s^2 at every k. The forward process adds exactly such noise:
x_sigma = x0 + sigma eps has the spectrum P_x0(k) + sigma^2. A frequency is still visible at noise level sigma while
P_x0(k) > sigma^2; natural images have P_x0 falling with |k| (roughly as a power law, Field 1987; van der Schaaf &
van Hateren 1996), so the fine detail (large |k|) drowns first and re-appears last when sampling: "coarse to fine".
"""

from __future__ import annotations

import torch
from torch import Tensor


def radial_power_spectrum(images: Tensor, *, subtract_mean: bool = True) -> tuple[Tensor, Tensor]:
    """``(frequencies, power)``: the power |X[k]|^2 of the orthonormal 2-D DFT of ``images`` (N, C, H, W), averaged
    over the images, the channels and the rings of equal radial frequency |k| = sqrt(k_x^2 + k_y^2).

    Frequencies are in cycles per pixel, one ring per integer multiple of 1 / max(H, W) from 0 to 0.5 (the Nyquist
    frequency; the corners beyond it are left out). ``subtract_mean`` removes each image's mean first, so the k = 0
    ring holds no brightness offset. Both outputs are float64 of shape (R,).
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] < 1 or min(images.shape[2:]) < 2:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape (N, C, H, W) with N >= 1 and H, W >= 2; got {shape}")
    x = images.detach().double().cpu()
    if subtract_mean:
        x = x - x.mean(dim=(2, 3), keepdim=True)
    height, width = x.shape[2:]
    power = torch.fft.fft2(x, norm="ortho").abs().square().mean(dim=(0, 1))  # (H, W)
    ky = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(width, dtype=torch.float64)[None, :]
    size = max(height, width)
    ring = ((kx.square() + ky.square()).sqrt() * size).round().long()  # (H, W): ring index, 1 / size per ring
    rings = size // 2 + 1  # up to the Nyquist frequency 0.5
    inside = ring < rings
    total = torch.zeros(rings, dtype=torch.float64).index_add_(0, ring[inside], power[inside])
    count = torch.zeros(rings, dtype=torch.float64).index_add_(0, ring[inside], torch.ones_like(power[inside]))
    return torch.arange(rings, dtype=torch.float64) / size, total / count


__all__ = ["radial_power_spectrum"]
