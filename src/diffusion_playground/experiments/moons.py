"""The moons experiment: an MLP denoiser trained on 2-D moons, sampled and measured.

``python -m diffusion_playground train moons`` and ``make demo`` run :func:`run_moons`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from diffusion_playground.data.moons import load_moons
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
    """Settings of the moons experiment; the defaults train in about a minute on a laptop CPU."""

    num_points: int = 8000  # training set size
    noise: float = 0.05  # sklearn make_moons noise
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


def build_moons_model(config: MoonsConfig) -> TimeConditionedModel:
    backbone = MLPBackbone(
        data_dim=2, cond_dim=config.time_emb_dim, hidden_dim=config.hidden_dim, num_blocks=config.num_blocks
    )
    return TimeConditionedModel(backbone, time_emb_dim=config.time_emb_dim, num_time_steps=config.time_steps)


def run_moons(
    config: MoonsConfig, out_dir: str | Path, *, device: str | torch.device = "cpu", show_progress: bool = True
) -> dict[str, object]:
    """Train, sample, measure and plot; returns the quality figures and the paths written."""
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    data = load_moons(config.num_points, noise=config.noise, seed=config.seed)
    schedule = LinearNoiseSchedule.scaled(config.time_steps)  # Ho et al. 2020's schedule at T = 1000
    model = build_moons_model(config)
    start = time.perf_counter()
    history = train_denoiser(
        model, data, schedule, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
        ema_decay=config.ema_decay, checkpoint_dir=out_dir / "checkpoints", seed=config.seed,
        device=device, show_progress=show_progress,
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
        load_moons(n, noise=config.noise, seed=config.seed + 1001),
        load_moons(n, noise=config.noise, seed=config.seed + 2002),
    )
    paths = {name: out_dir / f"{name}.png" for name in ("samples", "loss_curve", "trajectory")}
    plot_samples_2d(samples, data[:n], title="DDPM samples vs data", path=paths["samples"])
    plot_loss_curve(history.losses, path=paths["loss_curve"])
    plot_trajectory_2d(trajectory[:, :1000], path=paths["trajectory"])
    return run_summary(history, paths, config, train_seconds=train_seconds, sample_seconds=sample_seconds, quality=quality)
