"""The 2-D toy distributions next to moons: a swiss roll, eight Gaussians on a circle, a checkerboard.

Each loader returns float32 points of shape (n, 2), standardised to zero mean and unit variance per axis like
:func:`~diffusion_playground.data.moons.load_moons`: the mean and std of each distribution are estimated once on a
large fixed sample and cached, so training data and fresh evaluation samples share one affine map.
:func:`load_toy_2d` chooses a toy by name (the keys of :data:`TOY_DATASETS`).

Different seeds give independent samples of the same distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from sklearn.datasets import make_swiss_roll
from torch import Tensor

from diffusion_playground.checks import check_integer, check_real
from diffusion_playground.data.moons import load_moons

_REFERENCE_SIZE = 200_000
_REFERENCE_SEED = 12345
SWISS_ROLL_NOISE = 1.0  # the noise of FFJORD's toy swiss roll (sklearn units, before standardisation)
EIGHT_GAUSSIANS_STD = 0.125  # per-axis std of each Gaussian; the centres are on the unit circle
# The black squares of the 4x4 board on [-2, 2]^2: cell (i, j) = [i - 2, i - 1) x [j - 2, j - 1) with i + j even.
_BLACK_SQUARES = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=np.float64)


def _raw_swiss_roll(n: int, noise: float, seed: int) -> np.ndarray:
    points, _ = make_swiss_roll(n_samples=n, noise=noise, random_state=seed)
    return points[:, [0, 2]]  # x = t cos t, z = t sin t (y is the roll's width)


def _raw_eight_gaussians(n: int, std: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * rng.integers(0, 8, size=n) / 8
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) + std * rng.standard_normal((n, 2))


def _raw_checkerboard(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    squares = _BLACK_SQUARES[rng.integers(0, len(_BLACK_SQUARES), size=n)]
    return squares - 2 + rng.random((n, 2))


_RAW: dict[str, Callable[..., np.ndarray]] = {
    "swiss_roll": _raw_swiss_roll, "eight_gaussians": _raw_eight_gaussians, "checkerboard": _raw_checkerboard,
}  # fmt: skip


@lru_cache(maxsize=16)
def _statistics(name: str, *parameters: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis mean and std of a toy distribution, estimated once on a large fixed sample (float64)."""
    points = _RAW[name](_REFERENCE_SIZE, *parameters, _REFERENCE_SEED)
    return points.mean(axis=0), points.std(axis=0, ddof=1)


def _standardised(name: str, points: np.ndarray, *parameters: float) -> Tensor:
    mean, std = _statistics(name, *parameters)
    return torch.as_tensor((points - mean) / std, dtype=torch.float32)


def _check_common(n_samples: int, seed: int) -> tuple[int, int]:
    return check_integer("n_samples", n_samples, minimum=1), check_integer("seed", seed, minimum=0, maximum=2**32 - 1)


def load_swiss_roll(n_samples: int = 8000, *, noise: float = SWISS_ROLL_NOISE, seed: int = 0) -> Tensor:
    """``n_samples`` points of the 2-D swiss roll, standardised to zero mean and unit variance per axis.

    The spiral of Sohl-Dickstein et al. 2015 (Fig. 1), here the x and z coordinates of sklearn's
    ``make_swiss_roll``: t ~ U[1.5 pi, 4.5 pi], point = (t cos t, t sin t) + noise * N(0, I_2), before
    standardisation. The default noise 1.0 is that of the toy data in FFJORD's code (Grathwohl et al. 2019).

    Args:
        n_samples: number of points.
        noise: std of the Gaussian noise added to each coordinate (in the spiral's units, before standardisation;
            the arms are 2 pi apart).
        seed: sklearn's random_state.

    Returns:
        a float32 tensor of shape (n_samples, 2).
    """
    n_samples, seed = _check_common(n_samples, seed)
    noise = check_real("noise", noise, minimum=0.0)
    return _standardised("swiss_roll", _raw_swiss_roll(n_samples, noise, seed), noise)


def load_eight_gaussians(n_samples: int = 8000, *, std: float = EIGHT_GAUSSIANS_STD, seed: int = 0) -> Tensor:
    """``n_samples`` points of an equal mixture of 8 Gaussians on a circle, standardised per axis.

    Before standardisation: k ~ U{0, ..., 7}, point = (cos(2 pi k / 8), sin(2 pi k / 8)) + std * N(0, I_2), i.e.
    the centres lie on the unit circle every 45 degrees. The mode-coverage toy of the toy data in FFJORD's code
    (Grathwohl et al. 2019), whose centres have radius 4 and std 0.5: the same proportions as the default std 0.125
    here. A sampler that drops modes shows it at once; :func:`eight_gaussians_centres` and
    :func:`~diffusion_playground.evaluation.metrics.modes_covered` count the modes a sample reaches.

    Args:
        n_samples: number of points.
        std: per-axis std of each Gaussian (the centres are 2 sin(pi / 8) = 0.765 apart), before standardisation.
        seed: seed of the NumPy generator.

    Returns:
        a float32 tensor of shape (n_samples, 2).
    """
    n_samples, seed = _check_common(n_samples, seed)
    std = check_real("std", std, minimum=0.0)
    return _standardised("eight_gaussians", _raw_eight_gaussians(n_samples, std, seed), std)


def eight_gaussians_centres(*, std: float = EIGHT_GAUSSIANS_STD) -> Tensor:
    """The 8 centres of :func:`load_eight_gaussians` (with this ``std``) in its standardised coordinates, (8, 2)
    float32, centre k at angle 2 pi k / 8: what to count the modes of samples against (see ``modes_covered``)."""
    std = check_real("std", std, minimum=0.0)
    angles = 2 * np.pi * np.arange(8) / 8
    return _standardised("eight_gaussians", np.stack([np.cos(angles), np.sin(angles)], axis=1), std)


def load_checkerboard(n_samples: int = 8000, *, seed: int = 0) -> Tensor:
    """``n_samples`` points uniform on the black squares of a 4x4 checkerboard, standardised per axis.

    Before standardisation the board is [-2, 2]^2 in unit squares; the 8 black squares are the cells
    [i, i + 1) x [j, j + 1) with i, j in {-2, -1, 0, 1} and i + j even, each drawn with probability 1/8 and the
    point uniform within it. Its density jumps at every edge: the sharp-edged toy of the toy data in FFJORD's code
    (Grathwohl et al. 2019, there scaled by 2). The exact standardisation would subtract nothing and divide by
    sqrt(4/3) (the estimated one is within 0.5% of it).

    Args:
        n_samples: number of points.
        seed: seed of the NumPy generator.

    Returns:
        a float32 tensor of shape (n_samples, 2).
    """
    n_samples, seed = _check_common(n_samples, seed)
    return _standardised("checkerboard", _raw_checkerboard(n_samples, seed))


TOY_DATASETS: dict[str, Callable[..., Tensor]] = {
    "moons": load_moons,
    "swiss_roll": load_swiss_roll,
    "eight_gaussians": load_eight_gaussians,
    "checkerboard": load_checkerboard,
}
"""The 2-D toys by name: each loader takes ``(n_samples, *, seed=0, **options)`` and returns (n, 2) float32."""


def load_toy_2d(name: str, n_samples: int = 8000, *, seed: int = 0, **options: float) -> Tensor:
    """``n_samples`` standardised points of the 2-D toy ``name`` (a key of :data:`TOY_DATASETS`).

    Args:
        name: ``"moons"``, ``"swiss_roll"``, ``"eight_gaussians"`` or ``"checkerboard"``.
        n_samples: number of points.
        seed: different seeds give independent samples.
        options: the loader's own keyword options (moons and swiss_roll: ``noise``; eight_gaussians: ``std``).

    Returns:
        a float32 tensor of shape (n_samples, 2).
    """
    if not isinstance(name, str) or name not in TOY_DATASETS:
        raise ValueError(f"unknown 2-D toy dataset {name!r}; choose one of: {', '.join(TOY_DATASETS)}")
    if "return_labels" in options:
        raise TypeError("load_toy_2d returns points only; call load_moons(..., return_labels=True) for the moon labels")
    return TOY_DATASETS[name](n_samples, seed=seed, **options)


__all__ = [
    "EIGHT_GAUSSIANS_STD",
    "SWISS_ROLL_NOISE",
    "TOY_DATASETS",
    "eight_gaussians_centres",
    "load_checkerboard",
    "load_eight_gaussians",
    "load_swiss_roll",
    "load_toy_2d",
]
