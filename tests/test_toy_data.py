"""The 2-D toys next to moons (swiss roll, eight Gaussians, checkerboard), the modes a sample reaches, and a
2-D checkpoint that knows which toy it was trained on."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import make_swiss_roll

from diffusion_playground import load_checkpoint, train_denoiser
from diffusion_playground.__main__ import main
from diffusion_playground.data import (
    TOY_DATASETS,
    eight_gaussians_centres,
    load_checkerboard,
    load_eight_gaussians,
    load_moons,
    load_swiss_roll,
    load_toy_2d,
)
from diffusion_playground.data import toys_2d
from diffusion_playground.diffusion.noise_schedule import LinearNoiseSchedule
from diffusion_playground.evaluation import mode_fractions, modes_covered, sample_quality
from diffusion_playground.experiments import from_checkpoint
from diffusion_playground.experiments.from_checkpoint import open_checkpoint
from diffusion_playground.experiments.moons import MoonsConfig, run_moons
from diffusion_playground.training.checkpoint import read_checkpoint, save_checkpoint_atomic
from conftest import tiny_model

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # as in test_cli.py
NEW_TOYS = ("swiss_roll", "eight_gaussians", "checkerboard")


def raw(name: str, points: torch.Tensor, *parameters: float) -> np.ndarray:
    """Undo a loader's standardisation (its cached affine map) to check the geometry in the toy's own units."""
    mean, std = toys_2d._statistics(name, *parameters)
    return points.double().numpy() * std + mean


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_every_toy_is_float32_n_by_2_and_standardised(name):
    assert set(TOY_DATASETS) == {"moons", *NEW_TOYS}
    small = load_toy_2d(name, 7, seed=3)
    assert small.shape == (7, 2) and small.dtype == torch.float32
    points = load_toy_2d(name, 100_000, seed=7)
    assert points.mean(dim=0).abs().max() < 0.02, points.mean(dim=0)
    assert (points.std(dim=0) - 1).abs().max() < 0.02, points.std(dim=0)


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_a_seed_gives_the_same_points_and_other_seeds_independent_ones(name):
    assert torch.equal(load_toy_2d(name, 500, seed=4), load_toy_2d(name, 500, seed=4))
    first, second = load_toy_2d(name, 20_000, seed=0), load_toy_2d(name, 20_000, seed=1)
    assert not torch.equal(first, second)
    for axis in range(2):
        correlation = np.corrcoef(first[:, axis].numpy(), second[:, axis].numpy())[0, 1]
        assert abs(correlation) < 0.05, (name, axis, correlation)


def test_the_registry_uses_the_loaders_and_moons_is_load_moons():
    assert torch.equal(load_toy_2d("moons", 300, seed=2), load_moons(300, seed=2))
    assert torch.equal(load_toy_2d("moons", 300, seed=2, noise=0.1), load_moons(300, noise=0.1, seed=2))
    assert torch.equal(load_toy_2d("swiss_roll", 300, seed=2), load_swiss_roll(300, seed=2))
    eight = load_toy_2d("eight_gaussians", 300, seed=2, std=0.05)
    assert torch.equal(eight, load_eight_gaussians(300, std=0.05, seed=2))
    assert torch.equal(load_toy_2d("checkerboard", 300, seed=2), load_checkerboard(300, seed=2))


@pytest.mark.parametrize("name", NEW_TOYS)
def test_the_standardisation_is_one_fixed_map_not_each_samples_own_statistics(name):
    """A small sample is not centred on its own mean: every sample goes through the one cached affine map."""
    small = load_toy_2d(name, 50, seed=5)
    assert small.mean(dim=0).abs().max() > 1e-3 and (small.std(dim=0) - 1).abs().max() > 1e-3
    misses = toys_2d._statistics.cache_info().misses
    load_toy_2d(name, 50, seed=6)
    assert toys_2d._statistics.cache_info().misses == misses  # estimated once, then reused


def test_unknown_names_and_bad_arguments_are_refused_with_the_names():
    with pytest.raises(ValueError, match="unknown 2-D toy dataset 'spiral'; choose one of: moons, swiss_roll, "
                                         "eight_gaussians, checkerboard"):  # fmt: skip
        load_toy_2d("spiral", 10)
    with pytest.raises(ValueError, match="choose one of"):
        load_toy_2d(None, 10)
    with pytest.raises(TypeError, match="points only"):
        load_toy_2d("moons", 10, return_labels=True)
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        load_swiss_roll(0)
    with pytest.raises(TypeError, match="n_samples must be an integer"):
        load_checkerboard(2.5)
    with pytest.raises(ValueError, match="noise must be a finite number"):
        load_swiss_roll(10, noise=float("nan"))
    with pytest.raises(ValueError, match="std must be >= 0"):
        load_eight_gaussians(10, std=-0.1)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        load_checkerboard(10, seed=-1)
    with pytest.raises(ValueError, match="MoonsConfig.dataset must be one of: moons, swiss_roll"):
        run_moons(MoonsConfig(dataset="rings", epochs=1), "unused", show_progress=False)


def test_the_swiss_roll_is_sklearns_x_and_z_and_lies_on_the_spiral():
    points, _ = make_swiss_roll(n_samples=400, noise=1.0, random_state=3)
    mean, std = toys_2d._statistics("swiss_roll", 1.0)
    expected = torch.as_tensor((points[:, [0, 2]] - mean) / std, dtype=torch.float32)
    assert torch.allclose(load_swiss_roll(400, seed=3), expected)
    x, z = raw("swiss_roll", load_swiss_roll(20_000, noise=0.0, seed=1), 0.0).T
    t = np.hypot(x, z)  # on the spiral (t cos t, t sin t) the radius is t ...
    assert t.min() > 1.5 * np.pi - 1e-3 and t.max() < 4.5 * np.pi + 1e-3
    off = np.angle(np.exp(1j * (t - np.arctan2(z, x))))  # ... and the angle is t (mod 2 pi)
    assert np.abs(off).max() < 1e-3
    x, z = raw("swiss_roll", load_swiss_roll(20_000, noise=0.3, seed=1), 0.3).T
    off = np.angle(np.exp(1j * (np.hypot(x, z) - np.arctan2(z, x))))  # radial distance to the nearest arm
    assert 0.15 < np.median(np.abs(off)) < 0.25 and np.quantile(np.abs(off), 0.99) < 1.0  # 0.674 and 2.58 x 0.3


def test_eight_gaussians_fill_their_eight_modes_evenly_with_the_given_std():
    std, n = 0.05, 80_000
    samples = load_eight_gaussians(n, std=std, seed=2)
    centres = eight_gaussians_centres(std=std)
    scale = math.sqrt(0.5 + std**2)  # the per-axis std of the mixture: centres on the unit circle
    assert centres.shape == (8, 2) and centres.dtype == torch.float32
    assert torch.allclose(centres.norm(dim=1), torch.full((8,), 1 / scale), atol=0.01)
    angles = torch.atan2(centres[:, 1], centres[:, 0])
    off = torch.remainder(angles - torch.arange(8) * math.pi / 4 + math.pi, 2 * math.pi) - math.pi
    assert off.abs().max() < 0.01
    nearest = torch.cdist(samples, centres).argmin(dim=1)
    counts = torch.bincount(nearest, minlength=8)
    assert (counts - n / 8).abs().max() < 0.05 * n / 8, counts
    residual = samples - centres[nearest]
    assert torch.allclose(residual.mean(dim=0), torch.zeros(2), atol=0.01)
    assert torch.allclose(residual.std(dim=0), torch.full((2,), std / scale), rtol=0.03), residual.std(dim=0)
    assert torch.allclose(residual.norm(dim=1).mean(), torch.tensor(std / scale * math.sqrt(math.pi / 2)), rtol=0.03)


def test_the_checkerboard_is_uniform_on_its_eight_black_squares():
    x, y = raw("checkerboard", load_checkerboard(40_000, seed=6)).T
    assert x.min() > -2 - 1e-5 and x.max() < 2 + 1e-5 and y.min() > -2 - 1e-5 and y.max() < 2 + 1e-5
    column, row = np.floor(x + 1e-6), np.floor(y + 1e-6)
    inside = (np.abs(x - np.round(x)) > 1e-5) & (np.abs(y - np.round(y)) > 1e-5)  # float32 rounding at the edges
    assert np.all((column + row)[inside] % 2 == 0), "a point lies on a white square"
    cells, counts = np.unique(np.stack([column, row], axis=1)[inside], axis=0, return_counts=True)
    assert len(cells) == 8 and np.abs(counts / inside.sum() - 1 / 8).max() < 0.01
    assert abs(np.mean(x - np.floor(x) < 0.5) - 0.5) < 0.01 and abs(np.mean(y - np.floor(y) < 0.5) - 0.5) < 0.01


def test_modes_covered_counts_the_modes_a_sample_reaches():
    centres = eight_gaussians_centres()
    noise = 0.05 * torch.randn(800, 2, generator=torch.Generator().manual_seed(0))
    every_mode = centres.repeat_interleave(100, dim=0) + noise
    assert modes_covered(every_mode, centres) == 8
    assert torch.allclose(mode_fractions(every_mode, centres), torch.full((8,), 1 / 8, dtype=torch.float64))
    six = every_mode[~torch.isin(torch.arange(800) // 100, torch.tensor([2, 5]))]
    assert modes_covered(six, centres) == 6
    assert mode_fractions(six, centres)[[2, 5]].tolist() == [0.0, 0.0]
    few = torch.cat([six, centres[2].expand(5, 2)])  # mode 2 gets 5 of 605 samples (0.8%)
    assert modes_covered(few, centres) == 6 and modes_covered(few, centres, min_fraction=0.005) == 7
    assert modes_covered(torch.zeros(100, 2), centres) == 0  # nearest some centre, but within no radius
    assert modes_covered(torch.zeros(100, 2), centres, radius=2.0) == 1  # argmin picks one centre for the origin
    with pytest.raises(ValueError, match="centres must be a tensor of shape"):
        modes_covered(every_mode, centres[:, :1])
    with pytest.raises(ValueError, match="with one centre pass radius="):
        modes_covered(every_mode, centres[:1])
    with pytest.raises(ValueError, match="min_fraction must be > 0"):
        modes_covered(every_mode, centres, min_fraction=0.0)
    with pytest.raises(ValueError, match="radius must be > 0"):
        mode_fractions(every_mode, centres, radius=0.0)


def test_a_checkpoint_records_its_metadata_and_resuming_with_other_metadata_is_refused(tmp_path, points, schedule):
    run = tmp_path / "run"
    settings = {"epochs": 1, "batch_size": 128, "checkpoint_dir": run, "show_progress": False, "device": "cpu"}
    train_denoiser(tiny_model(), points, schedule, metadata={"dataset": "checkerboard", "sizes": (1, 2)}, **settings)
    _, metadata = load_checkpoint(run, device="cpu", with_metadata=True)
    assert metadata == {"dataset": "checkerboard", "sizes": [1, 2]}
    _, loaded_schedule, metadata = load_checkpoint(run, device="cpu", with_schedule=True, with_metadata=True)
    assert isinstance(loaded_schedule, LinearNoiseSchedule) and metadata["dataset"] == "checkerboard"
    with pytest.raises(ValueError, match="written with metadata=.*'checkerboard'.* but this call has metadata="):
        train_denoiser(tiny_model(), points, schedule, metadata={"dataset": "moons"}, **{**settings, "epochs": 2})
    with pytest.raises(TypeError, match=r"metadata\['model'\] is a Tensor"):
        train_denoiser(tiny_model(), points, schedule, metadata={"model": torch.ones(1)}, **settings)


@pytest.fixture(scope="module")
def swiss_roll_run(tmp_path_factory):
    """`train swiss_roll` in a fresh folder: its output goes to the default outputs/swiss_roll."""
    folder = tmp_path_factory.mktemp("toy_cli")
    result = subprocess.run(
        [sys.executable, "-m", "diffusion_playground", "train", "swiss_roll", "--epochs", "1", "--num-samples", "200",
         "--device", "cpu", "--no-progress"],
        check=False, capture_output=True, text=True, timeout=600, env=ONE_THREAD, cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder / "outputs" / "swiss_roll", result


def floor_of(shown: str) -> float:
    return float(re.search(r"sliced Wasserstein-2: \S+ +floor (\S+)", shown).group(1))


def test_train_swiss_roll_then_evaluate_and_sample_compare_with_the_swiss_roll(
    swiss_roll_run, capsys, tmp_path, monkeypatch
):
    out, result = swiss_roll_run
    assert "vs 200 fresh swiss_roll points" in result.stdout
    checkpoints = out / "checkpoints"
    assert (out / "samples.png").stat().st_size > 1000 and (checkpoints / "checkpoint-step00000032.pt").is_file()
    trained = open_checkpoint(checkpoints)
    assert trained.dataset == "swiss_roll" and trained.metadata == {"dataset": "swiss_roll", "dataset_options": {}}

    assert main(["evaluate", str(checkpoints), "--n", "300", "--steps", "10", "--device", "cpu", "--no-progress"]) == 0
    shown = capsys.readouterr().out
    assert "300 samples vs 300 fresh swiss_roll points" in shown

    def data_floor(name: str) -> float:  # what evaluate measures between its two fresh samples (seeds 1001, 2002)
        fresh = load_toy_2d(name, 300, seed=1001)
        figures = sample_quality(fresh, fresh, load_toy_2d(name, 300, seed=2002))
        return round(figures["sliced_wasserstein_floor"], 4)
    assert floor_of(shown) == data_floor("swiss_roll") != data_floor("moons")

    asked = []  # `sample` plots the samples over fresh points of the same toy
    def recording(name, *args, **kwargs):
        asked.append(name)
        return load_toy_2d(name, *args, **kwargs)

    monkeypatch.setattr(from_checkpoint, "load_toy_2d", recording)
    out_stem = str(tmp_path / "s")
    assert main(["sample", str(checkpoints), "--n", "50", "--steps", "3", "--out", out_stem, "--no-progress"]) == 0
    assert asked == ["swiss_roll"] and (tmp_path / "s.png").stat().st_size > 1000

    # a 2-D checkpoint from before datasets were recorded is a moons run
    state = read_checkpoint(checkpoints / "checkpoint-step00000032.pt")
    del state["metadata"]
    save_checkpoint_atomic(state, tmp_path / "checkpoint-step00000032.pt")
    legacy = open_checkpoint(tmp_path / "checkpoint-step00000032.pt")
    assert legacy.dataset == "moons" and torch.equal(legacy.real_points(50, seed=1), load_moons(50, seed=1))
