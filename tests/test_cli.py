"""The command line that `make demo` runs, end to end in a subprocess."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffusion_playground", *args], capture_output=True, text=True, timeout=600)


def test_help_lists_the_train_command():
    result = run_cli("--help")
    assert result.returncode == 0 and "train" in result.stdout


def test_train_moons_writes_figures_checkpoint_and_quality(tmp_path):
    out = tmp_path / "moons"
    result = run_cli("train", "moons", "--epochs", "1", "--out", str(out), "--device", "cpu", "--num-samples", "500", "--no-progress")
    assert result.returncode == 0, result.stderr
    for name in ("samples.png", "loss_curve.png", "trajectory.png"):
        assert (out / name).stat().st_size > 1000, name
        assert str(out / name) in result.stdout
    assert (out / "checkpoints" / "checkpoint-step00000032.pt").is_file()
    assert "sliced Wasserstein-2" in result.stdout and "MMD^2" in result.stdout


def test_bad_arguments_are_refused_with_a_message():
    result = run_cli("train", "moons", "--epochs", "0")
    assert result.returncode != 0 and "--epochs must be >= 1" in result.stderr
    result = run_cli("train", "cifar100")
    assert result.returncode != 0 and "invalid choice" in result.stderr
