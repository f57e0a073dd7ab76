"""Sampler error vs network evaluations (NFE) on moons, measured against the exact denoiser.

With the optimal denoiser of the training set (no training, no network error), every sampler starts from the
same noise; printed per sampler and NFE: the sliced-Wasserstein distance and MMD^2 of the samples to the data
the denoiser holds, and the RMS distance of each sample to a reference solution of the same probability-flow ODE
from the same noise (Heun with many small steps). The fitted slope of log(RMS to reference) vs log(NFE) is each
solver's order (~1 for Euler/DDIM, ~2 for Heun and DPM-Solver++(2M)). A log-log plot is written.

    .venv/bin/python benchmarks/samplers.py [--num-data 2000] [--num-samples 4000] [--nfe 5 10 20 50 100 250 1000]
        [--reference-steps 1000] [--trained] [--plot notebooks/experiments/moons/sampler_error_vs_nfe.png]

``--trained`` also trains the moons MLP (MoonsConfig defaults) and compares the samplers' sliced-W2 on it with
1,000-step DDPM (minutes on a CPU), with the default step grid and with a grid (sigma_max, sigma_min) chosen on a
validation draw.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

from diffusion_playground import LinearNoiseSchedule, OptimalDenoiser, generate_samples
from diffusion_playground.data import load_moons
from diffusion_playground.diffusion import SAMPLERS, karras_sigmas, sample_heun, sigma_range
from diffusion_playground.diffusion.noise_schedule import vp_scale
from diffusion_playground.evaluation.metrics import median_bandwidth, mmd_rbf, random_directions, sliced_wasserstein
from diffusion_playground.visualization.sampler_error import plot_error_vs_nfe

SAMPLER_NAMES = ("ddpm", "ddim", "euler", "heun", "dpmpp_2m")
DETERMINISTIC = ("ddim", "euler", "heun", "dpmpp_2m")


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """The number of steps whose NFE is closest to ``nfe`` from below (Heun: 2N - 1 evaluations)."""
    return max(1, (nfe + 1) // 2) if sampler == "heun" else nfe


def fitted_slope(nfes: list[int], errors: list[float]) -> float:
    """Least-squares slope of -log(error) against log(NFE): the observed order of convergence."""
    x = torch.tensor([math.log(n) for n in nfes], dtype=torch.float64)
    y = torch.tensor([-math.log(max(e, 1e-30)) for e in errors], dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())


def measure(samples: torch.Tensor, data: torch.Tensor, directions: torch.Tensor, bandwidth: float) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(0)  # the same subsample of the samples for every row
    return (
        sliced_wasserstein(samples, data, generator=generator, directions=directions),
        mmd_rbf(samples, data, bandwidth),
    )


def exact_denoiser_table(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    data = load_moons(args.num_data, seed=0)
    denoiser = OptimalDenoiser(data)
    schedule = LinearNoiseSchedule.scaled(1000)
    directions = random_directions(2, 256, torch.Generator().manual_seed(1))
    bandwidth = median_bandwidth(data)

    def sample(sampler: str, steps: int | None) -> torch.Tensor:
        return generate_samples(
            denoiser, schedule, (2,), args.num_samples, sampler=sampler, steps=steps,
            generator=torch.Generator().manual_seed(args.seed),
        )  # fmt: skip

    # The reference: the same ODE from the same noise, Heun on a fine rho = 7 grid.
    start = time.perf_counter()
    z = torch.randn(args.num_samples, 2, generator=torch.Generator().manual_seed(args.seed))
    sigmas = karras_sigmas(args.reference_steps, *sigma_range(schedule))  # the span the samplers walk
    reference = sample_heun(denoiser, z / vp_scale(sigmas[0]).item(), sigmas)
    print(f"reference: Heun, {args.reference_steps} steps ({2 * args.reference_steps - 1} NFE), "
          f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    reference_quality = measure(reference, data, directions, bandwidth)
    results: dict[tuple[str, int], tuple[float, float, float]] = {}
    for sampler in SAMPLER_NAMES:
        for nfe in args.nfe:
            steps = steps_for_nfe(sampler, nfe)
            samples = sample(sampler, steps)
            sw, mmd = measure(samples, data, directions, bandwidth)
            rms = (samples - reference).square().sum(dim=1).mean().sqrt().item()
            results[(sampler, SAMPLERS[sampler].nfe(steps))] = (sw, mmd, rms)
            print(f"  {sampler:9s} NFE {SAMPLERS[sampler].nfe(steps):5d}: SW {sw:.4f}  MMD2 {mmd:.2e}  RMS-to-ref {rms:.2e}",
                  flush=True)  # fmt: skip
    if 1000 not in args.nfe:  # DDPM on all T = 1000 steps: the baseline every user knows
        samples = sample("ddpm", None)
        sw, mmd = measure(samples, data, directions, bandwidth)
        results[("ddpm", 1000)] = (sw, mmd, float("nan"))
        print(f"  ddpm      NFE  1000: SW {sw:.4f}  MMD2 {mmd:.2e}", flush=True)
    return results, {"reference": reference_quality}, {}


def print_table(results: dict, reference_quality: tuple[float, float]) -> dict[str, float]:
    print()
    print(f"Exact denoiser; reference (fine Heun ODE solve): SW = {reference_quality[0]:.4f}, MMD^2 = {reference_quality[1]:.2e}")
    print()
    print("| sampler | NFE | sliced-W2 | SW / reference | MMD^2 | RMS to reference ODE solution |")
    print("|---|---:|---:|---:|---:|---:|")
    for (sampler, nfe), (sw, mmd, rms) in results.items():
        rms_text = f"{rms:.2e}" if sampler in DETERMINISTIC else "— (stochastic)"
        print(f"| {sampler} | {nfe} | {sw:.4f} | {sw / reference_quality[0]:.2f} | {mmd:.2e} | {rms_text} |")
    slopes = {}
    for sampler in DETERMINISTIC:
        points = [(nfe, rms) for (name, nfe), (_, _, rms) in results.items() if name == sampler and nfe >= 20]
        if len(points) >= 2:
            slopes[sampler] = fitted_slope([p[0] for p in points], [p[1] for p in points])
    print()
    print("fitted order (slope of -log RMS-to-reference vs log NFE, NFE >= 20): "
          + ", ".join(f"{name} {slope:.2f}" for name, slope in slopes.items()))  # fmt: skip
    return slopes


# Step grids tried on the trained model at 10 NFE: (sigma_max, sigma_min); None = the default (80 and sigma_0).
GRID_CANDIDATES = [(sigma_max, sigma_min) for sigma_max in (None, 20.0, 5.0) for sigma_min in (None, 0.03, 0.1)]


def trained_table(args: argparse.Namespace) -> None:
    """Train the moons MLP, then the samplers' sliced-W2 ratio (to fresh data, floor-normalised) vs 1,000-step DDPM.

    Rows with the default grid at 10, 20 and 50 NFE; then, per sampler at 10 NFE, the grid (sigma_max, sigma_min)
    among GRID_CANDIDATES chosen on a validation draw (other noise, other fresh data) and reported on the test draw.
    """
    from diffusion_playground import train_denoiser
    from diffusion_playground.evaluation.metrics import sample_quality
    from diffusion_playground.experiments.moons import MoonsConfig, build_moons_model

    config = MoonsConfig()
    torch.manual_seed(config.seed)
    data = load_moons(config.num_points, seed=config.seed)
    schedule = LinearNoiseSchedule.scaled(config.time_steps)
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        history = train_denoiser(
            build_moons_model(config), data, schedule, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
            ema_decay=config.ema_decay, checkpoint_dir=checkpoint_dir, seed=config.seed, device="cpu", show_progress=False,
        )  # fmt: skip
    model = history.ema_model
    n = config.num_eval_samples
    real, real_reference = load_moons(n, seed=config.seed + 1001), load_moons(n, seed=config.seed + 2002)
    validation = load_moons(n, seed=config.seed + 3003)

    def sample(sampler: str, steps: int | None, seed: int = 1, **grid: float | None) -> torch.Tensor:
        return generate_samples(model, schedule, (2,), n, sampler=sampler, steps=steps,
                                generator=torch.Generator().manual_seed(seed), **grid)  # fmt: skip

    ddpm = sample_quality(sample("ddpm", None), real, real_reference)

    def row(sampler: str, steps: int, grid_text: str, samples: torch.Tensor) -> None:
        q = sample_quality(samples, real, real_reference)
        print(f"| {sampler} | {SAMPLERS[sampler].nfe(steps)} | {grid_text} | {q['sliced_wasserstein_ratio']:.2f} | "
              f"{q['mmd2_ratio']:.2f} | {q['sliced_wasserstein'] / ddpm['sliced_wasserstein']:.2f} |", flush=True)  # fmt: skip

    print()
    print("Trained moons MLP (MoonsConfig defaults); SW ratio = SW(samples, fresh data) / SW(fresh data, fresh data)")
    print()
    print("| sampler | NFE | grid (sigma_max, sigma_min) | SW ratio | MMD^2 ratio | SW / DDPM-1000 |")
    print("|---|---:|---|---:|---:|---:|")
    print(f"| ddpm | 1000 | every step | {ddpm['sliced_wasserstein_ratio']:.2f} | {ddpm['mmd2_ratio']:.2f} | 1.00 |")
    for sampler in SAMPLER_NAMES:
        for nfe in (10, 20, 50):
            steps = steps_for_nfe(sampler, nfe)
            row(sampler, steps, "default", sample(sampler, steps))
    directions = random_directions(2, 256, torch.Generator().manual_seed(1))
    for sampler in SAMPLER_NAMES:  # choose the grid on the validation draw, report on the test draw
        steps = steps_for_nfe(sampler, 10)
        scores = {}
        for sigma_max, sigma_min in GRID_CANDIDATES:
            grid = {"sigma_max": sigma_max, "sigma_min": sigma_min}
            scores[(sigma_max, sigma_min)] = sliced_wasserstein(sample(sampler, steps, seed=2, **grid), validation,
                                                                directions=directions)  # fmt: skip
        sigma_max, sigma_min = min(scores, key=scores.get)
        grid_text = f"chosen: ({sigma_max or 'default'}, {sigma_min or 'default'})"
        row(sampler, steps, grid_text, sample(sampler, steps, sigma_max=sigma_max, sigma_min=sigma_min))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-data", type=int, default=2000, help="moons points the exact denoiser holds")
    parser.add_argument("--num-samples", type=int, default=4000)
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50, 100, 250, 1000])
    parser.add_argument("--reference-steps", type=int, default=1000, help="Heun steps of the reference ODE solve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--trained", action="store_true", help="also train the moons MLP and compare on it")
    parser.add_argument("--plot", default="notebooks/experiments/moons/sampler_error_vs_nfe.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results, extra, _ = exact_denoiser_table(args)
    print_table(results, extra["reference"])
    if args.plot:
        plot_error_vs_nfe(results, extra["reference"][0], deterministic=DETERMINISTIC,
                          title="moons, exact (optimal) denoiser", path=args.plot)
        print(f"plot written to {args.plot}")
    if args.trained:
        trained_table(args)


if __name__ == "__main__":
    main()
