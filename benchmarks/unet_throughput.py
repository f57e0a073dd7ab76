"""Training and sampling throughput (images/s) of the CIFAR-10 U-Nets, fp32 vs bf16 vs bf16 + channels_last + compile.

For each preset (``unet_small``, ``unet_large``) wrapped in the class-conditional model of the CIFAR-10 notebook,
and each speed setting, measured in one run on whatever device is present (CUDA if available, else the CPU):

* training: ``train_denoiser`` itself (AdamW, autocast, gradient clipping, EMA; no checkpoints) on random
  32x32 images with labels: one call of ``--warmup`` steps (cuDNN autotuning, compilation), then a timed call
  of ``--train-steps`` steps; images/s = batch x steps / time;
* sampling: ``generate_samples(..., sampler="ddim", steps=--sample-steps)`` for one batch, after one warm-up
  call; images/s = batch / time (one network evaluation per step), also given as network evaluations x images/s.

Ratios are against fp32 in the same run. On the CPU the defaults are a batch of 8 and a few steps, and
``torch.compile`` and ``unet_large`` are skipped unless ``--all`` (printed as skipped).

    .venv/bin/python benchmarks/unet_throughput.py            # GPU: batch 128; CPU: batch 8
    .venv/bin/python benchmarks/unet_throughput.py --all --batch 16 --train-steps 5
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffusion_playground import LinearNoiseSchedule, TimeAndClassConditionedModel, generate_samples, train_denoiser
from diffusion_playground.models.backbones.unet import unet_large, unet_small

PRESETS: dict[str, Callable[..., torch.nn.Module]] = {"unet_small": unet_small, "unet_large": unet_large}


@dataclass(frozen=True)
class Setting:
    """One speed setting: the trainer's precision / channels_last / compile options."""

    name: str
    precision: str  # "fp32" or "bf16"
    channels_last: bool
    compile: bool


SETTINGS = (
    Setting("fp32", "fp32", channels_last=False, compile=False),
    Setting("bf16", "bf16", channels_last=False, compile=False),
    Setting("bf16 + channels_last + compile", "bf16", channels_last=True, compile=True),
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(preset: str, time_steps: int) -> TimeAndClassConditionedModel:
    backbone = PRESETS[preset](128)  # prints the parameter count
    return TimeAndClassConditionedModel(backbone, num_classes=10, time_emb_dim=128, num_time_steps=time_steps)


def train_throughput(model, schedule, setting: Setting, device, batch: int, warmup: int, steps: int) -> float:
    """Images/s of train_denoiser's optimizer steps, timed after a warm-up call on the same model."""
    generator = torch.Generator().manual_seed(0)
    n = batch * max(warmup, steps)  # one epoch holds every step of either call
    data = torch.randn(n, 3, 32, 32, generator=generator).clamp(-1, 1)  # (n, 3, 32, 32)
    labels = torch.randint(0, 10, (n,), generator=generator)  # (n,)
    options = {
        "labels": labels, "epochs": 1, "batch_size": batch, "lr": 2e-4, "device": device,
        "precision": setting.precision, "channels_last": setting.channels_last, "compile": setting.compile,
        "show_progress": False, "log_every": 10**9,
    }  # fmt: skip
    train_denoiser(model, data, schedule, max_steps=warmup, **options)  # autotuning, compilation, allocator
    synchronize(device)
    start = time.perf_counter()
    train_denoiser(model, data, schedule, max_steps=steps, **options)
    synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def sample_throughput(model, schedule, setting: Setting, device, batch: int, steps: int) -> float:
    """Images/s of DDIM sampling with ``steps`` network evaluations, timed after one warm-up call."""
    model = model.to(device).eval()
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    sampler_model = torch.compile(model) if setting.compile else model
    dtype = torch.bfloat16 if setting.precision == "bf16" else None
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    labels = torch.arange(batch) % 10

    def run() -> None:
        with torch.no_grad(), autocast:
            generate_samples(sampler_model, schedule, (3, 32, 32), batch, sampler="ddim", steps=steps,
                             class_labels=labels, device=device, generator=torch.Generator(device).manual_seed(0))  # fmt: skip

    run()
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return batch / (time.perf_counter() - start)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 128 on CUDA, 8 on the CPU)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed optimizer steps (default: 50 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up optimizer steps (default: 10 CUDA, 1 CPU)")
    parser.add_argument(
        "--sample-steps", type=int, default=None, help="DDIM steps per sampling run (default: 20 CUDA, 2 CPU)"
    )
    parser.add_argument("--all", action="store_true", help="on the CPU too: unet_large and torch.compile")
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=list(PRESETS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    batch = args.batch or (128 if on_gpu else 8)
    train_steps = args.train_steps or (50 if on_gpu else 3)
    warmup = args.warmup or (10 if on_gpu else 1)
    sample_steps = args.sample_steps or (20 if on_gpu else 2)
    presets = list(args.presets)
    settings = list(SETTINGS)
    skipped = []
    if not on_gpu and not args.all:
        if "unet_large" in presets:
            presets.remove("unet_large")
            skipped.append("unet_large (53M parameters: minutes per step on a CPU)")
        settings = [s for s in settings if not s.compile]
        skipped.append("bf16 + channels_last + compile (compilation takes minutes on a CPU)")
    schedule = LinearNoiseSchedule(1000)

    rows = []
    for preset in presets:
        baseline = None
        for setting in settings:
            torch.manual_seed(0)
            model = build_model(preset, schedule.T)
            train = train_throughput(model, schedule, setting, device, batch, warmup, train_steps)
            sample = sample_throughput(model, schedule, setting, device, batch, sample_steps)
            baseline = baseline or (train, sample)
            rows.append((preset, setting.name, train, train / baseline[0], sample, sample / baseline[1]))
            print(f"  {preset:10} {setting.name:32} train {train:9.1f} img/s   sample {sample:9.2f} img/s", flush=True)
            del model
            if on_gpu:
                torch.cuda.empty_cache()

    print(f"\nDevice: {device_name(device)}; torch {torch.__version__}; batch {batch}; training: {train_steps} "
          f"train_denoiser steps after {warmup} warm-up; sampling: DDIM with {sample_steps} steps (one network "
          "evaluation each), after one warm-up run.\n")  # fmt: skip
    print("| model | setting | training img/s | vs fp32 | sampling img/s | vs fp32 | network evals x img/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for preset, name, train, train_ratio, sample, sample_ratio in rows:
        print(f"| {preset} | {name} | {train:.1f} | {train_ratio:.2f}x | {sample:.2f} | {sample_ratio:.2f}x "
              f"| {sample * sample_steps:.1f} |")  # fmt: skip
    for item in skipped:
        print(f"\nskipped: {item}; pass --all to run it")


if __name__ == "__main__":
    main()
