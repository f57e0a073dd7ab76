"""Backbone interface, embeddings and the two wrappers: shapes and clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion_playground import BaseBackbone, MLPBackbone, TimeAndClassConditionedModel, TimeConditionedModel
from diffusion_playground.models.cond_embedding import ClassEmbedding, sinusoidal_embedding


def test_base_backbone_is_abstract_and_importable():
    with pytest.raises(TypeError, match="abstract"):
        BaseBackbone()

    class Identity(BaseBackbone):
        def forward(self, x, cond_emb):
            return x

    assert isinstance(Identity(), nn.Module)


def test_backbone_records_its_arguments_for_checkpoints():
    backbone = MLPBackbone(2, cond_dim=16, hidden_dim=8)
    assert backbone.backbone_config() == {
        "class": "diffusion_playground.models.backbones.mlp:MLPBackbone",
        "args": [2],
        "kwargs": {"cond_dim": 16, "hidden_dim": 8},
    }


def test_sinusoidal_embedding_matches_the_formula():
    t = torch.tensor([0, 7, 999])
    emb = sinusoidal_embedding(t, 8)
    frequencies = 10_000 ** (-torch.arange(4) / 4)
    assert emb.shape == (3, 8)
    assert torch.allclose(emb[:, :4], torch.sin(t[:, None] * frequencies), atol=1e-5)
    assert torch.allclose(emb[:, 4:], torch.cos(t[:, None] * frequencies), atol=1e-5)
    assert sinusoidal_embedding(t, 7).shape == (3, 7)


def test_wrappers_keep_the_input_shape():
    model = TimeConditionedModel(MLPBackbone(3, cond_dim=32), time_emb_dim=32, num_time_steps=100)
    x = torch.randn(5, 3)
    assert model(x, torch.arange(5)).shape == (5, 3)
    assert model(x, 7).shape == (5, 3)  # one int for the whole batch
    conditional = TimeAndClassConditionedModel(MLPBackbone(3, cond_dim=32), 4, time_emb_dim=32)
    assert conditional(x, torch.arange(5), torch.tensor([0, 1, 2, 3, 0])).shape == (5, 3)
    assert conditional(x, 3, None).shape == (5, 3)


@pytest.mark.parametrize(
    ("x", "t", "message"),
    [
        (torch.randn(4, 3), torch.zeros(4, dtype=torch.long), r"expects \(batch, 2\)"),
        (torch.randn(4), 0, r"shape \(batch, \.\.\.\)"),
        (torch.randn(4, 2), torch.tensor([0, 1, 2, 100]), r"\[0, 100\)"),
        (torch.randn(4, 2), torch.tensor([0, -1, 2, 3]), r"\[0, 100\)"),
        (torch.randn(4, 2), torch.rand(4), "integer"),
        (torch.randn(4, 2), torch.zeros(3, dtype=torch.long), r"\(batch,\) = \(4,\)"),
    ],
)
def test_time_conditioned_model_rejects_bad_input(x, t, message):
    model = TimeConditionedModel(MLPBackbone(2, cond_dim=16), time_emb_dim=16, num_time_steps=100)
    with pytest.raises(ValueError, match=message):
        model(x, t)


def test_class_labels_out_of_range_are_rejected():
    model = TimeAndClassConditionedModel(MLPBackbone(2, cond_dim=16), num_classes=3, time_emb_dim=16)
    x, t = torch.randn(2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\)"):
        model(x, t, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        model(x, t, torch.tensor([0.0, 1.0]))


def test_cond_dim_mismatch_names_both_sizes():
    with pytest.raises(ValueError, match="size 64 but time_emb_dim=128"):
        TimeConditionedModel(MLPBackbone(2, cond_dim=64))


def test_backbone_returning_the_wrong_shape_is_reported():
    class Squash(BaseBackbone):
        cond_dim = 8

        def forward(self, x, cond_emb):
            return x.sum(dim=1)

    with pytest.raises(ValueError, match="must return a tensor of its input's shape"):
        TimeConditionedModel(Squash(), time_emb_dim=8)(torch.randn(3, 2), 0)


def test_null_class_and_label_dropout():
    embedding = ClassEmbedding(num_classes=3, dim=4, cond_drop_prob=1.0)
    y = torch.tensor([0, 1, 2])
    null = embedding.embedding.weight[3]
    embedding.train()
    assert torch.equal(embedding(y, 3, torch.device("cpu")), null.expand(3, 4))  # every label dropped
    embedding.eval()
    assert torch.equal(embedding(y, 3, torch.device("cpu")), embedding.embedding.weight[:3])  # no dropout at eval
    assert torch.equal(embedding(None, 2, torch.device("cpu")), null.expand(2, 4))


def test_unconditional_output_equals_the_null_label():
    model = TimeAndClassConditionedModel(MLPBackbone(2, cond_dim=16), 3, time_emb_dim=16).eval()
    nn.init.normal_(model.backbone.output[1].weight)  # make the output depend on the conditioning
    x, t = torch.randn(4, 2), torch.tensor([1, 2, 3, 4])
    null_embedding = model.time_embedding(t) + model.class_embedding.embedding.weight[3]
    assert torch.allclose(model(x, t, None), model.backbone(x, null_embedding))
    assert not torch.allclose(model(x, t, None), model(x, t, 0))


def test_null_mask_mixes_conditional_and_unconditional_rows_in_one_call():
    model = TimeAndClassConditionedModel(MLPBackbone(2, cond_dim=16), 3, time_emb_dim=16).eval()
    nn.init.normal_(model.backbone.output[1].weight)
    x, t, y = torch.randn(4, 2), torch.tensor([5, 5, 9, 9]), torch.tensor([0, 1, 2, 0])
    mask = torch.tensor([False, True, False, True])
    mixed = model(x, t, y, null_mask=mask)
    assert torch.allclose(mixed[~mask], model(x[~mask], t[~mask], y[~mask]))
    assert torch.allclose(mixed[mask], model(x[mask], t[mask], None))
    with pytest.raises(ValueError, match="null_mask must be a \\(batch,\\) bool tensor"):
        model(x, t, y, null_mask=torch.zeros(4))
