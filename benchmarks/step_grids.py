"""Which step grid should each sampler use by default with few steps? Measured on nine trained models in one run.

The question of issue 15, section 4: with about 10 network evaluations and no other argument, how close does
each sampler come to the same model's 1,000-step quality? Candidates per sampler: the spacing (``uniform`` in t,
``karras`` rho = 7, ``log_snr``) times the range [sigma_min, sigma_max] (the old default [sigma_0, min(sigma_{T-1}, 80)],
the few-step default [0.1, 20], and the two mixed ones). Models, each trained here with the one trainer:

* moons (``MoonsConfig``: 8,000 points, MLP, 1,920 steps): eps and v on the linear schedule, eps and v on the
  cosine schedule, flow matching (``RectifiedFlow``), EDM (``EDMPreconditioner`` + ``EDMDiffusion``, sigma_data 1);
  quality = sliced-W2 to fresh points over the data-vs-data floor;
* scikit-learn's 8x8 digits (class-conditional ``unet_tiny``, 600 steps): eps on the linear schedule, v on the
  cosine schedule, flow matching; quality = Frechet distance of a small CNN's features (trained here on the real
  training digits) to the training digits, over the real test digits' distance (1,000 samples, 100 per class).

Each cell is the quality at 10 NFE (Heun: 5 steps, 9 NFE) divided by the same model's reference: 1,000-step DDPM
(EDM, which has no chain: 500 Heun steps, 999 NFE, on its own grid). 1.00 = as good as the reference. Printed as
markdown tables: every candidate per sampler (sorted by the worst model), then the old and new defaults side by side.

    .venv/bin/python benchmarks/step_grids.py [--moons-epochs 60] [--digits-epochs 50] [--nfe 10]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from diffusion_playground import (
    CosineNoiseSchedule,
    EDMDiffusion,
    EDMPreconditioner,
    LinearNoiseSchedule,
    RectifiedFlow,
    TimeAndClassConditionedModel,
    TimeConditionedModel,
    generate_samples,
    train_denoiser,
)
from diffusion_playground.data import load_digits_images, load_moons
from diffusion_playground.diffusion.step_schedules import DEFAULT_SIGMA_MAX, FEW_STEP_SIGMA_MAX, FEW_STEP_SIGMA_MIN
from diffusion_playground.evaluation.classifier import classifier_outputs, frechet_distance, train_classifier
from diffusion_playground.evaluation.metrics import sample_quality
from diffusion_playground.experiments.moons import MoonsConfig
from diffusion_playground.models import unet_tiny
from diffusion_playground.models.backbones.mlp import MLPBackbone

SAMPLER_NAMES = ("ddim", "euler", "heun", "dpmpp_2m")
SPACINGS = ("uniform", "karras", "log_snr")
RANGES = ("[sigma_0, 80]", "[0.1, 20]", "[sigma_0, 20]", "[0.1, 80]")
OLD_DEFAULTS = {"ddim": "uniform", "euler": "karras", "heun": "karras", "dpmpp_2m": "karras"}  # before this change
NEW_DEFAULTS = {"ddim": "uniform", "euler": "uniform", "heun": "karras", "dpmpp_2m": "log_snr"}


def grid_arguments(process, spacing: str, span: str) -> dict[str, object]:
    """generate_samples' keywords for one candidate grid (both ends given explicitly)."""
    low = process.sigma_min if span.startswith("[sigma_0") else FEW_STEP_SIGMA_MIN
    top = min(process.sigma_max, DEFAULT_SIGMA_MAX) if span.endswith("80]") else FEW_STEP_SIGMA_MAX
    return {"step_schedule": spacing, "sigma_min": low, "sigma_max": top}


class Moons:
    """The moons models and their metric."""

    def __init__(self, epochs: int) -> None:
        self.config = config = MoonsConfig(epochs=epochs)
        self.data = load_moons(config.num_points, noise=config.noise, seed=config.seed)
        self.real = load_moons(config.num_eval_samples, noise=config.noise, seed=config.seed + 1001)
        self.real_b = load_moons(config.num_eval_samples, noise=config.noise, seed=config.seed + 2002)
        T = config.time_steps  # noqa: N806
        self.runs = {
            "moons eps, linear": ("eps", LinearNoiseSchedule.scaled(T)), "moons v, linear": ("v", LinearNoiseSchedule.scaled(T)),
            "moons eps, cosine": ("eps", CosineNoiseSchedule(T)), "moons v, cosine": ("v", CosineNoiseSchedule(T)),
            "moons flow": ("flow", RectifiedFlow(T)), "moons EDM": ("edm", EDMDiffusion(sigma_data=1.0)),
        }  # fmt: skip

    def train(self, target: str, process) -> torch.nn.Module:
        c = self.config
        torch.manual_seed(c.seed)
        backbone = MLPBackbone(data_dim=2, cond_dim=c.time_emb_dim, hidden_dim=c.hidden_dim, num_blocks=c.num_blocks)
        model = EDMPreconditioner(backbone, sigma_data=1.0) if target == "edm" else TimeConditionedModel(
            backbone, time_emb_dim=c.time_emb_dim, num_time_steps=c.time_steps, prediction_type=target)  # fmt: skip
        return train_denoiser(model, self.data, process, epochs=c.epochs, lr=c.lr, batch_size=c.batch_size,
                              ema_decay=c.ema_decay, seed=c.seed, show_progress=False).ema_model.eval()  # fmt: skip

    def quality(self, model, process, **kwargs: object) -> float:
        samples = generate_samples(model, process, (2,), self.config.num_eval_samples,
                                   generator=torch.Generator().manual_seed(1), **kwargs)  # fmt: skip
        return sample_quality(samples, self.real, self.real_b)["sliced_wasserstein_ratio"]


class Digits:
    """The 8x8 digits models and their metric."""

    def __init__(self, epochs: int) -> None:
        self.epochs, T = epochs, 1000  # noqa: N806
        self.images, self.labels = load_digits_images(train=True)
        test_images, _ = load_digits_images(train=False)
        self.classifier = train_classifier(self.images, self.labels, 10, epochs=15)
        self.train_features, _ = classifier_outputs(self.classifier, self.images)
        test_features, _ = classifier_outputs(self.classifier, test_images)
        self.floor = frechet_distance(test_features, self.train_features)
        self.requested = torch.arange(1000) % 10
        self.runs = {"digits eps, linear": ("eps", LinearNoiseSchedule.scaled(T)),
                     "digits v, cosine": ("v", CosineNoiseSchedule(T)), "digits flow": ("flow", RectifiedFlow(T))}  # fmt: skip

    def train(self, target: str, process) -> torch.nn.Module:
        torch.manual_seed(0)
        model = TimeAndClassConditionedModel(unet_tiny(cond_dim=128), 10, time_emb_dim=128, num_time_steps=process.T,
                                             prediction_type=target, cond_drop_prob=0.1)  # fmt: skip
        return train_denoiser(model, self.images, process, labels=self.labels, epochs=self.epochs, batch_size=128,
                              lr=2e-3, ema_decay=0.999, seed=0, show_progress=False).ema_model.eval()  # fmt: skip

    def quality(self, model, process, **kwargs: object) -> float:
        samples = generate_samples(model, process, (1, 8, 8), len(self.requested), class_labels=self.requested,
                                   generator=torch.Generator().manual_seed(1), **kwargs)  # fmt: skip
        features, _ = classifier_outputs(self.classifier, samples.clamp(-1, 1))
        return frechet_distance(features, self.train_features) / self.floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moons-epochs", type=int, default=60)
    parser.add_argument("--digits-epochs", type=int, default=50)
    parser.add_argument("--nfe", type=int, default=10, help="network evaluations per sample (Heun: the odd NFE below)")
    args = parser.parse_args()
    start = time.perf_counter()
    models, references = {}, {}
    for suite in (Moons(args.moons_epochs), Digits(args.digits_epochs)):
        for name, (target, process) in suite.runs.items():
            model = suite.train(target, process)
            continuous = isinstance(process, EDMDiffusion)
            reference = {"sampler": "heun", "steps": 500} if continuous else {}  # ddpm, every step
            models[name] = (suite, model, process)
            references[name] = suite.quality(model, process, **reference)
            print(f"{name}: trained; reference {'Heun-500' if continuous else 'DDPM-1000'} quality "
                  f"{references[name]:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip

    ratios = {}  # (sampler, spacing, range) -> {model: quality / reference}
    for sampler, spacing, span in itertools.product(SAMPLER_NAMES, SPACINGS, RANGES):
        steps = (args.nfe + 1) // 2 if sampler == "heun" else args.nfe
        row = {}
        for name, (suite, model, process) in models.items():
            if spacing == "uniform" and isinstance(process, EDMDiffusion):
                continue  # no trained steps to space evenly
            quality = suite.quality(model, process, sampler=sampler, steps=steps, **grid_arguments(process, spacing, span))
            row[name] = quality / references[name]
        ratios[sampler, spacing, span] = row
    defaults = {}
    for sampler in SAMPLER_NAMES:
        steps = (args.nfe + 1) // 2 if sampler == "heun" else args.nfe
        defaults[sampler] = {name: suite.quality(model, process, sampler=sampler, steps=steps) / references[name]
                             for name, (suite, model, process) in models.items()}  # fmt: skip

    names = list(models)
    header = "| sampler | spacing | range | " + " | ".join(names) + " | worst |"
    rule = "|---|---|---|" + "---:|" * (len(names) + 1)
    print(f"\nquality at {args.nfe} NFE / the same model's reference (1.00 = as good); every candidate grid\n")
    print(header + "\n" + rule)
    for sampler in SAMPLER_NAMES:
        rows = sorted(((k, v) for k, v in ratios.items() if k[0] == sampler), key=lambda kv: max(kv[1].values()))
        for (_, spacing, span), row in rows:
            mark = " (old default)" if spacing == OLD_DEFAULTS[sampler] and span == RANGES[0] else ""
            cells = " | ".join(f"{row[n]:.2f}" if n in row else "—" for n in names)
            print(f"| {sampler} | {spacing}{mark} | {span} | {cells} | {max(row.values()):.2f} |")
    print(f"\nthe defaults, generate_samples(model, process, shape, n, sampler=..., steps={args.nfe}) with nothing else "
          "(heun: 5 steps), before and after\n")  # fmt: skip
    print("| sampler | defaults | " + " | ".join(names) + " | worst |\n|---|---|" + "---:|" * (len(names) + 1))
    for sampler in SAMPLER_NAMES:
        old = ratios[sampler, OLD_DEFAULTS[sampler], RANGES[0]]
        on_edm = " (log_snr on EDM)" if NEW_DEFAULTS[sampler] == "uniform" else ""
        for label, row in ((f"before: {OLD_DEFAULTS[sampler]}, [sigma_0, 80]", old),
                           (f"now: {NEW_DEFAULTS[sampler]}{on_edm}, [0.1, 20]", defaults[sampler])):  # fmt: skip
            cells = " | ".join(f"{row[n]:.2f}" if n in row else "—" for n in names)
            print(f"| {sampler} | {label} | {cells} | {max(row.values()):.2f} |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
