"""The reliability promises of the README's "What survives a crash, and what bad input gets" section.

Each test is one promise: no checkpoint lost, no damaged file used, and one clear, early error for each bad input.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import numpy as np
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


# ----------------------------------------------------------------------------------- the siblings of the cases above


def test_the_classifier_cache_never_overwrites_a_file_that_is_not_one(tmp_path, schedule, points):
    from diffusion_playground.evaluation.classifier import load_or_train_classifier

    train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, checkpoint_dir=tmp_path / "run", **FAST)
    checkpoint = tmp_path / "run" / "checkpoint-step00000008.pt"
    text = tmp_path / "notes.txt"
    text.write_text("my notes")
    images, labels = torch.zeros(4, 1, 8, 8), torch.arange(4)
    for path in (checkpoint, text, tmp_path / "run"):
        before = path.read_bytes() if path.is_file() else None
        with pytest.raises(ValueError, match="not a classifier cache"):
            load_or_train_classifier(path, images, labels, 4, epochs=1)
        assert before is None or path.read_bytes() == before
    assert load_checkpoint(tmp_path / "run") is not None


def test_resuming_with_another_lr_weight_decay_or_loss_weighting_is_refused(tmp_path, schedule, points):
    train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, checkpoint_dir=tmp_path, **FAST)
    for setting in (dict(lr=0.5), dict(weight_decay=0.3), dict(loss_weighting="min_snr"), dict(ema_decay=0.9)):
        key, value = next(iter(setting.items()))
        with pytest.raises(ValueError, match=f"written with {key}=.* but this call has {key}={value}"):
            train_denoiser(tiny_model(schedule.T), points, schedule, epochs=2, checkpoint_dir=tmp_path, **FAST, **setting)


def test_load_checkpoint_refuses_a_given_model_that_would_read_the_weights_wrongly(tmp_path, schedule, points):
    train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match="trained with prediction_type='eps' but the given model has prediction_type='v'"):
        load_checkpoint(tmp_path, tiny_model(schedule.T, prediction_type="v"))
    with pytest.raises(ValueError, match="num_time_steps=50 but the given model has num_time_steps=1000"):
        load_checkpoint(tmp_path, tiny_model(1000))
    assert load_checkpoint(tmp_path, tiny_model(schedule.T)) is not None


def test_non_finite_samples_are_reported(schedule):
    model = TimeAndClassConditionedModel(MLPBackbone(2, cond_dim=16, hidden_dim=16), 2, time_emb_dim=16, num_time_steps=schedule.T)
    nn.init.normal_(model.backbone.output[1].weight)  # a model whose class matters, so guidance moves the samples
    with pytest.warns(RuntimeWarning, match="4 of 4 samples contain NaN or infinite values"):
        generate_samples(model, schedule, (2,), 4, class_labels=0, guidance_scale=1e300, sampler="ddim", steps=3)


def test_samplers_refuse_non_finite_or_malformed_sigmas(schedule):
    from diffusion_playground.diffusion.optimal_denoiser import OptimalDenoiser
    from diffusion_playground.diffusion.samplers import sample_euler, sample_heun

    denoiser, x = OptimalDenoiser(torch.randn(16, 2)), torch.randn(4, 2)
    for sigmas in (torch.tensor([5.0, float("nan"), 0.0]), torch.tensor([float("inf"), 1.0, 0.0]), torch.tensor([[5.0, 1.0, 0.0]])):
        with pytest.raises(ValueError, match="sigmas must be a 1-D tensor of finite noise levels"):
            sample_euler(denoiser, x, sigmas)
    for churn in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="s_churn"):
            sample_heun(denoiser, x, torch.tensor([5.0, 1.0, 0.0]), s_churn=churn)


def test_floats_are_refused_where_integers_are_meant(schedule, points):
    from diffusion_playground import LinearNoiseSchedule as Linear
    from diffusion_playground import sample_xt
    from diffusion_playground.diffusion.backward import sample_ddpm
    from diffusion_playground.diffusion.optimal_denoiser import OptimalDenoiser

    with pytest.raises(ValueError, match="t must be an integer tensor"):
        sample_xt(points, schedule, torch.tensor([0.5] * 256))
    with pytest.raises(TypeError, match="time_steps must be an integer"):
        sample_ddpm(tiny_model(schedule.T), torch.randn(4, 2), schedule, time_steps=[40.7, 10.2, 0])
    with pytest.raises(TypeError, match="labels must be integer class labels"):
        OptimalDenoiser(points, torch.rand(256) * 2)
    with pytest.raises(TypeError, match="num_time_steps must be an integer"):
        tiny_model(50.5)
    with pytest.raises(TypeError, match="data_dim must be an integer"):
        MLPBackbone(data_dim=2.5)
    assert Linear(np.int64(10)).T == 10  # numpy and 0-dim torch integers are integers
    assert generate_samples(tiny_model(schedule.T), schedule, (2,), 3, sampler="ddim", steps=np.int64(3)).shape == (3, 2)


def test_bad_objects_are_named_not_dereferenced(schedule, points):
    from diffusion_playground.diffusion.thresholding import ThresholdedDenoiser

    model = tiny_model(schedule.T)
    cases = [
        (lambda: generate_samples(model, None, (2,), 4), TypeError, "noise_schedule must be the NoiseSchedule"),
        (lambda: generate_samples(model, schedule, (2,), 4, generator=42), TypeError, "generator must be a torch.Generator"),
        (lambda: generate_samples(model, schedule, (2,), 4, sampler="ddim", eta=None), TypeError, "eta must be a real number"),
        (lambda: generate_samples(model, schedule, (2,), 4, sampler=["ddim"]), ValueError, "sampler must be one of"),
        (lambda: generate_samples(model, schedule, (2,), 4, device="foo"), ValueError, "device must be 'cpu', 'cuda'"),
        (lambda: train_denoiser(model, points, None, epochs=1, **FAST), TypeError, "noise_schedule must be a NoiseSchedule"),
        (lambda: train_denoiser(MLPBackbone(2), points, schedule, epochs=1, **FAST), TypeError, "MLPBackbone is a backbone"),
        (lambda: train_denoiser(model, points, schedule, epochs=1, seed=2.5, **FAST), TypeError, "seed must be an integer"),
        (lambda: train_denoiser(model, points, schedule, epochs=1, seed=2**63, **FAST), ValueError, "seed must be <="),
        (lambda: ThresholdedDenoiser(model), TypeError, "ThresholdedDenoiser wraps a Denoiser"),
        (lambda: LinearNoiseSchedule.scaled(10), ValueError, "scaled needs time_steps >= 20"),
    ]
    if not torch.cuda.is_available():
        cases.append((lambda: generate_samples(model, schedule, (2,), 4, device="cuda"), ValueError, "torch sees no CUDA GPU"))
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_a_dataloader_of_integers_is_refused_for_a_gaussian_schedule(schedule):
    loader = DataLoader(TensorDataset(torch.randint(0, 5, (64, 2))), batch_size=32)
    with pytest.raises(TypeError, match="yields x of dtype torch.int64; a Gaussian noise schedule needs floating-point"):
        train_denoiser(tiny_model(schedule.T), loader, schedule, epochs=1, show_progress=False, device="cpu")


def test_metrics_refuse_what_would_make_them_nan(points):
    from diffusion_playground.evaluation.metrics import mmd_rbf, sample_quality, sliced_wasserstein

    a, b, c = points[:100], points[100:200], points[200:]
    with pytest.raises(ValueError, match="num_projections must be >= 1"):
        sample_quality(a, b, c[:100], num_projections=0)
    for bandwidth in (0.0, float("nan")):
        with pytest.raises(ValueError, match="bandwidth"):
            mmd_rbf(a, b, bandwidth)
    with pytest.raises(ValueError, match="median pairwise distance of 0"):
        mmd_rbf(a, torch.zeros(50, 2))
    with pytest.raises(ValueError, match="real_reference is the same sample as real"):
        sample_quality(a, b, b)
    with pytest.raises(ValueError, match="the same dimension"):
        sliced_wasserstein(a, torch.randn(100, 3))
    float32 = torch.nn.functional.normalize(torch.randn(2, 8), dim=0)
    assert sliced_wasserstein(a, b, directions=float32) == pytest.approx(sliced_wasserstein(a, b, directions=float32.double()))


def test_plots_refuse_points_that_are_not_2d_and_empty_grids(schedule):
    from diffusion_playground.visualization import plot_image_grid, plot_samples_2d

    with pytest.raises(ValueError, match=r"2-D points, shape \(N, 2\); got \(50, 3\)"):
        plot_samples_2d(torch.randn(50, 3), torch.randn(50, 2))
    with pytest.raises(ValueError, match="N >= 1"):
        plot_image_grid(torch.randn(0, 1, 8, 8), 3)


def test_plot_steps_must_be_integers(schedule, points):
    from diffusion_playground.visualization import plot_denoiser_field_2d, plot_forward_process_2d

    with pytest.raises(TypeError, match=r"steps\[1\] must be an integer; got 10.5"):
        plot_forward_process_2d(points, schedule, [0, 10.5])
    with pytest.raises(TypeError, match=r"time_steps\[0\] must be an integer; got 2.5"):
        plot_denoiser_field_2d(tiny_model(schedule.T), schedule, [2.5])


def test_labels_and_sigmas_of_the_wrong_length_are_named(points):
    from diffusion_playground.diffusion.guidance import ClassifierFreeGuidance
    from diffusion_playground.diffusion.optimal_denoiser import OptimalDenoiser

    labels = torch.arange(points.shape[0]) % 2
    exact = OptimalDenoiser(points, labels)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"labels must be one value or one per sample \(4,\); got 3 values"):
        exact(x, torch.tensor(1.0), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"sigma must be one value or one per sample \(4,\); got 2 values"):
        exact(x, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"labels must be one value or one per sample \(4,\); got 3 values"):
        ClassifierFreeGuidance(exact, 2.0)(x, torch.tensor(1.0), torch.tensor([0, 1, 0]))
    one_label = exact(x, torch.tensor(1.0), torch.tensor(1))  # one label for the batch still broadcasts
    assert torch.equal(one_label, exact(x, torch.tensor(1.0), torch.ones(4, dtype=torch.long)))


def test_a_float64_model_trains_and_samples_in_float64(schedule, points):
    model = tiny_model(schedule.T).double()
    history = train_denoiser(model, points, schedule, epochs=1, **FAST)  # float32 data, cast to the model's float64
    assert history.step == 8 and all(map(np.isfinite, history.losses))
    for sampler in ("ddpm", "ddim", "euler", "heun", "dpmpp_2m"):
        samples = generate_samples(history.ema_model, schedule, (2,), 4, sampler=sampler, steps=4)
        assert samples.dtype == torch.float64 and torch.isfinite(samples).all(), sampler


def test_an_augmentation_that_returns_nothing_is_named(schedule, points):
    with pytest.raises(TypeError, match="augment returned a NoneType for a batch of shape"):
        train_denoiser(tiny_model(schedule.T), points, schedule, epochs=1, augment=lambda x, g: None, **FAST)
