"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around a denoiser."""

from __future__ import annotations

import torch
from torch import Tensor

from diffusion_playground.checks import check_real, per_sample
from diffusion_playground.diffusion.denoiser import NULL_LABEL, Denoiser


class ClassifierFreeGuidance(Denoiser):
    """D_w(x, sigma, y) = (1 + w) D(x, sigma, y) - w D(x, sigma, null)   (Ho & Salimans 2022, eq. 6).

    Ho & Salimans write the rule for eps; at fixed (x, sigma), eps = (x - x0) / sigma is affine in x0 with
    coefficients that do not depend on the prediction, so guiding x0 is the same rule. w = 0 is the plain
    conditional model, larger w trades diversity for class fidelity. The conditional and unconditional
    predictions come from *one* batched call on (2B, ...): the labels, then NULL_LABEL for each sample.

    Args:
        denoiser: a class-conditional denoiser (``num_classes`` set), e.g. ``as_denoiser(TimeAndClassConditionedModel(...), schedule)``.
        guidance_scale: w >= 0, Ho & Salimans' w (0 = no guidance). Diffusers' ``guidance_scale`` is 1 + w
            (its 1 = no guidance): its 7.5 is w = 6.5 here, and w = 7.5 here is its 8.5.
    """

    def __init__(self, denoiser: Denoiser, guidance_scale: float) -> None:
        super().__init__()
        if getattr(denoiser, "num_classes", None) is None:
            raise ValueError(
                f"classifier-free guidance needs a class-conditional model; {type(denoiser).__name__} has no "
                "num_classes (train a TimeAndClassConditionedModel, or use guidance_scale=0)"
            )
        self.denoiser = denoiser
        self.guidance_scale = check_real("guidance_scale w (0 = no guidance)", guidance_scale, minimum=0.0)
        self.num_classes = denoiser.num_classes
        self.discrete_schedule = getattr(denoiser, "discrete_schedule", None)

    def forward(self, x: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            return self.denoiser(x, sigma, None)  # nothing to guide towards
        batch = x.shape[0]
        labels = per_sample("labels", torch.as_tensor(labels, device=x.device), batch)  # (B,)
        sigma = torch.as_tensor(sigma, device=x.device)
        sigma_both = sigma if sigma.ndim == 0 else torch.cat([sigma, sigma])  # 0-dim or (2B,)
        both = self.denoiser(
            torch.cat([x, x]), sigma_both, torch.cat([labels, torch.full_like(labels, NULL_LABEL)])
        )  # (2B, ...)
        conditional, unconditional = both[:batch], both[batch:]
        return conditional + self.guidance_scale * (conditional - unconditional)


__all__ = ["ClassifierFreeGuidance"]
