"""The one trainer: exact resume, checkpoint safety, clear failures, any backbone and any data source."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from diffusion_playground import (
    BaseBackbone,
    MLPBackbone,
    TimeAndClassConditionedModel,
    TimeConditionedModel,
    generate_samples,
    train_denoiser,
)
from diffusion_playground.training import checkpoint as ckpt

from conftest import tiny_model

FAST = dict(batch_size=32, show_progress=False, device="cpu")


def parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, schedule, points):
    """2N steps straight == N steps, stop, resume for N steps: identical weights, EMA, losses."""
    torch.manual_seed(0)
    straight_model = tiny_model(schedule.T)
    resumed_model = tiny_model(schedule.T)
    resumed_model.load_state_dict(straight_model.state_dict())

    straight = train_denoiser(straight_model, points, schedule, epochs=2, **FAST)
    # stop mid-epoch (epoch 1 has 8 steps), through a checkpoint on disk, then resume in a fresh call
    first = train_denoiser(resumed_model, points, schedule, epochs=2, max_steps=11, checkpoint_dir=tmp_path, **FAST)
    assert first.step == 11 and first.checkpoint_path.name == "checkpoint-step00000011.pt"
    torch.manual_seed(1234)  # a resumed run must not depend on the global RNG state it finds
    fresh_model = tiny_model(schedule.T)  # a new process would build a new, differently initialised model
    resumed = train_denoiser(fresh_model, points, schedule, epochs=2, checkpoint_dir=tmp_path, **FAST)

    assert resumed.step == straight.step == 16
    assert resumed.losses == straight.losses
    assert resumed.epoch_losses == straight.epoch_losses
    for a, b in zip(parameters(straight_model), parameters(fresh_model)):
        assert torch.equal(a, b)
    for a, b in zip(parameters(straight.ema_model), parameters(resumed.ema_model)):
        assert torch.equal(a, b)


def test_calling_again_with_more_epochs_extends_the_run(tmp_path, schedule, points):
    model = tiny_model(schedule.T)
    train_denoiser(model, points, schedule, epochs=1, checkpoint_dir=tmp_path, lr_schedule="constant", **FAST)
    history = train_denoiser(model, points, schedule, epochs=3, checkpoint_dir=tmp_path, lr_schedule="constant", **FAST)
    assert history.epoch == 3 and history.step == 24 and len(history.losses) == 24 and len(history.epoch_losses) == 3


def test_checkpoints_are_kept_pruned_and_complete(tmp_path, schedule, points):
    model = tiny_model(schedule.T)
    train_denoiser(model, points, schedule, epochs=2, checkpoint_dir=tmp_path, save_every_steps=3, keep_last=2, **FAST)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-step00000016.pt", "checkpoint-step00000015.pt"]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    state = ckpt.read_checkpoint(tmp_path / "checkpoint-step00000016.pt")
    for key in ("model", "ema", "optimizer", "lr_scheduler", "rng", "losses", "model_config", "noise_schedule"):
        assert state[key] is not None, key
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda", "noise_generator"}


def test_a_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, schedule, points):
    model = tiny_model(schedule.T)
    train_denoiser(model, points, schedule, epochs=2, checkpoint_dir=tmp_path, **FAST)
    newest = tmp_path / "checkpoint-step00000016.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.warns(RuntimeWarning, match="checkpoint-step00000016.pt is corrupt or truncated"):
        history = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, checkpoint_dir=tmp_path, **FAST)
    assert history.step == 16  # resumed at step 8 and re-did the last epoch


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, schedule, points, monkeypatch):
    model = tiny_model(schedule.T)
    train_denoiser(model, points, schedule, epochs=1, lr_schedule="constant", checkpoint_dir=tmp_path, **FAST)
    real_save = torch.save

    def dying_save(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(100)  # half-written...
        raise OSError("No space left on device")  # ...and the process fails

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="No space left"):
        train_denoiser(model, points, schedule, epochs=2, lr_schedule="constant", checkpoint_dir=tmp_path, **FAST)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-step00000008.pt"]  # no temp file, old one kept
    assert ckpt.read_checkpoint(tmp_path / "checkpoint-step00000008.pt")["step"] == 8


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, schedule, points):
    class Explodes(BaseBackbone):
        cond_dim = 16

        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))
            self.calls = 0

        def forward(self, x, cond_emb):
            self.calls += 1
            return x * self.scale * (float("nan") if self.calls > 10 else 1.0)

    model = TimeConditionedModel(Explodes(), time_emb_dim=16, num_time_steps=schedule.T)
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 11 \(epoch 2\).*checkpoint-step00000008\.pt"):
        train_denoiser(model, points, schedule, epochs=3, checkpoint_dir=tmp_path, log_every=4, **FAST)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-step00000008.pt"]
    assert torch.isfinite(ckpt.read_checkpoint(tmp_path / "checkpoint-step00000008.pt")["model"]["backbone.scale"])


def test_resume_false_moves_old_checkpoints_aside(tmp_path, schedule, points):
    model = tiny_model(schedule.T)
    train_denoiser(model, points, schedule, epochs=1, checkpoint_dir=tmp_path, **FAST)
    history = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, checkpoint_dir=tmp_path, resume=False, **FAST)
    assert history.step == 8
    aside = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(aside) == 1 and (aside[0] / "checkpoint-step00000008.pt").is_file()


def test_resuming_with_other_settings_or_another_model_is_refused(tmp_path, schedule, points):
    train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match="batch_size=32 but this call has batch_size=64"):
        train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, checkpoint_dir=tmp_path, **{**FAST, "batch_size": 64})
    with pytest.raises(ValueError, match="holds a different model"):
        train_denoiser(tiny_model(schedule.T, hidden_dim=8), points, schedule, epochs=2, checkpoint_dir=tmp_path, **FAST)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(data=torch.zeros(10)), ValueError, r"shape \(N, \.\.\.\)"),
        (dict(data=torch.full((10, 2), float("nan"))), ValueError, "NaN"),
        (dict(data=[[0.0, 1.0]]), TypeError, "tensor .* or a torch DataLoader"),
        (dict(labels=torch.zeros(256, dtype=torch.long)), ValueError, "not class-conditional"),
        (dict(epochs=0), ValueError, "epochs must be >= 1"),
    ],
)
def test_bad_training_input_is_explained(kwargs, error, message, schedule, points):
    arguments = dict(data=points, epochs=1, **FAST) | kwargs
    data = arguments.pop("data")
    with pytest.raises(error, match=message):
        train_denoiser(tiny_model(schedule.T), data, schedule, **arguments)


def test_class_conditional_training_checks_labels(schedule, points):
    model = TimeAndClassConditionedModel(MLPBackbone(2, cond_dim=16, hidden_dim=16), 2, time_emb_dim=16, num_time_steps=schedule.T)
    labels = (points[:, 0] > 0).long()
    history = train_denoiser(model, points, schedule, labels=labels, epochs=1, **FAST)
    assert history.step == 8
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        train_denoiser(model, points, schedule, labels=labels + 1, epochs=1, **FAST)


def test_a_dataloader_trains_like_a_tensor(schedule, points):
    loader = DataLoader(TensorDataset(points), batch_size=64, shuffle=True, generator=torch.Generator())
    history = train_denoiser(tiny_model(schedule.T), loader, schedule, epochs=2, show_progress=False, device="cpu")
    assert history.step == 8 and len(history.epoch_losses) == 2


def test_a_backbone_written_here_trains_and_samples_without_touching_the_package(schedule, points):
    """The "swap backbones" promise: implement BaseBackbone, nothing else."""

    class TinyConcatBackbone(BaseBackbone):
        def __init__(self):
            super().__init__()
            self.cond_dim, self.input_shape = 16, (2,)
            self.net = nn.Sequential(nn.Linear(2 + 16, 32), nn.SiLU(), nn.Linear(32, 2))

        def forward(self, x, cond_emb):
            return self.net(torch.cat([x, cond_emb], dim=1))  # (B, 2)

    model = TimeConditionedModel(TinyConcatBackbone(), time_emb_dim=16, num_time_steps=schedule.T, prediction_type="v")
    history = train_denoiser(model, points, schedule, epochs=3, **FAST)
    assert history.losses[-1] < history.losses[0]
    assert generate_samples(history.ema_model, schedule, (2,), 10).shape == (10, 2)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from diffusion_playground import LinearNoiseSchedule, MLPBackbone, TimeConditionedModel, train_denoiser
    torch.set_num_threads(1)
    schedule = LinearNoiseSchedule(50)
    model = TimeConditionedModel(MLPBackbone(2, cond_dim=16, hidden_dim=64), time_emb_dim=16, num_time_steps=50)
    data = torch.randn(2048, 2, generator=torch.Generator().manual_seed(0))
    history = train_denoiser(model, data, schedule, epochs=20, batch_size=32, checkpoint_dir=sys.argv[1],
                             save_every_steps=20, show_progress=False, device="cpu")
    print("finished at step", history.step)
    """
)


def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint_and_finishes(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT)
    folder = tmp_path / "checkpoints"
    process = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ckpt.list_checkpoints(folder) or ckpt.list_checkpoints(folder)[0].name < "checkpoint-step00000060.pt":
        assert process.poll() is None, "training finished before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = int(ckpt.list_checkpoints(folder)[0].stem.removeprefix("checkpoint-step"))
    assert killed_at < 20 * 64

    finished = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"Resuming from {folder}" in finished.stdout
    assert "finished at step 1280" in finished.stdout
    assert ckpt.read_checkpoint(ckpt.list_checkpoints(folder)[0])["step"] == 1280


def test_extending_a_finished_cosine_run_restarts_from_the_replanned_lr(tmp_path, schedule, points):
    train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, lr=1e-2, checkpoint_dir=tmp_path, **FAST)
    # the first run decayed the LR to 0; the new plan (2 epochs) puts step 8 at cos(pi * 1/2 * ...) > 0
    with pytest.warns(UserWarning, match=r"LR continues at 0\.00[1-9]"):
        history = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, lr=1e-2, checkpoint_dir=tmp_path, **FAST)
    assert history.step == 16


def test_training_and_sampling_leave_the_callers_schedule_alone(schedule, points):
    alpha_bars = schedule.alpha_bars
    history = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, **FAST)
    generate_samples(history.ema_model, schedule, (2,), 4)
    assert schedule.alpha_bars is alpha_bars
