"""Multimodal joint diffusion: per-part losses equal the single-process ones, and parts generated jointly agree."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion_playground import (
    CategoricalDiffusion,
    LinearNoiseSchedule,
    MLPBackbone,
    MultimodalDiffusion,
    MultimodalModel,
    TimeConditionedModel,
    load_checkpoint,
    train_denoiser,
)
from diffusion_playground.diffusion.training_utils import weighted_errors

T = 40


def processes() -> MultimodalDiffusion:
    return MultimodalDiffusion(
        {"x": LinearNoiseSchedule(T, beta_start=1e-3, beta_end=0.3), "label": CategoricalDiffusion(2, T)},
        weights={"x": 2.0, "label": 0.5},
    )


class SeparateParts(nn.Module):
    """A multimodal model made of two independent single-part wrappers: each part's output sees only that part."""

    prediction_type = "eps"

    def __init__(self) -> None:
        super().__init__()
        self.x_model = TimeConditionedModel(MLPBackbone(data_dim=2, cond_dim=16, hidden_dim=32, num_blocks=1), 16, num_time_steps=T)
        self.label_model = TimeConditionedModel(MLPBackbone(data_dim=2, cond_dim=16, hidden_dim=32, num_blocks=1), 16, num_time_steps=T)
        for p in self.parameters():  # leave the zero-initialised output: the losses must depend on the inputs
            nn.init.normal_(p, std=0.3)

    def forward(self, x, t):
        return {"x": self.x_model(x["x"], t["x"]), "label": self.label_model(x["label"], t["label"])}


def two_clusters(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """label y in {0, 1}; x ~ N((4y - 2) (1, 1), 0.3^2 I): the label is readable from x and x from the label."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n, 1), generator=generator)
    x = (4.0 * y.float() - 2.0) * torch.ones(n, 2) + 0.3 * torch.randn(n, 2, generator=generator)
    return {"x": x, "label": y}


def test_part_losses_equal_the_single_process_losses_and_the_total_is_their_weighted_sum():
    process, model, x0 = processes(), SeparateParts(), two_clusters(64)
    t = {"x": torch.randint(0, T, (64,)), "label": torch.randint(0, T, (64,))}
    t["label"][:5] = 0  # the L_0 term too
    parts = process.part_losses(model, x0, t, generator=torch.Generator().manual_seed(3))
    # the same draws, part by part, through the single-process code
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(x0["x"].shape, generator=generator)
    gaussian = weighted_errors(model.x_model, x0["x"], process.processes["x"], t["x"], noise, None, "uniform", 5.0)
    vb, ce = process.processes["label"].loss_terms(model.label_model, x0["label"], t["label"], generator=generator)
    categorical = (vb + process.processes["label"].hybrid_lambda * ce).flatten(1).mean(dim=1)
    assert torch.allclose(parts["x"], gaussian, atol=1e-6) and torch.allclose(parts["label"], categorical, atol=1e-6)
    assert parts["x"].shape == parts["label"].shape == (64,)
    # training_loss = sum_k w_k mean(L^k), with t_k drawn per part in order from the same generator
    total = process.training_loss(model, x0, generator=torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)
    t = {name: torch.randint(0, T, (64,), generator=generator) for name in ("x", "label")}
    parts = process.part_losses(model, x0, t, generator=generator)
    assert total.item() == pytest.approx((2.0 * parts["x"].mean() + 0.5 * parts["label"].mean()).item(), rel=1e-6)


def test_jointly_generated_labels_agree_with_the_points_and_each_part_can_be_given(tmp_path):
    torch.manual_seed(0)
    process = processes()
    shapes = {"x": (2,), "label": process.encoded_shape("label", (1,))}
    assert shapes["label"] == (2,)
    backbone = MLPBackbone(data_dim=MultimodalModel.packed_shape(shapes)[0], cond_dim=32, hidden_dim=64, num_blocks=2)
    model = MultimodalModel(backbone, shapes, time_emb_dim=32, num_time_steps=T)
    history = train_denoiser(model, two_clusters(2000), process, epochs=12, batch_size=100, lr=3e-3, ema_decay=0.99,
                             checkpoint_dir=tmp_path, show_progress=False, device="cpu")  # fmt: skip
    assert sum(history.losses[-20:]) < sum(history.losses[:20])
    loaded, loaded_process = load_checkpoint(tmp_path, with_schedule=True, device="cpu")
    assert isinstance(loaded, MultimodalModel) and isinstance(loaded_process, MultimodalDiffusion)
    assert loaded_process.weights == process.weights and loaded.part_shapes == model.part_shapes
    generator = torch.Generator().manual_seed(1)
    joint = loaded_process.sample(loaded, 400, {"x": (2,), "label": (1,)}, generator=generator)
    side = (joint["x"].mean(dim=1) > 0).long()
    assert joint["label"].shape == (400, 1) and joint["label"].dtype == torch.long
    assert (side == joint["label"][:, 0]).float().mean() > 0.9  # the label agrees with the point's cluster
    assert 0.3 < joint["label"].float().mean() < 0.7  # both clusters are generated
    # p(x | label): every point on the given label's side
    given_label = loaded_process.sample(loaded, 200, {"x": (2,), "label": (1,)}, given={"label": torch.ones(200, 1, dtype=torch.long)},
                                        generator=generator)  # fmt: skip
    assert torch.equal(given_label["label"], torch.ones(200, 1, dtype=torch.long))
    assert (given_label["x"].mean(dim=1) > 0).float().mean() > 0.9
    # p(label | x): the model classifies
    points = two_clusters(200, seed=5)
    given_x = loaded_process.sample(loaded, 200, {"x": (2,), "label": (1,)}, given={"x": points["x"]}, generator=generator)
    assert (given_x["label"] == points["label"]).float().mean() > 0.9


def test_clear_errors():
    process = processes()
    with pytest.raises(ValueError, match="same T"):
        MultimodalDiffusion({"x": LinearNoiseSchedule(10), "label": CategoricalDiffusion(2, 20)})
    with pytest.raises(ValueError, match="weights must give"):
        MultimodalDiffusion({"x": LinearNoiseSchedule(10), "label": CategoricalDiffusion(2, 10)}, weights={"x": 1.0})
    with pytest.raises(ValueError, match="the parts"):
        process.check_x0({"x": torch.zeros(4, 2)})
    with pytest.raises(ValueError, match="same number of samples"):
        process.check_x0({"x": torch.zeros(4, 2), "label": torch.zeros(3, 1, dtype=torch.long)})
    with pytest.raises(ValueError, match="must be floating point"):
        process.check_x0({"x": torch.zeros(4, 2, dtype=torch.long), "label": torch.zeros(4, 1, dtype=torch.long)})
    shapes = {"x": (2,), "label": (2,)}
    with pytest.raises(ValueError, match="packed_shape"):
        MultimodalModel(MLPBackbone(data_dim=3, cond_dim=16), shapes, time_emb_dim=16, num_time_steps=T)
    with pytest.raises(ValueError, match="put the image-like part first"):
        MultimodalModel(MLPBackbone(data_dim=3, cond_dim=16), {"label": (2,), "image": (1, 4, 4)}, time_emb_dim=16)
    model = MultimodalModel(MLPBackbone(data_dim=4, cond_dim=16), shapes, time_emb_dim=16, num_time_steps=T)
    with pytest.raises(ValueError, match="labels are one of its parts"):
        train_denoiser(model, two_clusters(8), process, labels=torch.zeros(8, dtype=torch.long), epochs=1, show_progress=False)
    with pytest.raises(TypeError, match="MultimodalDiffusion"):
        train_denoiser(model, two_clusters(8), LinearNoiseSchedule(T), epochs=1, show_progress=False)
    with pytest.raises(ValueError, match="nothing to sample"):
        process.sample(model, 2, {"x": (2,), "label": (1,)}, given={"x": torch.zeros(2, 2), "label": torch.zeros(2, 1, dtype=torch.long)})


def test_image_parts_pack_vectors_as_constant_channels():
    from diffusion_playground.models import unet_tiny

    shapes = {"image": (1, 8, 8), "label": (10,)}
    assert MultimodalModel.packed_shape(shapes) == (11, 8, 8)
    backbone = unet_tiny(cond_dim=32, in_channels=11)
    model = MultimodalModel(backbone, shapes, time_emb_dim=32, num_time_steps=T)
    out = model({"image": torch.randn(3, 1, 8, 8), "label": torch.randn(3, 10)}, {"image": torch.tensor(5), "label": torch.tensor([0, 1, 2])})
    assert out["image"].shape == (3, 1, 8, 8) and out["label"].shape == (3, 10)
