"""The checks of user-given numbers and labels that every public function shares, with one style of message.

Comparisons with NaN are all False, so ``if value < 0: raise`` lets NaN through; these checks are written
the other way round (``if not minimum <= value``) so a NaN or an infinity never reaches the math.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor


def check_real(
    name: str, value: float, *, minimum: float | None = None, maximum: float | None = None, strict: bool = False
) -> float:
    """``value`` as a float, or a ValueError naming ``name`` unless it is a finite real number in range.

    ``strict=True`` excludes ``minimum`` itself (value > minimum rather than >=).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}")
    if minimum is not None and not (value > minimum if strict else value >= minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}; got {value:g}")
    if maximum is not None and not value <= maximum:
        raise ValueError(f"{name} must be <= {maximum:g}; got {value:g}")
    return value


def check_integer(name: str, value: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int, or an error naming ``name`` unless it is an integer (not a float such as 2.7) in range."""
    if isinstance(value, Tensor) and value.ndim == 0 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r} of type {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {value}")
    return value


def per_sample(name: str, values: Tensor, batch: int) -> Tensor:
    """``values`` as a (batch,) tensor: one value for the whole batch, broadcast, or one per sample; else an error
    naming ``name`` (``expand`` alone would fail with a shape message that names nothing)."""
    values = values.reshape(-1)
    if values.numel() not in (1, batch):
        raise ValueError(f"{name} must be one value or one per sample ({batch},); got {values.numel()} values")
    return values.expand(batch)


def check_device(device: torch.device | str) -> torch.device:
    """``device`` as a torch.device, or a ValueError saying why it can't be used here (no CUDA, a bad name)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but torch sees no CUDA GPU; use device='cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' was asked for but this machine has no Apple GPU; use device='cpu'")
    return device


def labels_tensor(
    name: str, labels: Tensor | Sequence[int] | int, num_classes: int, device: torch.device | str | None = None
) -> Tensor:
    """Class labels (an int, a sequence of ints or an integer tensor) as a long tensor with values in [0, num_classes).

    Refuses floats (1.7, or a float tensor) instead of truncating them to a class.
    """
    if isinstance(labels, (bool, float)) or (isinstance(labels, Tensor) and labels.is_floating_point()):
        raise TypeError(
            f"{name} must be integer class labels (an int, a list of ints or an integer tensor); got "
            f"{'a float tensor' if isinstance(labels, Tensor) else repr(labels)} (use .long() if the values are whole)"
        )
    try:
        tensor = torch.as_tensor(labels, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be integer class labels; got {type(labels).__name__} ({error})") from error
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be integer class labels; got values of dtype {tensor.dtype}")
    tensor = tensor.long()
    if tensor.numel() and (tensor.min() < 0 or tensor.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}); got values from {tensor.min().item()} to {tensor.max().item()}"
        )
    return tensor


__all__ = ["check_device", "check_integer", "check_real", "labels_tensor", "per_sample"]
