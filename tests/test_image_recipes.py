"""Which image recipe runs where (the full one on a GPU with the whole dataset, else the CPU one), and the CLI
pipeline on the real 4,000-digit MNIST sample written as IDX files."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusion_playground import generate_samples, load_checkpoint
from diffusion_playground.__main__ import main
from diffusion_playground.data import write_mnist_sample_idx
from diffusion_playground.experiments import images as images_module
from diffusion_playground.experiments.images import IMAGE_RECIPES, choose_recipe, epochs_for

MNIST = IMAGE_RECIPES["mnist"]


def test_auto_runs_the_full_recipe_only_on_a_gpu_with_the_whole_dataset():
    assert choose_recipe(MNIST, num_images=60_000, device="cuda")[0] == "full"
    assert choose_recipe(MNIST, num_images=4_000, device="cuda")[0] == "cpu"
    assert choose_recipe(MNIST, num_images=60_000, device="cpu")[0] == "cpu"
    name, backbone, config = choose_recipe(MNIST, "full", num_images=4_000, device="cpu")
    assert (name, backbone, config) == ("full", MNIST.backbone, MNIST.defaults)
    config = choose_recipe(MNIST, "cpu", num_images=60_000, device="cuda")[2]
    assert dataclasses.replace(config, precision=MNIST.cpu_defaults.precision) == MNIST.cpu_defaults
    # datasets without a CPU recipe always run their one recipe, and refuse a forced "cpu"
    assert choose_recipe(IMAGE_RECIPES["cifar10"], num_images=100, device="cpu")[0] == "full"
    with pytest.raises(ValueError, match="no CPU recipe"):
        choose_recipe(IMAGE_RECIPES["cifar10"], "cpu", num_images=100, device="cpu")
    with pytest.raises(ValueError, match="'auto', 'full' or 'cpu'"):
        choose_recipe(MNIST, "gpu", num_images=100, device="cpu")


@pytest.mark.parametrize("native_bf16", [True, False])
def test_the_cpu_recipe_autocasts_to_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, native_bf16):
    # emulated bf16 made a training step of this U-Net about 5 times slower than fp32 on an AVX2 CPU
    monkeypatch.setattr(images_module, "cpu_has_fast_bf16", lambda: native_bf16)
    config = choose_recipe(MNIST, "cpu", num_images=4_000, device="cpu")[2]
    assert MNIST.cpu_defaults.precision == "bf16"
    assert config.precision == ("bf16" if native_bf16 else "fp32")
    assert dataclasses.replace(config, precision="bf16") == MNIST.cpu_defaults  # nothing else changes


def test_a_step_budget_becomes_whole_epochs_of_the_data_at_hand():
    config = MNIST.cpu_defaults
    steps_per_epoch = -(-4000 // config.batch_size)
    assert abs(epochs_for(config, 4000) * steps_per_epoch - config.train_steps) <= steps_per_epoch / 2
    assert epochs_for(MNIST.defaults, 60_000) == MNIST.defaults.epochs  # no step budget: the recipe's epochs


def test_cli_trains_samples_and_evaluates_on_the_real_sample(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "run"
    write_mnist_sample_idx(data)  # 4,000 + 1,000 real digits as the official IDX files
    assert main(["train", "mnist", "--data", str(data), "--quick", "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0  # fmt: skip
    shown = capsys.readouterr().out
    assert "mnist: the cpu recipe. Trained 20 steps" in shown
    assert main(["sample", str(out / "checkpoints"), "--n", "1", "--steps", "2", "--out", str(tmp_path / "s"),
                 "--no-progress"]) == 0  # fmt: skip
    samples = torch.load(tmp_path / "s.pt")["samples"]
    assert samples.shape == (10, 1, 28, 28) and samples.abs().max() <= 1.0
    classifier = tmp_path / "judge.pt"
    assert main(["evaluate", str(out / "checkpoints"), "--data", str(data), "--n", "2", "--steps", "2",
                 "--classifier", str(classifier), "--no-progress"]) == 0  # fmt: skip
    shown = capsys.readouterr().out
    accuracy_real = float(shown.split("on real test images ")[1].split("%")[0])
    assert accuracy_real > 90.0  # the judge, trained on the 4,000 real digits, reads the 1,000 real test digits
    assert classifier.is_file()


@pytest.mark.parametrize(("objective", "process", "wrapper"), [
    ("flow", "RectifiedFlow", "TimeAndClassConditionedModel"), ("edm", "EDMDiffusion", "EDMPreconditioner"),
])  # fmt: skip
def test_an_objective_trains_its_process_and_the_checkpoint_rebuilds_both(tmp_path, objective, process, wrapper):
    result = images_module.run_images("digits", tmp_path, quick=True, objective=objective, show_progress=False)
    model, schedule = load_checkpoint(tmp_path / "checkpoints", with_schedule=True)
    assert (type(schedule).__name__, type(model).__name__) == (process, wrapper)
    assert result["steps"] == 20 and model.num_classes == 10
    samples = generate_samples(model, schedule, (1, 8, 8), 2, sampler="dpmpp_2m", steps=4, class_labels=3, clip_denoised=True)
    assert samples.shape == (2, 1, 8, 8) and samples.abs().max() <= 1


def test_an_unknown_objective_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="the objective must be one of"):
        images_module.run_images("digits", tmp_path, quick=True, objective="score")
    assert not (tmp_path / "checkpoints").exists()
