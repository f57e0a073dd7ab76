"""Class fidelity of the class-conditional U-Net on scikit-learn's 8x8 digits, measured in one run on the CPU.

1. Train ``TimeAndClassConditionedModel(unet_tiny(...), 10)`` with ``train_denoiser`` on the digits training
   split (1,438 images, labels dropped to the null class with probability 0.1 for classifier-free guidance).
2. Train a classifier on the same real training split: ``SVC(gamma="scale")`` (RBF kernel) on the flattened
   [-1, 1] pixels. Its accuracy on the held-out real test split (359 images) is the reference.
3. Sample ``--per-class`` images of every digit from the EMA model with guidance weights ``--guidance``
   (w = 0: the plain conditional model) and report how often the classifier recognises the requested class.

Printed as a markdown table, with the ratio generated / real (1.0 = the generated digits are as recognisable
as real held-out digits). The training length is ``--epochs`` (default 250: about 5 minutes on one core),
or as many epochs as fit in ``--minutes`` (estimated from a 2-epoch calibration run).

    .venv/bin/python benchmarks/digits_conditional.py [--epochs 250 | --minutes 6] [--sampler ddim --steps 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from sklearn.svm import SVC

from diffusion_playground import LinearNoiseSchedule, TimeAndClassConditionedModel, generate_samples, train_denoiser
from diffusion_playground.data import load_digits_images
from diffusion_playground.diffusion.backward import SAMPLERS
from diffusion_playground.models import unet_tiny

NUM_CLASSES = 10


def build_model(time_steps: int, base_channels: int) -> TimeAndClassConditionedModel:
    backbone = unet_tiny(cond_dim=128, base_channels=base_channels)
    return TimeAndClassConditionedModel(backbone, NUM_CLASSES, time_emb_dim=128, num_time_steps=time_steps,
                                        cond_drop_prob=0.1)  # fmt: skip


def calibrate_epochs(args, x, y, schedule, minutes: float) -> int:
    """Epochs that fit in ``minutes``, from the time of the 2nd epoch of a throwaway run (the 1st warms up)."""
    model = build_model(schedule.T, args.base_channels)
    start = time.perf_counter()
    train_denoiser(model, x, schedule, labels=y, epochs=1, batch_size=args.batch_size, lr=args.lr,
                   seed=args.seed, device="cpu", show_progress=False)  # fmt: skip
    middle = time.perf_counter()
    train_denoiser(model, x, schedule, labels=y, epochs=1, batch_size=args.batch_size, lr=args.lr,
                   seed=args.seed, device="cpu", show_progress=False)  # fmt: skip
    per_epoch = time.perf_counter() - middle
    epochs = max(1, int(minutes * 60 / per_epoch))
    print(f"calibration: one epoch takes {per_epoch:.2f} s (first one {middle - start:.2f} s) "
          f"-> {epochs} epochs fit in {minutes:g} min")  # fmt: skip
    return epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=250, help="training epochs (12 steps each at batch 128)")
    parser.add_argument("--minutes", type=float, default=None, help="instead of --epochs: as many epochs as fit")
    parser.add_argument("--time-steps", type=int, default=1000, help="T of the linear schedule (Ho et al.: 1000)")
    parser.add_argument("--base-channels", type=int, default=16, help="U-Net width (unet_tiny: 16)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--sampler", default="ddim", choices=tuple(SAMPLERS))
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (0 = all T trained steps)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 3.0], help="CFG weights w")
    parser.add_argument("--per-class", type=int, default=50, help="generated samples per class and weight")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (2 are no faster on these sizes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    args.steps = args.steps or None  # 0 -> None: every trained step
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run_start = time.perf_counter()

    x_train, y_train = load_digits_images(train=True)  # (1438, 1, 8, 8) in [-1, 1], (1438,)
    x_test, y_test = load_digits_images(train=False)  # (359, 1, 8, 8), (359,)
    schedule = LinearNoiseSchedule.scaled(args.time_steps)

    # 1. The reference: a classifier trained on real digits, scored on held-out real digits.
    classifier = SVC(gamma="scale").fit(x_train.flatten(1).numpy(), y_train.numpy())
    real_accuracy = float((classifier.predict(x_test.flatten(1).numpy()) == y_test.numpy()).mean())

    # 2. The class-conditional diffusion model.
    epochs = args.epochs if args.minutes is None else calibrate_epochs(args, x_train, y_train, schedule, args.minutes)
    model = build_model(schedule.T, args.base_channels)
    train_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="digits_conditional_") as checkpoint_dir:
        history = train_denoiser(
            model, x_train, schedule, labels=y_train, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
            ema_decay=args.ema_decay, seed=args.seed, device="cpu", checkpoint_dir=checkpoint_dir, save_every=None,
            show_progress=False,
        )  # fmt: skip
    train_seconds = time.perf_counter() - train_start
    print(f"trained {history.epoch} epochs ({history.step} steps) in {train_seconds:.0f} s; "
          f"last epoch loss {history.epoch_losses[-1]:.4f}")  # fmt: skip

    # 3. Generated samples, classified by the real-digit classifier.
    requested = torch.arange(NUM_CLASSES).repeat_interleave(args.per_class)  # (10 * per_class,)
    rows = []
    for w in args.guidance:
        sample_start = time.perf_counter()
        samples = generate_samples(
            history.ema_model, schedule, (1, 8, 8), len(requested), sampler=args.sampler, steps=args.steps,
            guidance_scale=w, class_labels=requested, generator=torch.Generator().manual_seed(args.seed + 1),
        )  # fmt: skip  # (N, 1, 8, 8)
        predicted = classifier.predict(samples.clamp(-1, 1).flatten(1).numpy())
        accuracy = float((predicted == requested.numpy()).mean())
        rows.append({"guidance_scale": w, "generated_accuracy": accuracy, "ratio": accuracy / real_accuracy,
                     "sampling_seconds": time.perf_counter() - sample_start})  # fmt: skip

    nfe = SAMPLERS[args.sampler].nfe(args.steps if args.steps is not None else schedule.T)
    print(f"\nunet_tiny(base_channels={args.base_channels}), {model_parameters(model):,} parameters, T={schedule.T}, "
          f"{history.epoch} epochs / {history.step} steps (batch {args.batch_size}, lr {args.lr}, "
          f"EMA {args.ema_decay}), "
          f"sampler {args.sampler} with {args.steps} steps ({nfe} NFE, x2 with guidance), "
          f"{args.per_class} samples per class, seed {args.seed}, {args.threads} threads\n")  # fmt: skip
    print("| guidance w | SVC accuracy on generated digits (requested class) | SVC accuracy on real test digits "
          "| ratio generated / real |")  # fmt: skip
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['guidance_scale']:g} | {100 * row['generated_accuracy']:.1f}% | {100 * real_accuracy:.1f}% "
              f"| {row['ratio']:.3f} |")  # fmt: skip
    total_seconds = time.perf_counter() - run_start
    print(f"\ntotal {total_seconds:.0f} s (training {train_seconds:.0f} s, sampling "
          f"{sum(r['sampling_seconds'] for r in rows):.0f} s)")  # fmt: skip

    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  "epochs": history.epoch, "steps": history.step, "real_accuracy": real_accuracy, "rows": rows,
                  "train_seconds": train_seconds, "total_seconds": total_seconds}  # fmt: skip
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


def model_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    main()
