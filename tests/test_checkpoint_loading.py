"""load_checkpoint: a checkpoint rebuilds its own model; clear errors for bad files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion_playground import BaseBackbone, TimeConditionedModel, generate_samples, load_checkpoint, train_denoiser
from diffusion_playground.training.checkpoint import CheckpointError

from conftest import tiny_model

FAST = dict(batch_size=64, show_progress=False, device="cpu")


@pytest.fixture
def trained(tmp_path, schedule, points):
    model = tiny_model(schedule.T, prediction_type="x0")
    history = train_denoiser(model, points, schedule, epochs=2, checkpoint_dir=tmp_path, **FAST)
    return tmp_path, model, history


def test_a_checkpoint_rebuilds_its_model_and_schedule(trained, schedule):
    folder, _, history = trained
    model, loaded_schedule = load_checkpoint(folder, device="cpu", with_schedule=True)
    assert isinstance(model, TimeConditionedModel) and not model.training
    assert model.prediction_type == "x0" and model.num_time_steps == schedule.T
    assert torch.equal(loaded_schedule.betas, schedule.betas)
    for a, b in zip(model.parameters(), history.ema_model.parameters()):
        assert torch.equal(a, b)  # EMA weights by default
    generator = torch.Generator().manual_seed(0)
    samples = generate_samples(model, loaded_schedule, (2,), 5, generator=generator)
    expected = generate_samples(history.ema_model, schedule, (2,), 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, expected)


def test_raw_weights_fill_a_given_model(trained, schedule):
    folder, trained_model, _ = trained
    model = load_checkpoint(folder / "checkpoint-step00000008.pt", tiny_model(schedule.T, "x0"), use_ema=False, device="cpu")
    for a, b in zip(model.parameters(), trained_model.parameters()):
        assert torch.equal(a, b)


def test_a_notebook_backbone_needs_the_model_passed(tmp_path, schedule, points):
    class LocalBackbone(BaseBackbone):
        cond_dim, input_shape = 16, (2,)

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, x, cond_emb):
            return self.linear(x)

    model = TimeConditionedModel(LocalBackbone(), time_emb_dim=16, num_time_steps=schedule.T)
    train_denoiser(model, points, schedule, epochs=1, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(CheckpointError, match="pass load_checkpoint\\(path, model=model\\)"):
        load_checkpoint(tmp_path)
    fresh = TimeConditionedModel(LocalBackbone(), time_emb_dim=16, num_time_steps=schedule.T)
    assert load_checkpoint(tmp_path, fresh, device="cpu") is fresh


def test_bad_paths_and_files_are_explained(tmp_path, trained, schedule):
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        load_checkpoint(tmp_path / "missing.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        load_checkpoint(empty)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a diffusion_playground checkpoint"):
        load_checkpoint(foreign)
    folder, _, _ = trained
    state = torch.load(folder / "checkpoint-step00000008.pt", weights_only=True)
    state["format_version"] = 99
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="do not fit the given model"):
        load_checkpoint(folder, tiny_model(schedule.T, hidden_dim=8))
