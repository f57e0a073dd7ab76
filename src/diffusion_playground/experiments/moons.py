"""The 2-D toy experiment: an MLP denoiser trained on moons (or another 2-D toy), sampled and measured.

``python -m diffusion_playground train moons`` and ``make demo`` run :func:`run_moons`; ``train swiss_roll``,
``train eight_gaussians`` and ``train checkerboard`` run it with ``MoonsConfig(dataset=...)``. The checkpoints
record the dataset (:func:`toy_metadata`), so ``sample``/``evaluate`` compare with the right distribution.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from diffusion_playground.data.toys_2d import TOY_DATASETS, load_toy_2d
from diffusion_playground.diffusion.backward import generate_samples
from diffusion_playground.diffusion.noise_schedule import LinearNoiseSchedule
from diffusion_playground.evaluation.metrics import sample_quality
from diffusion_playground.experiments.summary import run_summary
from diffusion_playground.models.backbones.mlp import MLPBackbone
from diffusion_playground.models.time_conditioned_model import TimeConditionedModel
from diffusion_playground.training import distributed
from diffusion_playground.training.denoiser_trainer import train_denoiser
from diffusion_playground.visualization import plot_loss_curve, plot_samples_2d, plot_trajectory_2d


@dataclass
class MoonsConfig:
    """Settings of the 2-D toy experiment (moons by default); the defaults train in about a minute on a laptop CPU."""

    num_points: int = 8000  # training set size
    noise: float = 0.05  # sklearn make_moons noise (moons only; the other toys use their loaders' defaults)
    time_steps: int = 1000  # T of the linear schedule (Ho et al. 2020), its betas scaled by 1000 / T
    hidden_dim: int = 128  # MLP width
    num_blocks: int = 3  # residual FiLM blocks
    time_emb_dim: int = 128
    epochs: int = 60
    batch_size: int = 256
    lr: float = 2e-3
    ema_decay: float = 0.995
    num_eval_samples: int = 4000  # samples compared with as many fresh real points
    seed: int = 0
    dataset: str = "moons"  # a key of data.toys_2d.TOY_DATASETS: moons, swiss_roll, eight_gaussians, checkerboard


def dataset_options(config: MoonsConfig) -> dict[str, float]:
    """The keyword options of ``load_toy_2d(config.dataset, ...)`` that the config sets (moons: its noise)."""
    return {"noise": config.noise} if config.dataset == "moons" else {}


def toy_metadata(config: MoonsConfig) -> dict[str, object]:
    """What the checkpoints of a run record about its data: ``{"dataset": name, "dataset_options": {...}}``,
    read back by :func:`toy_data_of` (``sample``/``evaluate`` of a checkpoint draw fresh data with it)."""
    return {"dataset": config.dataset, "dataset_options": dataset_options(config)}


def toy_data_of(metadata: dict[str, object]) -> tuple[str, dict[str, float]]:
    """``(dataset, options)`` for ``load_toy_2d`` from a checkpoint's metadata; moons with the default noise for
    checkpoints that do not record a dataset (those written before datasets were recorded were moons runs)."""
    if "dataset" not in metadata:
        return "moons", {"noise": MoonsConfig.noise}
    return str(metadata["dataset"]), dict(metadata.get("dataset_options") or {})


def build_moons_model(config: MoonsConfig) -> TimeConditionedModel:
    backbone = MLPBackbone(
        data_dim=2, cond_dim=config.time_emb_dim, hidden_dim=config.hidden_dim, num_blocks=config.num_blocks
    )
    return TimeConditionedModel(backbone, time_emb_dim=config.time_emb_dim, num_time_steps=config.time_steps)


def run_moons(
    config: MoonsConfig, out_dir: str | Path, *, device: str | torch.device = "cpu", show_progress: bool = True
) -> dict[str, object]:
    """Train on ``config.dataset``, sample, measure and plot; returns the quality figures and the paths written.

    The quality figures compare the samples with a fresh sample of the dataset, and a second fresh sample with it
    (the data-vs-data floor, see :func:`~diffusion_playground.evaluation.metrics.sample_quality`).
    """
    if not isinstance(config.dataset, str) or config.dataset not in TOY_DATASETS:
        raise ValueError(f"MoonsConfig.dataset must be one of: {', '.join(TOY_DATASETS)}; got {config.dataset!r}")
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    options = dataset_options(config)
    data = load_toy_2d(config.dataset, config.num_points, seed=config.seed, **options)
    schedule = LinearNoiseSchedule.scaled(config.time_steps)  # Ho et al. 2020's schedule at T = 1000
    model = build_moons_model(config)
    start = time.perf_counter()
    history = train_denoiser(
        model, data, schedule, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
        ema_decay=config.ema_decay, checkpoint_dir=out_dir / "checkpoints", seed=config.seed,
        device=device, show_progress=show_progress, metadata=toy_metadata(config),
    )  # fmt: skip
    train_seconds = time.perf_counter() - start
    if not distributed.is_main_process():  # under torchrun only rank 0 samples, measures and plots
        return run_summary(history, {}, config, train_seconds=train_seconds, sample_seconds=0.0)
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    samples, trajectory = generate_samples(
        history.ema_model, schedule, (2,), config.num_eval_samples, device=device, generator=generator,
        show_progress=show_progress, return_trajectory=True,
    )  # fmt: skip
    sample_seconds = time.perf_counter() - start - train_seconds
    n = config.num_eval_samples
    quality = sample_quality(
        samples.cpu(),
        load_toy_2d(config.dataset, n, seed=config.seed + 1001, **options),
        load_toy_2d(config.dataset, n, seed=config.seed + 2002, **options),
    )
    paths = {name: out_dir / f"{name}.png" for name in ("samples", "loss_curve", "trajectory")}
    plot_samples_2d(samples, data[:n], title="DDPM samples vs data", path=paths["samples"])
    plot_loss_curve(history.losses, path=paths["loss_curve"])
    plot_trajectory_2d(trajectory[:, :1000], path=paths["trajectory"])
    return run_summary(history, paths, config, train_seconds=train_seconds, sample_seconds=sample_seconds, quality=quality)
