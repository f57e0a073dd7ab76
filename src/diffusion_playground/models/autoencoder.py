"""A small convolutional autoencoder: the first stage of latent diffusion (Rombach et al. 2022, section 3.1).

The encoder E maps an image x (C, H, W) to a latent z = E(x) of shape (latent_channels, H / f, W / f) with f = 4 (two
stride-2 convolutions; odd sides round up, 28 -> 14 -> 7); the decoder D maps it back. With ``kl=True`` (the paper's
"KL-reg." first stage) E outputs a diagonal Gaussian q(z | x) = N(mu(x), diag(exp(log_var(x)))) and training adds a
small KL(q(z | x) || N(0, I)); without it E is deterministic.

Diffusion then runs on the latents scaled to unit variance, z * ``scale_factor`` (Rombach et al. 2022, section
4.3.2 and appendix G: the KL-regularised latents are rescaled by an estimate of their standard deviation; here one
scalar, 1 / std of the training latents, fitted by :meth:`ConvAutoencoder.fit_scale_factor` and stored as a buffer, so it travels with the checkpoint).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

class _ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, twice, plus the input (a 1x1 conv when the channels change)."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.GroupNorm(groups, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.GroupNorm(groups, c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
        )  # fmt: skip
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.layers(x)


class ConvAutoencoder(nn.Module):
    """E: (B, C, H, W) -> (B, latent_channels, ceil(H / 4), ceil(W / 4)); D back, cropped to (H, W).

    Args:
        in_channels: image channels (1 for MNIST).
        image_size: the image side (square images), e.g. 28.
        latent_channels: channels of z (4 in the paper's f = 4 models).
        channels: width of the two resolutions after the input (full, then f = 2 and f = 4).
        kl: a Gaussian encoder with the KL term (True) or a plain deterministic one (False).
    """

    def __init__(
        self, in_channels: int = 1, image_size: int = 28, latent_channels: int = 4, channels: tuple[int, int] = (32, 64),
        *, kl: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        if min(in_channels, image_size, latent_channels, *channels) < 1:
            raise ValueError(f"every size must be >= 1; got in_channels={in_channels}, image_size={image_size}, "
                             f"latent_channels={latent_channels}, channels={channels}")  # fmt: skip
        c1, c2 = channels
        groups = math.gcd(8, c1, c2)
        self.config = {"in_channels": in_channels, "image_size": image_size, "latent_channels": latent_channels,
                       "channels": list(channels), "kl": kl}  # fmt: skip
        self.kl = kl
        side = -(-(-(-image_size // 2)) // 2)  # ceil(ceil(H / 2) / 2)
        self.image_shape = (in_channels, image_size, image_size)
        self.latent_shape = (latent_channels, side, side)
        self.encoder = nn.Sequential(  # one conv at full resolution, where convolutions cost the most
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), _ResBlock(c2, c2, groups),  # H / 2
            nn.Conv2d(c2, c2, 3, stride=2, padding=1), _ResBlock(c2, c2, groups),  # H / 4
            nn.GroupNorm(groups, c2), nn.SiLU(), nn.Conv2d(c2, latent_channels * (2 if kl else 1), 3, padding=1),
        )  # fmt: skip
        self.decoder_in = nn.Sequential(nn.Conv2d(latent_channels, c2, 3, padding=1), _ResBlock(c2, c2, groups))  # H / 4
        self.decoder_mid = nn.Sequential(nn.Conv2d(c2, c2, 3, padding=1), _ResBlock(c2, c2, groups))  # H / 2
        self.decoder_out = nn.Sequential(  # full resolution
            nn.Conv2d(c2, c1, 3, padding=1), nn.GroupNorm(groups, c1), nn.SiLU(), nn.Conv2d(c1, in_channels, 3, padding=1),
        )  # fmt: skip
        self.register_buffer("scale_factor", torch.ones(()))  # 1 / std of the training latents (fit_scale_factor)

    def encode_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log_var) of q(z | x), each (B, *latent_shape); log_var is -inf-free (clamped to [-30, 20]) and 0-free:
        a deterministic encoder has log_var = -30 (sigma = 3e-7)."""
        h = self.encoder(x)
        if not self.kl:
            return h, torch.full_like(h, -30.0)
        mu, log_var = h.chunk(2, dim=1)
        return mu, log_var.clamp(-30.0, 20.0)

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mu + exp(log_var / 2) eps (the reparameterisation, Kingma & Welling 2014, section 2.4) with a
        ``generator``, else the posterior mean mu (what latent diffusion trains on); unscaled."""
        mu, log_var = self.encode_moments(x)
        if generator is None or not self.kl:
            return mu
        return mu + (0.5 * log_var).exp() * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """x_hat = D(z) for unscaled latents z, (B, *image_shape)."""
        h = self.decoder_in(z)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.decoder_mid(h)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.decoder_out(h)
        side = self.image_shape[-1]
        return h[..., :side, :side]  # 7 -> 14 -> 28; an odd image side is cropped back

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def fit_scale_factor(self, images: Tensor, batch_size: int = 256) -> float:
        """Set ``scale_factor`` = 1 / std of the posterior means of ``images`` (all latent entries pooled), so that
        z * scale_factor has unit variance; returns it."""
        latents = torch.cat([self.encode(images[i : i + batch_size].to(self.scale_factor.device))
                             for i in range(0, images.shape[0], batch_size)])  # fmt: skip
        self.scale_factor.fill_(1.0 / float(latents.float().std()))
        return float(self.scale_factor)


def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(log_var))) || N(0, I)) per sample, summed over the latent entries:
    1/2 sum (mu^2 + exp(log_var) - 1 - log_var) (Kingma & Welling 2014, appendix B). Shape (B,)."""
    return 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var).flatten(1).sum(dim=1)


def autoencoder_from_config(config: dict[str, Any]) -> ConvAutoencoder:
    """Rebuild a :class:`ConvAutoencoder` from its ``config`` (as stored in its checkpoints)."""
    config = dict(config)
    return ConvAutoencoder(
        config.pop("in_channels"), config.pop("image_size"), config.pop("latent_channels"), tuple(config.pop("channels")),
        kl=config.pop("kl"),
    )  # fmt: skip


__all__ = ["ConvAutoencoder", "autoencoder_from_config", "gaussian_kl"]
