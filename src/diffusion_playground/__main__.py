"""Command line: ``python -m diffusion_playground train moons [--epochs N] [--out DIR] [--device cpu|cuda]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from diffusion_playground.experiments.moons import MoonsConfig, run_moons


def _device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_playground", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a diffusion model on a dataset, then sample and evaluate it")
    train.add_argument("dataset", choices=["moons"], help="which experiment to run")
    train.add_argument("--epochs", type=int, default=MoonsConfig.epochs, help="passes over the data (default: %(default)s)")
    train.add_argument("--out", default="outputs/moons", help="folder for checkpoints and figures (default: %(default)s)")
    train.add_argument(
        "--device", type=_device, choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu",
        help="where to train (default: %(default)s)",
    )  # fmt: skip
    train.add_argument(
        "--num-samples", type=int, default=MoonsConfig.num_eval_samples,
        help="samples drawn and compared with as many fresh data points (default: %(default)s)",
    )  # fmt: skip
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs < 1:
        raise SystemExit(f"--epochs must be >= 1; got {args.epochs}")
    if args.num_samples < 2:
        raise SystemExit(f"--num-samples must be >= 2; got {args.num_samples}")
    result = run_moons(
        MoonsConfig(epochs=args.epochs, num_eval_samples=args.num_samples, seed=args.seed), args.out, device=args.device, show_progress=not args.no_progress
    )
    quality = result["quality"]
    print(
        f"\nTrained {result['steps']} steps in {result['train_seconds']:.0f} s and drew {args.num_samples} samples "
        f"({result['config']['time_steps']} DDPM steps) in {result['sample_seconds']:.0f} s on {args.device}."
    )
    n = args.num_samples
    print(f"Sample quality ({n} samples vs {n} fresh moons points; floor = a second fresh real sample of {n}):")
    print(
        f"  sliced Wasserstein-2: {quality['sliced_wasserstein']:.4f}   floor {quality['sliced_wasserstein_floor']:.4f}"
        f"   ratio {quality['sliced_wasserstein_ratio']:.2f}x"
    )
    print(f"  MMD^2 (RBF):          {quality['mmd2']:.2e}   floor {quality['mmd2_floor']:.2e}   ratio {quality['mmd2_ratio']:.2f}x")
    print("Wrote:")
    for path in (*result["paths"].values(), result["checkpoint"]):
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
