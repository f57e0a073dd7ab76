"""The reliability promises of the README's "What survives a crash, and what bad input gets" section.

Each test is one promise: no checkpoint lost, no damaged file used, and one clear, early error for each bad input.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from diffusion_playground import (
    CosineNoiseSchedule,
    LinearNoiseSchedule,
    MLPBackbone,
    TimeAndClassConditionedModel,
    generate_samples,
    load_checkpoint,
    train_denoiser,
)
from diffusion_playground.atomic_files import remove_stale_temporary_files
from diffusion_playground.data.downloads import RemoteFile, download_file
from diffusion_playground.training import checkpoint as ckpt

from conftest import tiny_model

FAST = dict(batch_size=32, show_progress=False, device="cpu")


def names(folder) -> list[str]:
    return [path.name for path in ckpt.list_checkpoints(folder)]


def flip_a_byte_inside_a_tensor(path) -> None:
    """Bit rot: one byte of the first weight tensor's record changes, the file keeps its size and structure."""
    with zipfile.ZipFile(path) as archive:
        record = next(info for info in archive.infolist() if "/data/" in info.filename and info.file_size >= 64)
    data = bytearray(path.read_bytes())
    with open(path, "rb") as handle:  # the record's data starts after its local header (30 bytes + name + extra)
        handle.seek(record.header_offset + 26)
        name_length, extra_length = int.from_bytes(handle.read(2), "little"), int.from_bytes(handle.read(2), "little")
    data[record.header_offset + 30 + name_length + extra_length + 10] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------------- no data lost or silently wrong


@pytest.mark.parametrize("keep_last", [0, -1])
def test_keep_last_below_one_is_refused_before_anything_is_deleted(tmp_path, schedule, points, keep_last):
    train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, checkpoint_dir=tmp_path, keep_last=keep_last, **FAST)
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        ckpt.prune_checkpoints(tmp_path, keep_last)
    assert names(tmp_path) == ["checkpoint-step00000008.pt"]


@pytest.mark.parametrize("keep_last", [1, 3])
def test_a_bogus_newest_file_neither_takes_a_slot_nor_costs_a_valid_checkpoint(tmp_path, schedule, points, keep_last):
    bogus = tmp_path / "checkpoint-step99999999.pt"
    bogus.write_bytes(os.urandom(4096))
    with pytest.warns(RuntimeWarning, match="skipping unusable checkpoint.*step99999999"):
        history = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=4, checkpoint_dir=tmp_path, keep_last=keep_last, **FAST)
    valid = ["checkpoint-step00000032.pt", "checkpoint-step00000024.pt", "checkpoint-step00000016.pt"][:keep_last]
    assert names(tmp_path) == [bogus.name, *valid]  # the bogus file is left alone, the newest valid ones kept
    assert history.checkpoint_path.name == "checkpoint-step00000032.pt"
    with pytest.warns(RuntimeWarning, match="skipping unusable"):  # and a resume finds the newest valid one
        assert load_checkpoint(tmp_path, device="cpu") is not None


def test_flipped_bytes_in_a_checkpoint_are_caught_by_its_checksums(tmp_path, schedule, points):
    first = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, checkpoint_dir=tmp_path, **FAST)
    damaged = tmp_path / "checkpoint-step00000016.pt"
    good = torch.load(damaged, weights_only=True)
    flip_a_byte_inside_a_tensor(damaged)
    rotten = torch.load(damaged, weights_only=True)  # torch alone loads it, with one weight changed
    assert any(not torch.equal(good["model"][k], rotten["model"][k]) for k in good["model"])
    with pytest.raises(ckpt.CheckpointError, match="CRC-32"):
        load_checkpoint(damaged)
    with pytest.warns(RuntimeWarning, match="step00000016.pt is corrupt.*CRC-32"):
        resumed = train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, checkpoint_dir=tmp_path, **FAST)
    assert resumed.losses == first.losses  # resumed from step 8, the last good file, and redid steps 9..16 exactly
    assert ckpt.read_checkpoint(damaged)["losses"] == first.losses  # the damaged file was replaced by a good one


def test_a_checkpoint_without_weights_is_reported_as_incomplete(tmp_path):
    path = tmp_path / "checkpoint-step00000001.pt"
    ckpt.save_checkpoint_atomic({"format_version": ckpt.CHECKPOINT_FORMAT_VERSION, "step": 1}, path)
    with pytest.raises(ckpt.CheckpointError, match="incomplete: it has no model, ema"):
        load_checkpoint(path)


def test_an_empty_dataloader_is_refused(schedule, points):
    loader = DataLoader(TensorDataset(points[:10]), batch_size=32, drop_last=True)
    with pytest.raises(ValueError, match="yields no batches.*10 samples, batch_size=32, drop_last=True"):
        train_denoiser(tiny_model(schedule.T), loader, schedule, epochs=1, show_progress=False, device="cpu")


def test_non_finite_guidance_is_refused(schedule):
    model = TimeAndClassConditionedModel(MLPBackbone(2, cond_dim=16, hidden_dim=16), 2, time_emb_dim=16, num_time_steps=schedule.T)
    for w in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="guidance_scale"):
            generate_samples(model, schedule, (2,), 4, class_labels=0, guidance_scale=w, sampler="ddim", steps=3)


def test_temporary_files_of_killed_writers_are_removed_at_the_next_start(tmp_path, schedule, points):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    stale = [tmp_path / f".checkpoint-step00000004.pt.tmp-{dead_pid}", tmp_path / f".train-images-idx3-ubyte.gz.part-{dead_pid}"]
    live = tmp_path / f".checkpoint-step00000006.pt.tmp-{os.getppid()}"  # a writer that is still running
    for path in [*stale, live]:
        path.write_bytes(b"half a file")
    train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, checkpoint_dir=tmp_path, **FAST)
    assert not any(path.exists() for path in stale) and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "checkpoint-step00000008.pt"])

    downloads = tmp_path / "data"
    downloads.mkdir()
    (downloads / f".t10k-labels-idx1-ubyte.gz.tmp-{dead_pid}").write_bytes(b"killed download")
    with pytest.raises(OSError, match="nothing-here"):
        download_file(RemoteFile("t10k-labels-idx1-ubyte.gz", "0" * 32, ((tmp_path / "nothing-here").as_uri(),)), downloads)
    assert list(downloads.iterdir()) == []  # the stale part is gone and the failed download left nothing
    assert remove_stale_temporary_files(tmp_path / "missing") == []


# ----------------------------------------------------------------------------------- one clear error, before any work


def test_a_checkpoint_dir_that_is_a_file_fails_before_training(tmp_path, schedule, points):
    in_the_way = tmp_path / "checkpoints"
    in_the_way.write_text("a file")
    model = tiny_model(schedule.T)
    before = [p.detach().clone() for p in model.parameters()]
    for folder in (in_the_way, in_the_way / "below"):
        with pytest.raises(OSError, match=f"checkpoint_dir {folder} can't be written to"):
            train_denoiser(model, points, schedule, epochs=1, checkpoint_dir=folder, **FAST)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # not one step was taken


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere: no unwritable folder to try")
def test_an_unwritable_checkpoint_dir_fails_before_training(tmp_path, schedule, points):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="checkpoint_dir .* can't be written to"):
        train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, checkpoint_dir=folder, **FAST)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_data_of_another_float_dtype_is_cast_to_the_models(schedule, points, dtype):
    history = train_denoiser(tiny_model(schedule.T), points.to(dtype), schedule, epochs=1, **FAST)
    loader = DataLoader(TensorDataset(points.to(dtype)), batch_size=64)
    history_loader = train_denoiser(tiny_model(schedule.T), loader, schedule, epochs=1, show_progress=False, device="cpu")
    assert history.step == 8 and history_loader.step == 4
    assert all(torch.isfinite(torch.tensor(h.losses)).all() for h in (history, history_loader))


def test_labels_may_be_a_list_but_never_floats(schedule, points):
    model = TimeAndClassConditionedModel(MLPBackbone(2, cond_dim=16, hidden_dim=16), 2, time_emb_dim=16, num_time_steps=schedule.T)
    labels = (points[:, 0] > 0).long()
    from_list = train_denoiser(model, points, schedule, labels=labels.tolist(), epochs=1, **FAST)
    assert from_list.step == 8
    with pytest.raises(TypeError, match="labels must be integer class labels"):
        train_denoiser(model, points, schedule, labels=labels.float(), epochs=1, **FAST)
    with pytest.raises(TypeError, match="class_labels must be integer class labels.*1.7"):
        generate_samples(model, schedule, (2,), 4, class_labels=1.7, sampler="ddim", steps=3)
    with pytest.raises(TypeError, match="num_samples must be an integer.*2.7"):
        generate_samples(model, schedule, (2,), 2.7, sampler="ddim", steps=3)
    assert generate_samples(model, schedule, (2,), 3, class_labels=[0, 1, 1], sampler="ddim", steps=3).shape == (3, 2)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (dict(grad_clip_norm=0.0), r"grad_clip_norm \(None for no clipping\) must be > 0"),
        (dict(log_every=0), "log_every must be >= 1"),
        (dict(lr=float("nan")), "lr must be a finite number"),
        (dict(ema_decay=1.5), "ema_decay must be <= 1"),
        (dict(save_every_steps=0), r"save_every_steps \(None to turn it off\) must be >= 1"),
        (dict(epochs=1.5), "epochs must be an integer"),
        (dict(min_snr_gamma=float("inf")), "min_snr_gamma must be a finite number"),
    ],
)
def test_settings_that_would_freeze_or_break_a_run_are_refused(schedule, points, setting, message):
    with pytest.raises((ValueError, TypeError), match=message):
        train_denoiser(tiny_model(schedule.T), points, schedule, **({"epochs": 1, **FAST} | setting))


def test_resuming_with_another_schedule_or_target_is_refused(tmp_path, schedule, points):
    train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, checkpoint_dir=tmp_path, **FAST)
    other = LinearNoiseSchedule(schedule.T, beta_start=1e-4, beta_end=0.02)
    with pytest.raises(ValueError, match="noise schedule name=linear, time_steps=50, beta_start=0.001.*beta_start=0.0001"):
        train_denoiser(tiny_model(schedule.T), points, other, epochs=2, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match="noise schedule name=linear.*name=cosine"):
        train_denoiser(tiny_model(schedule.T), points, CosineNoiseSchedule(schedule.T), epochs=2, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match="trained to predict 'eps' but this model predicts 'v'"):
        train_denoiser(tiny_model(schedule.T, prediction_type="v"), points, schedule, epochs=2, checkpoint_dir=tmp_path, **FAST)


class WrongShape(nn.Module):
    """A plain module (no wrapper) whose output is (B, 1) for (B, 2) inputs: a loss would broadcast silently."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def test_any_model_whose_output_shape_differs_from_x_is_refused(schedule, points):
    with pytest.raises(ValueError, match=r"WrongShape returned shape \(32, 1\) for an input x_t of shape \(32, 2\)"):
        train_denoiser(WrongShape(), points, schedule, epochs=1, **FAST)
