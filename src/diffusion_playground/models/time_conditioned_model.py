"""TimeConditionedModel: a backbone plus the time embedding, called as ``model(x_t, t)``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from diffusion_playground.checks import check_integer
from diffusion_playground.diffusion.parameterization import PredictionType, check_prediction_type
from diffusion_playground.models.backbones.base_backbone import BaseBackbone
from diffusion_playground.models.cond_embedding import TimeEmbedding


class TimeConditionedModel(nn.Module):
    """f_theta(x_t, t) = backbone(x_t, emb(t)).

    Args:
        backbone_model: any :class:`BaseBackbone` whose ``cond_dim`` equals ``time_emb_dim``.
        time_emb_dim: size of the time embedding handed to the backbone.
        num_time_steps: T of the schedules this model may be trained with; t must lie in [0, T).
        prediction_type: what the network output means: ``"eps"`` (the noise, Ho et al. 2020),
            ``"x0"`` (the clean sample) or ``"v"`` (velocity, Salimans & Ho 2022). The trainer
            builds the matching target and every sampler converts the output accordingly.
    """

    num_classes: int | None = None

    def __init__(
        self,
        backbone_model: BaseBackbone,
        time_emb_dim: int = 128,
        *,
        num_time_steps: int = 1000,
        prediction_type: PredictionType = "eps",
    ) -> None:
        super().__init__()
        if not isinstance(backbone_model, nn.Module):
            raise TypeError(f"backbone_model must be an nn.Module (a BaseBackbone); got {type(backbone_model).__name__}")
        time_emb_dim = check_integer("time_emb_dim", time_emb_dim, minimum=1)
        backbone_cond_dim = getattr(backbone_model, "cond_dim", time_emb_dim)
        if backbone_cond_dim != time_emb_dim:
            raise ValueError(
                f"the backbone expects a conditioning embedding of size {backbone_cond_dim} but time_emb_dim="
                f"{time_emb_dim}; pass time_emb_dim={backbone_cond_dim} or build the backbone with cond_dim={time_emb_dim}"
            )
        num_time_steps = check_integer("num_time_steps", num_time_steps, minimum=1)
        check_prediction_type(prediction_type)
        self.backbone = backbone_model
        self.time_emb_dim = time_emb_dim
        self.num_time_steps = num_time_steps
        self.prediction_type = prediction_type
        self.time_embedding = TimeEmbedding(time_emb_dim)

    def forward(self, x: Tensor, t: Tensor | int) -> Tensor:
        t = self._check_inputs(x, t)
        return self._backbone(x, self._time_embedding(t, x.shape[0]))

    def _time_embedding(self, t: Tensor, batch: int) -> Tensor:
        """emb(t) as (B, time_emb_dim); a single step (0-dim t, as samplers pass) is embedded once, then expanded."""
        return self.time_embedding(t.reshape(-1)).expand(batch, -1)

    def _backbone(self, x: Tensor, cond_emb: Tensor) -> Tensor:
        return call_backbone(self.backbone, x, cond_emb)

    def _check_inputs(self, x: Tensor, t: Tensor | int) -> Tensor:
        """Validate x and t; return t as a long tensor on x's device, 0-dim (one step for all) or (B,)."""
        check_backbone_input(self.backbone, x)
        t = torch.as_tensor(t, device=x.device)
        if t.shape not in ((), (x.shape[0],)) or t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(
                f"t must be an integer time step or a (batch,) = ({x.shape[0]},) integer tensor; "
                f"got shape {tuple(t.shape)} and dtype {t.dtype}"
            )
        if self._check_values(x):
            if t.numel() and (t.min() < 0 or t.max() >= self.num_time_steps):
                raise ValueError(
                    f"time steps must lie in [0, {self.num_time_steps}); got values from "
                    f"{t.min().item()} to {t.max().item()}"
                )
        return t.long()

    def _check_values(self, x: Tensor) -> bool:
        return values_checkable(self, x)

    def wrapper_config(self) -> dict[str, Any]:
        """Keyword arguments (besides the backbone) that rebuild this wrapper."""
        return {
            "time_emb_dim": self.time_emb_dim,
            "num_time_steps": self.num_time_steps,
            "prediction_type": self.prediction_type,
        }


def check_backbone_input(backbone: nn.Module, x: Tensor) -> None:
    """A ValueError unless x is a (batch, ...) tensor of the backbone's ``input_shape`` (when it declares one)."""
    if not isinstance(x, Tensor) or x.ndim < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (batch, ...); got {shape}")
    expected = getattr(backbone, "input_shape", None)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        raise ValueError(f"x has shape {tuple(x.shape)} but the backbone expects (batch, {', '.join(map(str, expected))})")


def call_backbone(backbone: nn.Module, x: Tensor, cond_emb: Tensor) -> Tensor:
    """backbone(x, cond_emb), with a ValueError when its output does not have x's shape."""
    out = backbone(x, cond_emb)
    if out.shape != x.shape:
        raise ValueError(
            f"the backbone {type(backbone).__name__} returned shape {tuple(out.shape)} for an input of "
            f"shape {tuple(x.shape)}; a backbone must return a tensor of its input's shape"
        )
    return out


def values_checkable(module: nn.Module, x: Tensor) -> bool:
    """Whether a wrapper checks the values of its inputs (time steps, labels, sigma): range checks need a host sync;
    skip them only while training on an accelerator, where the trainer draws t (or sigma) itself and validates
    labels once before the first step, and while compiling."""
    return not (module.training and x.device.type != "cpu") and not torch.compiler.is_compiling()
