"""Keeping x0_hat inside the data range while sampling: static clipping and dynamic thresholding.

Why an eps-model needs it at high noise: the denoiser reads its x0 estimate off the predicted noise,

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t) = x_sigma - sigma eps_hat,

so an error delta in eps_hat becomes an error sigma * delta in x0_hat. At t = 999 of the linear schedule
sqrt(alpha_bar_t) ~ 0.006 (sigma ~ 157), at sigma_max = 80 sqrt(alpha_bar) ~ 0.0125: an eps error of 0.05 puts
x0_hat at +-4 to +-8 for images that live in [-1, 1], and a deterministic sampler carries that estimate into
every later step. Images have a known range, so two cures are standard:

* static clipping: x0_hat <- clip(x0_hat, -1, 1) at every step (Ho et al. 2020's released sampler; diffusers'
  DDPM/DDIM schedulers do it by default with ``clip_sample=True``);
* dynamic thresholding (Saharia et al. 2022, Imagen, section 2.3): per sample, s = the p-th percentile of
  |x0_hat| (at least 1); x0_hat <- clip(x0_hat, -s, s) / s. It clips only the outliers and shrinks the rest
  towards the range, which matters when guidance pushes many pixels past +-1.

:class:`ThresholdedDenoiser` applies either to any denoiser, so every sampler (and DDPM through the
:class:`~diffusion_playground.diffusion.denoiser.TimeViewModel`) gets the same option.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusion_playground.diffusion.denoiser import Denoiser


def check_percentile(percentile: float | None) -> None:
    """A ValueError unless ``percentile`` is None (static clipping) or a dynamic-thresholding percentile in (0, 1]."""
    if percentile is not None and not 0.0 < percentile <= 1.0:
        raise ValueError(f"the dynamic-thresholding percentile must lie in (0, 1], e.g. 0.995; got {percentile}")


def threshold_x0(x0_hat: Tensor, percentile: float | None = None) -> Tensor:
    """Static clipping to [-1, 1] (``percentile=None``) or dynamic thresholding at ``percentile`` in (0, 1].

    Dynamic (Saharia et al. 2022, section 2.3): s_b = max(1, quantile_p(|x0_hat_b|)) per sample b, then
    clip(x0_hat_b, -s_b, s_b) / s_b; with p = 1 and |x0_hat| <= 1 it is the identity.
    """
    check_percentile(percentile)
    if percentile is None:
        return x0_hat.clamp(-1.0, 1.0)
    flat = x0_hat.abs().reshape(x0_hat.shape[0], -1).float()  # (B, D)
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0)  # (B,)
    s = s.reshape(-1, *([1] * (x0_hat.ndim - 1))).to(x0_hat.dtype)  # (B, 1, ..., 1)
    return torch.maximum(torch.minimum(x0_hat, s), -s) / s


class ThresholdedDenoiser(Denoiser):
    """D'(x, sigma) = threshold(D(x, sigma)): any denoiser whose x0 estimate is kept in the data range [-1, 1]."""

    def __init__(self, denoiser: Denoiser, percentile: float | None = None) -> None:
        super().__init__()
        check_percentile(percentile)
        if not isinstance(denoiser, Denoiser):
            raise TypeError(
                f"ThresholdedDenoiser wraps a Denoiser D(x, sigma); got a {type(denoiser).__name__}: pass "
                "as_denoiser(model, schedule), or use generate_samples(..., clip_denoised=True)"
            )
        self.denoiser = denoiser
        self.percentile = percentile
        self.num_classes = denoiser.num_classes
        self.discrete_schedule = denoiser.discrete_schedule

    def forward(self, x: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:
        return threshold_x0(self.denoiser(x, sigma, labels), self.percentile)


__all__ = ["ThresholdedDenoiser", "check_percentile", "threshold_x0"]
