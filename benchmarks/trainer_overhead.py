"""What the trainer costs over a bare PyTorch loop, measured in one run.

The same model (the moons demo's MLP), data, batch size and loss are trained K steps by a bare
loop and by train_denoiser (checkpointing off), in interleaved rounds so that both see the same
machine state. Printed: steps/s of each (median over rounds) and the ratio bare/trainer.

    .venv/bin/python benchmarks/trainer_overhead.py [--steps 300] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from diffusion_playground import LinearNoiseSchedule, train_denoiser
from diffusion_playground.data import load_moons
from diffusion_playground.experiments.moons import MoonsConfig, build_moons_model


def bare_loop(model, data, schedule, steps: int, batch_size: int, lr: float) -> None:
    """The 10-line loop: sample a batch, t and eps, regress eps, step Adam."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        x0 = data[torch.randint(0, data.shape[0], (batch_size,))]
        t = torch.randint(0, schedule.T, (batch_size,))
        eps = torch.randn_like(x0)
        a = schedule.alpha_bars[t, None]
        loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def trainer_loop(model, data, schedule, steps: int, batch_size: int, lr: float, **options) -> None:
    epochs = -(-steps * batch_size // data.shape[0])  # enough epochs, cut at exactly `steps`
    train_denoiser(
        model, data, schedule, epochs=epochs, max_steps=steps, batch_size=batch_size, lr=lr,
        show_progress=False, device="cpu", **options,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = MoonsConfig()
    data = load_moons(config.num_points)
    schedule = LinearNoiseSchedule(config.time_steps)
    variants = {
        "bare loop (AdamW, L_simple)": lambda m: bare_loop(m, data, schedule, args.steps, config.batch_size, config.lr),
        "train_denoiser, same features (no clip, constant LR)": lambda m: trainer_loop(
            m, data, schedule, args.steps, config.batch_size, config.lr, grad_clip_norm=None, lr_schedule="constant"
        ),
        "train_denoiser, defaults (+ EMA, clip, warm-up/cosine)": lambda m: trainer_loop(
            m, data, schedule, args.steps, config.batch_size, config.lr
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds + 1):  # round 0 warms up allocators and caches, not counted
        for name, run in variants.items():
            model = build_moons_model(config)
            start = time.perf_counter()
            run(model)
            rates[name].append(args.steps / (time.perf_counter() - start))
    baseline = statistics.median(rates["bare loop (AdamW, L_simple)"][1:])
    print(f"\nTrainer overhead on the moons MLP ({sum(p.numel() for p in build_moons_model(config).parameters()):,} parameters), "
          f"batch {config.batch_size}, {args.steps} steps x {args.rounds} rounds, {args.threads} CPU thread(s)\n")
    print(f"| {'variant':<56} | steps/s | time vs bare loop |")
    print(f"|{'-' * 58}|--------:|------------------:|")
    for name, values in rates.items():
        rate = statistics.median(values[1:])
        print(f"| {name:<56} | {rate:7.0f} | {baseline / rate:16.2f}x |")


if __name__ == "__main__":
    main()
