"""Shared fixtures: tiny models and datasets that train in seconds on a CPU."""

from __future__ import annotations

import os

import pytest
import torch

from diffusion_playground import LinearNoiseSchedule, MLPBackbone, TimeConditionedModel

os.environ.setdefault("DP_QUICK", "1")
torch.set_num_threads(1)  # small tensors: threads cost more than they give, and 2-core CI stays predictable


def tiny_model(time_steps: int = 50, prediction_type: str = "eps", hidden_dim: int = 32) -> TimeConditionedModel:
    backbone = MLPBackbone(data_dim=2, cond_dim=16, hidden_dim=hidden_dim, num_blocks=2)
    return TimeConditionedModel(backbone, time_emb_dim=16, num_time_steps=time_steps, prediction_type=prediction_type)


@pytest.fixture
def schedule() -> LinearNoiseSchedule:
    return LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2)


@pytest.fixture
def points() -> torch.Tensor:
    return torch.randn(256, 2, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def gaussian_schedule() -> LinearNoiseSchedule:
    """The schedule of the Gaussian-data sampler tests (test_sampling.py, test_samplers.py)."""
    return LinearNoiseSchedule(200, beta_start=1e-3, beta_end=0.05)
