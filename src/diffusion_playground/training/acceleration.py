"""Speed settings of the trainer: mixed precision, memory format, TF32 (all off or harmless on a CPU)."""

from __future__ import annotations

import warnings
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The dtype of the autocast region, or None for plain fp32.

    ``auto``: bf16 on a CUDA GPU that supports it (Ampere and newer), fp16 on older GPUs, fp32 on the CPU.
    bf16 has fp32's exponent range, so it needs no loss scaling; fp16 does (see :func:`grad_scaler`).
    """
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of {('auto', *_DTYPES)}; got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA device (fp16 autocast on the CPU is slow and unscaled); use 'bf16' or 'fp32'")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        warnings.warn(
            "precision='bf16' on a CPU without native bf16 kernels (no AVX-512 or ARM BF16): oneDNN emulates them, "
            "which made a U-Net training step about 5 times slower than fp32 on an AVX2 CPU; use precision='fp32'",
            stacklevel=3,
        )
    return _DTYPES[precision]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has the bf16 kernels oneDNN uses for autocast (AVX-512 on x86, BF16 on ARM).

    Where it has them, bf16 autocast made a training step of the MNIST CPU U-Net 1.7 times faster than fp32 (2 cores
    with AVX-512 BF16); where it has not (an AVX2 CPU), about 5 times slower (MNIST README, section 4).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16 (Micikevicius et al. 2018); a pass-through for every other dtype."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)


def use_channels_last(channels_last: bool | None, data_ndim: int | None, device: torch.device) -> bool:
    """``None`` (auto): channels_last for image batches (B, C, H, W) on CUDA, where convolutions run faster in NHWC.

    ``data_ndim`` is the number of dimensions of a batch, None when unknown (then auto means off).
    """
    if channels_last is None:
        return device.type == "cuda" and data_ndim == 4
    if channels_last and data_ndim not in (4, None):
        raise ValueError(f"channels_last needs image batches (B, C, H, W); the data's batches have {data_ndim} dimensions")
    return channels_last


def enable_tf32(device: torch.device) -> None:
    """Let fp32 matmuls and convolutions use TF32 tensor cores (Ampere and newer): ~10 bits of mantissa, ample for training."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
