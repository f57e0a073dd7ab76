"""EDM training: the noise levels and the loss weight of Karras et al. 2022 ("Elucidating the Design Space of
Diffusion-Based Generative Models"), as a process :func:`train_denoiser` trains on and :func:`generate_samples` samples.

The process is variance exploding with continuous sigma (Karras et al. 2022, Table 1, "EDM" column):

    x = x0 + sigma n,   n ~ N(0, I),   ln sigma ~ N(P_mean, P_std^2)                  training noise levels
    L = E_{sigma, x0, n} [ lambda(sigma) ||D_theta(x0 + sigma n; sigma) - x0||^2 ]     eq. 2 weighted over sigma (section 5)
    lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2                    the loss weight

with Table 1's P_mean = -1.2, P_std = 1.2, sigma_data = 0.5. The denoiser D_theta is an
:class:`~diffusion_playground.models.edm_preconditioner.EDMPreconditioner`, D = c_skip x + c_out F(c_in x; c_noise)
(eq. 7). Written on the raw network F, L weights ||F - (x0 - c_skip x) / c_out||^2 by lambda(sigma) c_out(sigma)^2
(eq. 8), and lambda = 1 / c_out^2 makes that effective weight 1 at every sigma (section 5, "Loss weighting and
sampling"). The log-normal spends its draws where the loss can still be reduced: at sigma << sigma_data D is almost
the identity, at sigma >> sigma_data almost the data mean (their Figure 5a).

Sampling with more than 15 steps walks Karras' rho = 7 grid between ``sigma_min`` = 0.002 and ``sigma_max`` = 80
(Table 1, eq. 5) for heun: the network takes any sigma, so the grid is continuous (no time steps to snap to);
``generate_samples(model, process, shape, n, sampler="heun", steps=18)`` is their deterministic sampler (Algorithm 1)
with the N = 18 steps they use for CIFAR-10 (35 network evaluations). With 15 steps or fewer every sampler's
default range is the few-step one, [0.1, 20] (step_schedules.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from diffusion_playground.checks import check_real
from diffusion_playground.diffusion.denoiser import Denoiser
from diffusion_playground.diffusion.noise_schedule import vp_scale
from diffusion_playground.diffusion.training_utils import randn_like


class EDMDiffusion:
    """The EDM noise levels and loss (see the module docstring): what ``train_denoiser`` and ``generate_samples``
    take as their ``noise_schedule`` for an :class:`~diffusion_playground.models.edm_preconditioner.EDMPreconditioner`.

    Args:
        P_mean, P_std: mean and standard deviation of ln sigma in training (Karras et al. 2022, Table 1: -1.2, 1.2).
        sigma_data: the standard deviation of the data, in the loss weight lambda(sigma); the preconditioner must
            be built with the same value (0.5 for images in [-1, 1], Table 1; about 1 for standardised points).
        sigma_min, sigma_max: the range of the sampling grid (Table 1: 0.002 and 80).

    Raises:
        ValueError / TypeError: for a non-finite setting, P_std <= 0, sigma_data <= 0, or not 0 < sigma_min < sigma_max.
    """

    def __init__(
        self,
        P_mean: float = -1.2,  # noqa: N803 - the paper's symbols
        P_std: float = 1.2,  # noqa: N803
        sigma_data: float = 0.5,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
    ) -> None:
        self.P_mean = check_real("P_mean", P_mean)  # noqa: N815
        self.P_std = check_real("P_std", P_std, minimum=0.0, strict=True)  # noqa: N815
        self.sigma_data = check_real("sigma_data", sigma_data, minimum=0.0, strict=True)
        self.sigma_min = check_real("sigma_min", sigma_min, minimum=0.0, strict=True)
        self.sigma_max = check_real("sigma_max", sigma_max)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"need sigma_min < sigma_max; got sigma_min={sigma_min:g}, sigma_max={sigma_max:g}")

    def sample_sigmas(self, batch_size: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """ln sigma ~ N(P_mean, P_std^2) (Karras et al. 2022, Table 1, "Noise distribution"): (batch_size,) float32."""
        return torch.exp(self.P_mean + self.P_std * randn_like(torch.empty(batch_size, device=device), generator))

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Table 1, "Loss weighting")."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def training_loss(
        self, model: nn.Module, x0: Tensor, *, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """mean_i lambda(sigma_i) ||D(x0_i + sigma_i n_i; sigma_i) - x0_i||^2 / d, one (sigma, n) per sample.

        1. sigma_i ~ exp(N(P_mean, P_std^2)), n_i ~ N(0, I);
        2. x_i = x0_i + sigma_i n_i (the VE corruption, Karras et al. 2022, eq. 2 / Table 1);
        3. the squared error of D(x_i; sigma_i) against x0_i, averaged over the d data dimensions, weighted by
           lambda(sigma_i) and averaged over the batch (NVlabs/edm ``training/loss.py``: ``EDMLoss``).
        """
        if not isinstance(model, Denoiser):
            raise TypeError(
                f"EDMDiffusion trains a denoiser called as D(x, sigma) such as EDMPreconditioner(backbone); got "
                f"{type(model).__name__} (a TimeConditionedModel takes integer steps: train it with a NoiseSchedule)"
            )
        if getattr(model, "sigma_data", self.sigma_data) != self.sigma_data:
            raise ValueError(
                f"the model is preconditioned for sigma_data={model.sigma_data:g} but the loss weights sigma_data="
                f"{self.sigma_data:g}; build both with the same sigma_data (the standard deviation of the data)"
            )
        sigma = self.sample_sigmas(x0.shape[0], x0.device, generator)  # (B,)
        sigma_b = sigma.reshape(-1, *([1] * (x0.ndim - 1)))  # (B, 1, ..., 1)
        x = x0 + sigma_b * randn_like(x0, generator)
        denoised = model(x, sigma, labels)
        squared_error = (denoised.float() - x0.float()).square().flatten(1).mean(dim=1)  # (B,)
        return (self.loss_weight(sigma) * squared_error).mean()

    def input_scale(self, sigma: Tensor) -> Tensor:
        """1 / sqrt(1 + sigma^2): ``generate_samples`` starts from z sqrt(1 + sigma_max^2) and returns trajectories
        on the VP scale x_sigma / sqrt(1 + sigma^2), as for any process (Karras' Alg. 2 starts from sigma_max z:
        the same to 1 part in 10^4 at sigma_max = 80)."""
        return vp_scale(sigma)

    def to(self, device: torch.device | str) -> "EDMDiffusion":
        """Nothing to move (the process holds no tensors); returns self, as the trainer and samplers expect."""
        return self

    def config(self) -> dict[str, Any]:
        """Arguments that rebuild this process with :func:`~diffusion_playground.diffusion.noise_schedule.schedule_from_config`."""
        return {
            "name": "edm", "P_mean": self.P_mean, "P_std": self.P_std, "sigma_data": self.sigma_data,
            "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
        }  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"EDMDiffusion(ln sigma ~ N({self.P_mean:g}, {self.P_std:g}^2), sigma_data={self.sigma_data:g}, "
            f"sampling sigma in [{self.sigma_min:g}, {self.sigma_max:g}])"
        )


__all__ = ["EDMDiffusion"]
