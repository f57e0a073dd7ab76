"""Likelihoods of a Gaussian diffusion model next to the D3PM bound, on the same 16-level digits, in one run.

The D3PM notebook (``mnist_discrete.ipynb``) reports its variational bound on scikit-learn's 8x8 test digits
quantised to K = 16 levels. This script puts the Gaussian model's two likelihoods (``log_likelihood``, moons
README section 17) on exactly those data:

1. Quantise the digits to 16 levels (``quantize``) and map them back to the 16-level grid in [-1, 1]
   (``dequantize``): the Gaussian model trains and is scored on these, D3PM on the states.
2. Train, with the one trainer, the same class-conditional ``unet_tiny`` U-Net with the same budget twice:
   a Gaussian DDPM (eps-prediction, linear schedule, T steps) and D3PM (absorbing transition, T steps,
   ``hybrid_lambda`` 0.01), both class-conditional without label dropout.
3. Score every test digit given its label: the D3PM bound (``nll_bound_bits``), the Gaussian variational bound
   with the discretised decoder (``method="vlb", bins=16``) and the Gaussian ODE likelihood with uniform
   dequantisation and Hutchinson's divergence (``method="ode", bins=16``). All three bound -log2 P(x | y) per pixel
   of the same discrete images; log2 16 = 4 bits is the cost of drawing every pixel uniformly.

Printed as a markdown table with the time of each row.

    .venv/bin/python benchmarks/likelihood.py [--epochs 50] [--time-steps 1000] [--ode-steps 100]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from diffusion_playground import (
    CategoricalDiffusion,
    LinearNoiseSchedule,
    TimeAndClassConditionedModel,
    log_likelihood,
    train_denoiser,
)
from diffusion_playground.data import load_digits_images
from diffusion_playground.experiments.discrete_digits import d3pm_model, dequantize, nll_bound_bits, quantize
from diffusion_playground.models import unet_tiny

LEVELS = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50, help="training epochs of each model (12 steps each)")
    parser.add_argument("--time-steps", type=int, default=1000, help="T of both processes")
    parser.add_argument("--ode-steps", type=int, default=100, help="Heun steps of the ODE likelihood")
    parser.add_argument("--test-images", type=int, default=None, help="score only this many test digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    images, labels = load_digits_images(train=True)  # (1438, 1, 8, 8) in [-1, 1]
    test_images, test_labels = load_digits_images(train=False)  # (359, 1, 8, 8)
    if args.test_images is not None:
        test_images, test_labels = test_images[: args.test_images], test_labels[: args.test_images]
    states, test_states = quantize(images, LEVELS), quantize(test_images, LEVELS)  # (N, 1, 8, 8) in {0..15}
    grid, test_grid = dequantize(states, LEVELS), dequantize(test_states, LEVELS)  # 2 k / 15 - 1
    common = dict(labels=labels, epochs=args.epochs, batch_size=128, lr=2e-3, ema_decay=0.999, seed=args.seed,
                  device="cpu", show_progress=False)  # fmt: skip
    rows = []

    schedule = LinearNoiseSchedule.scaled(args.time_steps)
    torch.manual_seed(args.seed)
    gaussian = TimeAndClassConditionedModel(unet_tiny(cond_dim=128), 10, time_emb_dim=128,
                                            num_time_steps=args.time_steps, cond_drop_prob=0.0)  # fmt: skip
    start = time.perf_counter()
    history = train_denoiser(gaussian, grid, schedule, **common)
    print(f"Gaussian DDPM: {history.step} steps in {time.perf_counter() - start:.0f} s")
    model = history.ema_model.eval()
    for method, extra in (("vlb", {}), ("ode", {"steps": args.ode_steps})):
        start = time.perf_counter()
        bits = log_likelihood(model, schedule, test_grid, method, labels=test_labels, bins=LEVELS,
                              generator=torch.Generator().manual_seed(args.seed), **extra)  # fmt: skip
        name = "variational bound, discretised decoder" if method == "vlb" else f"ODE, Hutchinson, {args.ode_steps} Heun steps, dequantised"
        rows.append((f"Gaussian DDPM (eps, linear): {name}", bits.mean().item(), time.perf_counter() - start))

    process = CategoricalDiffusion(LEVELS, args.time_steps, "absorbing", hybrid_lambda=0.01)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    history = train_denoiser(d3pm_model(process, 8), states, process, **common)
    print(f"D3PM: {history.step} steps in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    bound = nll_bound_bits(process, history.ema_model, test_states, test_labels, seed=args.seed)
    rows.append(("D3PM (absorbing): variational bound", bound, time.perf_counter() - start))

    print(f"\n{test_images.shape[0]} test digits, 8x8, {LEVELS} levels, scored given their labels; "
          f"log2 {LEVELS} = {math.log2(LEVELS):g} bits per pixel for uniform guessing; "
          f"{args.epochs} epochs, T = {args.time_steps}\n")  # fmt: skip
    print("| model and method | bits per pixel | seconds |\n|---|---:|---:|")
    for name, bits, seconds in rows:
        print(f"| {name} | {bits:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
