"""Data-parallel scaling of train_denoiser on the CPU: 1 process against N under torchrun (gloo), in one run.

The moons demo's MLP (and a wider one, where each step has more compute per byte of gradient to
average) trains K steps with a global batch B split over N processes ("strong scaling": the same
optimisation as one process, done faster if all goes well). Every process gets one torch thread,
so N processes use N cores. Printed: a markdown table of steps/s (median of rounds, after a warm-up
call) and the scaling efficiency  (steps/s with N processes) / (N * steps/s with 1 process).

    .venv/bin/python benchmarks/ddp_scaling.py [--steps 100] [--rounds 3] [--processes 2] [--batch-size 256]

On a machine with fewer free cores than processes, the processes share cores and the efficiency
says so; on GPUs, launch your own script with torchrun instead (see the README, "Scaling out").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from diffusion_playground import LinearNoiseSchedule, MLPBackbone, TimeConditionedModel, train_denoiser
from diffusion_playground.data import load_moons

MODELS = {"moons MLP (width 128)": 128, "wide MLP (width 512)": 512}


def worker(args: argparse.Namespace) -> None:
    """Under torchrun (or alone): time ``args.steps`` optimizer steps per round; rank 0 prints one JSON line."""
    torch.set_num_threads(1)
    data = load_moons(8000)
    schedule = LinearNoiseSchedule(1000)
    model = TimeConditionedModel(
        MLPBackbone(data_dim=2, cond_dim=128, hidden_dim=args.hidden_dim, num_blocks=3),
        time_emb_dim=128,
        num_time_steps=1000,
    )
    epochs = -(-(args.steps + 10) * args.batch_size // data.shape[0])  # enough epochs, cut by max_steps

    def train(steps: int) -> None:
        train_denoiser(
            model, data, schedule, epochs=epochs, max_steps=steps, batch_size=args.batch_size, lr=2e-3,
            show_progress=False, device="cpu",
        )  # fmt: skip

    train(10)  # warm-up: process group, allocator, first DDP buckets
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        train(args.steps)  # each call ends once every rank has taken its steps (the last loss is all-reduced)
        rates.append(args.steps / (time.perf_counter() - start))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"steps_per_s": statistics.median(rates)}))


def measure(processes: int, hidden_dim: int, args: argparse.Namespace) -> float:
    """steps/s of ``processes`` workers (a plain process for 1, torchrun --standalone on loopback otherwise)."""
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
    ]  # fmt: skip
    command = [*launcher, __file__, "--worker", "--hidden-dim", str(hidden_dim), "--steps", str(args.steps),
               "--rounds", str(args.rounds), "--batch-size", str(args.batch_size)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--processes", type=int, default=2, help="processes of the data-parallel run")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch (split over the processes)")
    parser.add_argument("--hidden-dim", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    print(f"CPU, gloo, 1 thread per process, global batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, "
          f"{os.cpu_count()} cores\n")  # fmt: skip
    print("| model | processes | batch per process | steps/s | speed-up | scaling efficiency |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, hidden_dim in MODELS.items():
        single = measure(1, hidden_dim, args)
        for processes in (1, args.processes):
            rate = single if processes == 1 else measure(processes, hidden_dim, args)
            speedup = rate / single
            print(f"| {name} | {processes} | {args.batch_size // processes} | {rate:.1f} | {speedup:.2f}x | "
                  f"{speedup / processes:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
