"""What every experiment recipe returns: the files it wrote, its checkpoint, steps and timings, its settings."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from diffusion_playground.training.denoiser_trainer import TrainingHistory


def run_summary(
    history: TrainingHistory, paths: dict[str, Path], config: Any, *, train_seconds: float, sample_seconds: float,
    **extra: object,
) -> dict[str, object]:  # fmt: skip
    """``paths``, ``checkpoint``, ``steps``, ``train_seconds``, ``sample_seconds``, ``config`` (a dict), and ``extra``."""
    return {
        **extra,
        "paths": paths,
        "checkpoint": history.checkpoint_path,
        "steps": history.step,
        "train_seconds": train_seconds,
        "sample_seconds": sample_seconds,
        "config": asdict(config),
    }
