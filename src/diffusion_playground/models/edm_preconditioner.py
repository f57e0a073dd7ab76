"""EDMPreconditioner: any backbone as the EDM denoiser D(x; sigma) (Karras et al. 2022, section 5, eq. 7, Table 1).

    D_theta(x; sigma) = c_skip(sigma) x + c_out(sigma) F_theta(c_in(sigma) x; c_noise(sigma))

    c_skip(sigma)  = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out(sigma)   = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in(sigma)    = 1 / sqrt(sigma^2 + sigma_data^2)
    c_noise(sigma) = ln(sigma) / 4

F_theta is the backbone. For data of standard deviation sigma_data, x = x0 + sigma n has variance sigma^2 + sigma_data^2,
so c_in gives the network inputs of unit variance, c_out makes its training target (x0 - c_skip x) / c_out of unit
variance, and c_skip is the skip weight that minimises c_out, the factor by which F's errors reach D (appendix B.6).
For Gaussian data x0 ~ N(0, sigma_data^2 I), E[x0 | x] = c_skip x exactly: the ideal F is 0, where a
zero-initialised output layer starts. The network sees sigma only through c_noise, a continuous value (about
[-1.6, 1.1] for sigma in [0.002, 80]), embedded as the wrappers embed a time step: the sinusoidal features of
c_noise itself, then an MLP (:class:`~diffusion_playground.models.cond_embedding.TimeEmbedding`; NVlabs/edm's
``EDMPrecond`` too hands c_noise unscaled to its networks' noise embedding). So any sigma > 0 is exact:
``discrete_schedule`` is None and every sampler's grid is used as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffusion_playground.checks import check_real
from diffusion_playground.diffusion.denoiser import NULL_LABEL, Denoiser
from diffusion_playground.models.backbones.base_backbone import BaseBackbone
from diffusion_playground.models.cond_embedding import ClassEmbedding, TimeEmbedding
from diffusion_playground.models.time_conditioned_model import call_backbone, check_backbone_input, values_checkable


class EDMPreconditioner(Denoiser):
    """D(x, sigma, labels=None) = c_skip x + c_out F(c_in x; c_noise) around any backbone (see the module docstring).

    A :class:`~diffusion_playground.diffusion.denoiser.Denoiser`: every sampler and ``generate_samples`` call it
    directly; train it with ``train_denoiser(model, data, EDMDiffusion(...))``.

    Args:
        backbone_model: any :class:`BaseBackbone`; its ``cond_dim`` is the size of the noise (and class) embedding.
        num_classes: None (unconditional) or the number of classes; then labels y in [0, num_classes) condition F
            through a class embedding added to the noise embedding, and NULL_LABEL or ``labels=None`` is the null
            class of classifier-free guidance (Ho & Salimans 2022).
        sigma_data: the standard deviation of the data (Karras et al. 2022, Table 1: 0.5); the loss must use the same.
        cond_drop_prob: while training, the probability that a label is replaced by the null class.

    Raises:
        TypeError: for a backbone that is not a BaseBackbone. ValueError: for sigma_data <= 0, or a cond_drop_prob or
            num_classes out of range.
    """

    def __init__(
        self,
        backbone_model: BaseBackbone,
        num_classes: int | None = None,
        *,
        sigma_data: float = 0.5,
        cond_drop_prob: float = 0.1,
    ) -> None:
        super().__init__()
        if not isinstance(backbone_model, BaseBackbone):
            raise TypeError(
                f"backbone_model must be a BaseBackbone (forward(x, cond_emb) with a cond_dim); got "
                f"{type(backbone_model).__name__}"
            )
        self.sigma_data = check_real("sigma_data", sigma_data, minimum=0.0, strict=True)
        self.backbone = backbone_model
        self.noise_embedding = TimeEmbedding(backbone_model.cond_dim)
        self.num_classes = num_classes
        self.class_embedding = (
            ClassEmbedding(num_classes, backbone_model.cond_dim, cond_drop_prob) if num_classes is not None else None
        )

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) at sigma (Karras et al. 2022, Table 1, "Network and preconditioning")."""
        sigma_data = self.sigma_data
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
        c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: Tensor, sigma: Tensor | float, labels: Tensor | None = None) -> Tensor:
        """D(x; sigma) for x (B, ...), sigma 0-dim (one level for the batch) or (B,), labels None or (B,) int64."""
        check_backbone_input(self.backbone, x)
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        if sigma.shape not in ((), (1,), (x.shape[0],)):
            raise ValueError(f"sigma must be one noise level or one per sample ({x.shape[0]},); got shape {tuple(sigma.shape)}")
        if values_checkable(self, x) and not bool((sigma > 0).all()):
            raise ValueError(f"the EDM denoiser needs sigma > 0 (c_noise = ln(sigma) / 4); got {sigma.min().item():g}")
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))  # (B or 1, 1, ..., 1)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        F = call_backbone(self.backbone, c_in * x, self._condition(c_noise.reshape(-1), labels, x))  # noqa: N806
        return c_skip * x + c_out * F

    def _condition(self, c_noise: Tensor, labels: Tensor | None, x: Tensor) -> Tensor:
        """emb(c_noise) (+ emb(y)): (B, cond_dim); one level for the batch (c_noise (1,)) is embedded once."""
        batch = x.shape[0]
        cond = self.noise_embedding(c_noise).expand(batch, -1)  # (B, cond_dim)
        if self.class_embedding is None:
            if labels is not None:
                raise ValueError("labels were given but this EDMPreconditioner is unconditional; build it with num_classes")
            return cond
        if labels is None:
            return cond + self.class_embedding(None, batch, x.device)
        labels = torch.as_tensor(labels, device=x.device)
        labels = labels.expand(batch) if labels.ndim == 0 else labels  # one class for the batch
        if labels.shape != (batch,) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be a ({batch},) integer tensor; got shape {tuple(labels.shape)}, dtype {labels.dtype}")
        if values_checkable(self, x) and not bool(((labels >= NULL_LABEL) & (labels < self.num_classes)).all()):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}) or be NULL_LABEL ({NULL_LABEL}, unconditional); got values "
                f"from {labels.min().item()} to {labels.max().item()}"
            )
        is_null = labels == NULL_LABEL  # (B,): the unconditional rows of classifier-free guidance
        return cond + self.class_embedding(labels.long().clamp(min=0), batch, x.device, null_mask=is_null)

    def wrapper_config(self) -> dict[str, Any]:
        """Keyword arguments (besides the backbone) that rebuild this model (checkpoint.py)."""
        config: dict[str, Any] = {"num_classes": self.num_classes, "sigma_data": self.sigma_data}
        if self.class_embedding is not None:
            config["cond_drop_prob"] = self.class_embedding.cond_drop_prob
        return config


__all__ = ["EDMPreconditioner"]
