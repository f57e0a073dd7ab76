"""MultimodalModel: one backbone that denoises every part of a structured sample (an image and its label, say).

The parts arrive as a dict of tensors, each at its own time step t_k. The first part (the "main" one) keeps its
shape; every other part is a vector (B, d_k) that is packed beside it:

    main part an image (B, C, H, W):  each d_k-vector becomes d_k constant channels -> (B, C + sum_k d_k, H, W)
    main part a vector (B, D):        the vectors are concatenated                  -> (B, D + sum_k d_k)

The backbone maps that tensor to one of the same shape (the usual backbone contract), read back the same way:
a vector part's output is the spatial mean of its channels. The backbone is conditioned on the sum of one time
embedding per part, cond = sum_k emb_k(t_k), so it knows how noisy each part is. Independent times per part are
what make one network serve the joint and every conditional: a part at t = 0 is (almost) clean, i.e. given
(Bao et al. 2023, "One Transformer Fits All Distributions in Multi-Modal Diffusion at Scale", UniDiffuser).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from diffusion_playground.diffusion.parameterization import PredictionType, check_prediction_type
from diffusion_playground.models.backbones.base_backbone import BaseBackbone
from diffusion_playground.models.cond_embedding import TimeEmbedding


class MultimodalModel(nn.Module):
    """f_theta({x_t^k}, {t_k}) = {out^k}: one backbone over the packed parts, conditioned on sum_k emb_k(t_k).

    Args:
        backbone_model: any :class:`BaseBackbone` whose input is the packed shape (see the module docstring) and
            whose ``cond_dim`` equals ``time_emb_dim``. :meth:`packed_shape` says what to build it for.
        part_shapes: the shape of one sample of each part *as the network sees it*, main part first, e.g.
            ``{"image": (1, 8, 8), "label": (10,)}`` (a categorical part enters as its one-hot code,
            ``CategoricalDiffusion.encode``: K values of one category -> (K,), or (K + 1,) with a MASK state).
        time_emb_dim: size of each part's time embedding (and of the backbone's conditioning).
        num_time_steps: T of the processes the model is trained with; every t_k must lie in [0, T).
        prediction_type: what the outputs of the Gaussian parts mean (``"eps"``, ``"x0"`` or ``"v"``);
            categorical parts' outputs are always logits.
    """

    num_classes: int | None = None

    def __init__(
        self,
        backbone_model: BaseBackbone,
        part_shapes: Mapping[str, Sequence[int]],
        time_emb_dim: int = 128,
        *,
        num_time_steps: int = 1000,
        prediction_type: PredictionType = "eps",
    ) -> None:
        super().__init__()
        self.part_shapes = {name: tuple(int(d) for d in shape) for name, shape in part_shapes.items()}
        if len(self.part_shapes) < 2:
            raise ValueError(f"a multimodal model needs at least two parts; got {list(self.part_shapes)}")
        names = list(self.part_shapes)
        for name in names[1:]:
            if len(self.part_shapes[name]) != 1:
                raise ValueError(
                    f"every part after the first ({names[0]!r}) must be a vector (d,); part {name!r} has shape "
                    f"{self.part_shapes[name]}: put the image-like part first"
                )
        backbone_cond_dim = getattr(backbone_model, "cond_dim", time_emb_dim)
        if backbone_cond_dim != time_emb_dim:
            raise ValueError(
                f"the backbone expects a conditioning embedding of size {backbone_cond_dim} but time_emb_dim="
                f"{time_emb_dim}; build the backbone with cond_dim={time_emb_dim}"
            )
        expected = getattr(backbone_model, "input_shape", None)
        if expected is not None and tuple(expected) != self.packed_shape(self.part_shapes):
            raise ValueError(
                f"the backbone takes inputs of shape (batch, {', '.join(map(str, expected))}) but the parts "
                f"{self.part_shapes} pack into (batch, {', '.join(map(str, self.packed_shape(self.part_shapes)))}); "
                "build it for MultimodalModel.packed_shape(part_shapes)"
            )
        check_prediction_type(prediction_type)
        self.backbone = backbone_model
        self.time_emb_dim = time_emb_dim
        self.num_time_steps = num_time_steps
        self.prediction_type = prediction_type
        self.time_embeddings = nn.ModuleDict({name: TimeEmbedding(time_emb_dim) for name in names})

    @staticmethod
    def packed_shape(part_shapes: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
        """The backbone's input shape (without the batch) for these parts: the main part with the vectors beside it."""
        shapes = [tuple(shape) for shape in part_shapes.values()]
        extra = sum(shape[0] for shape in shapes[1:])
        return (shapes[0][0] + extra, *shapes[0][1:])

    def forward(self, x: Mapping[str, Tensor], t: Mapping[str, Tensor | int]) -> dict[str, Tensor]:
        names = list(self.part_shapes)
        if set(x) != set(names) or set(t) != set(names):
            raise ValueError(f"x and t must hold the parts {names}; got x: {sorted(x)}, t: {sorted(t)}")
        main = x[names[0]]
        batch = main.shape[0]
        for name in names:
            if tuple(x[name].shape) != (batch, *self.part_shapes[name]):
                raise ValueError(
                    f"part {name!r} has shape {tuple(x[name].shape)}; expected (batch, {', '.join(map(str, self.part_shapes[name]))}) "
                    f"with batch = {batch}"
                )
        cond = sum(self._time_embedding(name, t[name], batch, main.device) for name in names)  # (B, time_emb_dim)
        spatial = main.shape[2:]
        vectors = [x[name].reshape(batch, -1, *([1] * len(spatial))).expand(-1, -1, *spatial) for name in names[1:]]
        out = self.backbone(torch.cat([main, *(v.to(main.dtype) for v in vectors)], dim=1), cond)
        sizes = [self.part_shapes[name][0] for name in names]
        pieces = torch.split(out, sizes, dim=1)
        result = {names[0]: pieces[0]}
        for name, piece in zip(names[1:], pieces[1:]):
            result[name] = piece.flatten(2).mean(dim=2) if spatial else piece  # (B, d_k)
        return result

    def _time_embedding(self, name: str, t: Tensor | int, batch: int, device: torch.device) -> Tensor:
        t = torch.as_tensor(t, device=device)
        if t.shape not in ((), (batch,)) or t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(
                f"t[{name!r}] must be an integer step or a (batch,) = ({batch},) integer tensor; got shape "
                f"{tuple(t.shape)} and dtype {t.dtype}"
            )
        if not (self.training and device.type != "cpu") and t.numel() and (t.min() < 0 or t.max() >= self.num_time_steps):
            raise ValueError(f"t[{name!r}] must lie in [0, {self.num_time_steps}); got {t.min().item()} to {t.max().item()}")
        return self.time_embeddings[name](t.long().reshape(-1)).expand(batch, -1)

    def wrapper_config(self) -> dict[str, Any]:
        """Keyword arguments (besides the backbone) that rebuild this wrapper."""
        return {
            "part_shapes": {name: list(shape) for name, shape in self.part_shapes.items()},
            "time_emb_dim": self.time_emb_dim,
            "num_time_steps": self.num_time_steps,
            "prediction_type": self.prediction_type,
        }


__all__ = ["MultimodalModel"]
