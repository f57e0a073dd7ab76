"""TimeAndClassConditionedModel: a backbone conditioned on t and a class label, called as ``model(x_t, t, y)``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffusion_playground.diffusion.parameterization import PredictionType
from diffusion_playground.models.backbones.base_backbone import BaseBackbone
from diffusion_playground.models.cond_embedding import ClassEmbedding
from diffusion_playground.models.time_conditioned_model import TimeConditionedModel


class TimeAndClassConditionedModel(TimeConditionedModel):
    """f_theta(x_t, t, y) = backbone(x_t, emb(t) + emb(y)), as ADM sums time and class embeddings
    (Dhariwal & Nichol 2021). ``y=None`` is the null class: the unconditional model used by
    classifier-free guidance (Ho & Salimans 2022); labels are dropped to it with probability
    ``cond_drop_prob`` while training.
    """

    def __init__(
        self,
        backbone_model: BaseBackbone,
        num_classes: int,
        time_emb_dim: int = 128,
        *,
        num_time_steps: int = 1000,
        prediction_type: PredictionType = "eps",
        cond_drop_prob: float = 0.1,
    ) -> None:
        super().__init__(
            backbone_model, time_emb_dim, num_time_steps=num_time_steps, prediction_type=prediction_type
        )
        self.class_embedding = ClassEmbedding(num_classes, time_emb_dim, cond_drop_prob)
        self.num_classes = num_classes

    def forward(
        self, x: Tensor, t: Tensor | int, y: Tensor | int | None = None, *, null_mask: Tensor | None = None
    ) -> Tensor:
        """``null_mask`` (B,) bool: rows whose label is replaced by the null class, so one batch can hold
        conditional and unconditional rows (classifier-free guidance evaluates both in one call)."""
        t = self._check_inputs(x, t)
        y = self._check_labels(x, y)
        if null_mask is not None and (y is None or null_mask.shape != y.shape or null_mask.dtype != torch.bool):
            raise ValueError(f"null_mask must be a (batch,) bool tensor next to labels y; got {tuple(null_mask.shape)}, {null_mask.dtype}")
        class_emb = self.class_embedding(y, x.shape[0], x.device, null_mask)  # (B, time_emb_dim)
        return self._backbone(x, self._time_embedding(t, x.shape[0]) + class_emb)

    def _check_labels(self, x: Tensor, y: Tensor | int | None) -> Tensor | None:
        if y is None:
            return None
        y = torch.as_tensor(y, device=x.device)
        if y.ndim == 0:
            y = y.expand(x.shape[0])
        if y.shape != (x.shape[0],) or y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(
                f"class labels y must be an int or a (batch,) = ({x.shape[0]},) integer tensor; "
                f"got shape {tuple(y.shape)} and dtype {y.dtype}"
            )
        if self._check_values(x) and y.numel() and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(
                f"class labels must lie in [0, {self.num_classes}); got values from {y.min().item()} to "
                f"{y.max().item()} (use y=None for the unconditional model)"
            )
        return y.long()

    def wrapper_config(self) -> dict[str, Any]:
        return {
            **super().wrapper_config(),
            "num_classes": self.num_classes,
            "cond_drop_prob": self.class_embedding.cond_drop_prob,
        }
