"""The image experiments: a class-conditional U-Net trained on digits (offline), MNIST or CIFAR-10, then sampled.

``python -m diffusion_playground train {digits,mnist,cifar10}`` runs :func:`run_images`. One registry,
:data:`IMAGE_RECIPES`, names each dataset's loader, U-Net preset, class names and default settings.
``--quick`` runs :func:`quick_config`'s smoke test: a small U-Net, 20 steps, a small sample grid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from diffusion_playground.data.cifar10 import CIFAR10_CLASSES, load_cifar10
from diffusion_playground.data.digits import load_digits_images
from diffusion_playground.data.mnist import load_mnist
from diffusion_playground.diffusion.backward import generate_samples
from diffusion_playground.diffusion.edm import EDMDiffusion
from diffusion_playground.diffusion.noise_schedule import LinearNoiseSchedule, NoiseSchedule
from diffusion_playground.diffusion.rectified_flow import RectifiedFlow
from diffusion_playground.experiments.summary import run_summary
from diffusion_playground.models.backbones.unet import UNetBackbone, unet_mnist, unet_mnist_cpu, unet_small, unet_tiny
from diffusion_playground.models.edm_preconditioner import EDMPreconditioner
from diffusion_playground.models.time_and_class_conditioned_model import TimeAndClassConditionedModel
from diffusion_playground.training import distributed
from diffusion_playground.training.acceleration import cpu_has_fast_bf16
from diffusion_playground.training.denoiser_trainer import train_denoiser
from diffusion_playground.visualization import plot_image_grid, plot_loss_curve


@dataclass
class ImageConfig:
    """Settings of an image experiment; defaults come from the dataset's recipe."""

    time_steps: int = 1000  # T of the linear schedule (Ho et al. 2020), betas scaled by 1000 / T
    time_emb_dim: int = 128
    prediction_type: str = "eps"  # the objective (OBJECTIVES): eps, x0 or v (Salimans & Ho 2022), flow or edm
    epochs: int = 30
    train_steps: int | None = None  # instead of epochs: about this many optimizer steps, whatever the data size
    max_steps: int | None = None  # stop after this many optimizer steps (None: train every epoch)
    batch_size: int = 128
    lr: float = 2e-3
    ema_decay: float = 0.999
    precision: str = "auto"  # the trainer's autocast: "auto" (bf16 on recent GPUs, fp32 on the CPU), "bf16", ...
    cond_drop_prob: float = 0.1  # p_uncond of classifier-free guidance (Ho & Salimans 2022)
    samples_per_class: int = 8  # rows of the sample grid: one per class
    sampler: str = "ddim"
    sampling_steps: int = 50
    guidance_scale: float = 1.0
    clip_denoised: bool = True  # keep x0_hat in [-1, 1] while sampling (diffusion/thresholding.py)
    seed: int = 0
    small_backbone: bool = False  # the recipe's U-Net shrunk by its small_overrides (smoke tests)


# What ImageConfig.prediction_type may be, and what each trains: a target of the linear schedule, flow matching's
# velocity on RectifiedFlow's straight path, or Karras et al.'s preconditioned denoiser on EDMDiffusion's noise levels.
OBJECTIVES = ("eps", "x0", "v", "flow", "edm")
EDM_SIGMA_DATA = 0.5  # images in [-1, 1] (Karras et al. 2022, Table 1)


def image_process(config: ImageConfig) -> NoiseSchedule | EDMDiffusion:
    """The process ``config.prediction_type`` trains on: ``RectifiedFlow(T)`` for flow, ``EDMDiffusion()`` for edm,
    else ``LinearNoiseSchedule.scaled(T)``."""
    if config.prediction_type not in OBJECTIVES:
        raise ValueError(f"the objective must be one of {OBJECTIVES}; got {config.prediction_type!r}")
    if config.prediction_type == "flow":
        return RectifiedFlow(config.time_steps)
    if config.prediction_type == "edm":
        return EDMDiffusion(sigma_data=EDM_SIGMA_DATA)
    return LinearNoiseSchedule.scaled(config.time_steps)


def quick_config(config: ImageConfig) -> ImageConfig:
    """``config`` as a smoke test (the CLI's ``--quick``): a small U-Net trained for at most 20 steps, then a
    grid of 2 samples per class drawn in 8 DDIM steps. It checks the whole pipeline (data files, training,
    checkpoint, sampling, figures) in well under a minute on a CPU; its samples are still noise."""
    return replace(config, max_steps=20, small_backbone=True, samples_per_class=2, sampling_steps=8)


@dataclass(frozen=True)
class ImageRecipe:
    """One dataset: how to load ``(images, labels)`` given (root, train, download), its backbone and defaults.

    ``backbone`` / ``defaults`` are the full recipe, sized for a GPU and the whole dataset. A dataset may also
    have a CPU recipe (``cpu_backbone`` / ``cpu_defaults``), chosen by :func:`choose_recipe`: a smaller U-Net
    and settings measured to give clean samples within minutes on 2 CPU cores.
    """

    load: Callable[[str | Path, bool, bool], tuple[Tensor, Tensor]]
    backbone: Callable[..., UNetBackbone]
    class_names: tuple[str, ...]
    defaults: ImageConfig
    small_overrides: dict[str, object]  # backbone arguments of the small U-Net (ImageConfig.small_backbone)
    cpu_backbone: Callable[..., UNetBackbone] | None = None
    cpu_defaults: ImageConfig | None = None
    full_size: int = 0  # training images of the whole dataset: fewer (or no GPU) selects the CPU recipe


# two levels, one residual block each, 16 base channels, attention at the second: about 210k parameters, most of
# them in the blocks' conditioning layers (an eighth of unet_mnist, a fifteenth of unet_small)
_SMALL_UNET = dict(
    base_channels=16, channel_mult=(1, 2), num_res_blocks=1, head_channels=32, norm_groups=8, dropout=0.0
)


IMAGE_RECIPES: dict[str, ImageRecipe] = {
    # 1,438 8x8 digits: 12 steps per epoch; 50 epochs = 600 steps train in about 2.5 minutes on one CPU core
    "digits": ImageRecipe(
        lambda root, train, download: load_digits_images(train), unet_tiny, tuple(str(d) for d in range(10)),
        ImageConfig(epochs=50), {},  # unet_tiny is small already
    ),
    # the full recipe: 60,000 images, 10 epochs = 4,690 steps at batch 128 (a GPU); the CPU recipe: measured on
    # the 4,000-digit sample on 2 CPU cores (benchmarks/mnist_sample.py, results in the MNIST README)
    "mnist": ImageRecipe(
        load_mnist, unet_mnist, tuple(str(d) for d in range(10)), ImageConfig(epochs=10, prediction_type="v"),
        {**_SMALL_UNET, "attention_resolutions": (14,)},
        cpu_backbone=unet_mnist_cpu,
        cpu_defaults=ImageConfig(prediction_type="v", train_steps=2500, batch_size=64, lr=2e-3, precision="bf16"),
        full_size=60_000,
    ),
    "cifar10": ImageRecipe(
        load_cifar10, unet_small, CIFAR10_CLASSES, ImageConfig(epochs=100, lr=2e-4),
        {**_SMALL_UNET, "attention_resolutions": (16,)},
    ),
}  # fmt: skip

# the image shape (C, H, W) each recipe's backbone takes, to recognise a checkpoint's dataset
RECIPE_OF_SHAPE: dict[tuple[int, int, int], str] = {(1, 8, 8): "digits", (1, 28, 28): "mnist", (3, 32, 32): "cifar10"}


def check_dataset(name: str) -> ImageRecipe:
    if name not in IMAGE_RECIPES:
        raise ValueError(f"dataset must be one of {tuple(IMAGE_RECIPES)}; got {name!r}")
    return IMAGE_RECIPES[name]


RecipeChoice = Literal["auto", "full", "cpu"]


def choose_recipe(
    recipe: ImageRecipe, choice: RecipeChoice = "auto", *, num_images: int, device: str | torch.device
) -> tuple[str, Callable[..., UNetBackbone], ImageConfig]:
    """``(name, backbone preset, settings)`` of the recipe to run: ``"full"`` or ``"cpu"``.

    ``"auto"`` picks the full recipe on a CUDA device with the whole dataset (``num_images >= recipe.full_size``),
    else the CPU recipe where the dataset has one. ``"full"`` / ``"cpu"`` force either. The CPU recipe's bf16
    autocast becomes fp32 on a CPU without native bf16 kernels (:func:`cpu_has_fast_bf16`).
    """
    if choice not in ("auto", "full", "cpu"):
        raise ValueError(f"recipe must be 'auto', 'full' or 'cpu'; got {choice!r}")
    has_cpu = recipe.cpu_defaults is not None and recipe.cpu_backbone is not None
    if choice == "cpu" and not has_cpu:
        raise ValueError("this dataset has no CPU recipe (only mnist has one); use --recipe full or auto")
    on_gpu = torch.device(device).type == "cuda"
    if choice == "full" or not has_cpu or (choice == "auto" and on_gpu and num_images >= recipe.full_size):
        return "full", recipe.backbone, recipe.defaults
    config = recipe.cpu_defaults
    if config.precision == "bf16" and not cpu_has_fast_bf16():  # emulated bf16 is slower than fp32
        config = replace(config, precision="fp32")
    return "cpu", recipe.cpu_backbone, config


def build_image_model(
    recipe: ImageRecipe, config: ImageConfig, backbone: Callable[..., UNetBackbone] | None = None
) -> TimeAndClassConditionedModel | EDMPreconditioner:
    """The class-conditional U-Net of ``config``: ``backbone`` (default: the recipe's full preset), shrunk by the
    recipe's ``small_overrides`` when ``config.small_backbone``, in the wrapper of ``config.prediction_type``
    (:class:`EDMPreconditioner` for edm, else :class:`TimeAndClassConditionedModel`)."""
    overrides = recipe.small_overrides if config.small_backbone else {}
    backbone_model = (backbone or recipe.backbone)(cond_dim=config.time_emb_dim, **overrides)
    if config.prediction_type == "edm":
        return EDMPreconditioner(backbone_model, num_classes=len(recipe.class_names), sigma_data=EDM_SIGMA_DATA,
                                 cond_drop_prob=config.cond_drop_prob)  # fmt: skip
    return TimeAndClassConditionedModel(
        backbone_model, num_classes=len(recipe.class_names), time_emb_dim=config.time_emb_dim,
        num_time_steps=config.time_steps, prediction_type=config.prediction_type, cond_drop_prob=config.cond_drop_prob,
    )  # fmt: skip


def epochs_for(config: ImageConfig, num_images: int) -> int:
    """``config.epochs``, or the epochs that make about ``config.train_steps`` optimizer steps on ``num_images``."""
    if config.train_steps is None:
        return config.epochs
    steps_per_epoch = math.ceil(num_images / config.batch_size)
    return max(1, round(config.train_steps / steps_per_epoch))


def sample_class_grid(
    model: TimeAndClassConditionedModel,
    schedule: NoiseSchedule | EDMDiffusion,
    samples_per_class: int,
    *,
    sampler: str = "ddim",
    steps: int | None = 50,
    guidance_scale: float = 0.0,
    classes: list[int] | None = None,
    generator: torch.Generator | None = None,
    show_progress: bool = False,
    return_trajectory: bool = False,
    clip_denoised: bool = True,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """``samples_per_class`` samples of each class (all classes by default), class by class.

    ``clip_denoised`` keeps every step's x0 estimate in [-1, 1] (on by default: images live there; see
    :mod:`~diffusion_playground.diffusion.thresholding`). Returns ``(samples (K * n, C, H, W) clipped to [-1, 1],
    labels (K * n,))`` and the trajectory if asked.
    """
    classes = list(range(model.num_classes)) if classes is None else classes
    labels = torch.tensor(classes).repeat_interleave(samples_per_class)  # (K * n,)
    result = generate_samples(
        model, schedule, model.backbone.input_shape, len(labels), sampler=sampler, steps=steps,
        guidance_scale=guidance_scale, class_labels=labels, generator=generator, show_progress=show_progress,
        return_trajectory=return_trajectory, clip_denoised=clip_denoised,
    )  # fmt: skip
    samples, trajectory = result if return_trajectory else (result, None)
    samples = samples.clamp(-1.0, 1.0).cpu()
    return (samples, labels, trajectory) if return_trajectory else (samples, labels)


def run_images(
    dataset: str,
    out_dir: str | Path,
    *,
    data_root: str | Path = "data",
    download: bool = False,
    epochs: int | None = None,
    seed: int = 0,
    quick: bool = False,
    recipe: RecipeChoice = "auto",
    device: str | torch.device = "cpu",
    show_progress: bool = True,
    objective: str | None = None,
) -> dict[str, object]:
    """Train a class-conditional U-Net on ``dataset``, then write a grid of samples (one row per class).

    ``objective`` (one of :data:`OBJECTIVES`) replaces the recipe's: e.g. "flow" trains flow matching on
    ``RectifiedFlow``, "edm" Karras et al.'s preconditioned denoiser on ``EDMDiffusion``, at the recipe's budget.

    ``recipe`` picks the full or the CPU recipe (:func:`choose_recipe`; "auto": the full one on a GPU with the
    whole dataset). ``quick`` turns the run into :func:`quick_config`'s smoke test. Under torchrun every process trains
    (data-parallel) and only rank 0 samples and writes the figures; the other ranks return after training,
    with no paths.
    """
    spec = check_dataset(dataset)
    out_dir = Path(out_dir)
    images, labels = spec.load(data_root, True, download)  # DatasetNotFoundError names the files to fetch
    recipe_name, backbone, config = choose_recipe(spec, recipe, num_images=images.shape[0], device=device)
    config = replace(config, seed=seed, **({} if epochs is None else {"epochs": epochs, "train_steps": None}))
    config = quick_config(config) if quick else config
    config = config if objective is None else replace(config, prediction_type=objective)
    schedule = image_process(config)  # checks the objective before any training
    torch.manual_seed(config.seed)
    model = build_image_model(spec, config, backbone)
    start = time.perf_counter()
    history = train_denoiser(
        model, images, schedule, labels=labels, epochs=epochs_for(config, images.shape[0]), lr=config.lr,
        batch_size=config.batch_size, max_steps=config.max_steps, ema_decay=config.ema_decay,
        precision=config.precision, checkpoint_dir=out_dir / "checkpoints", seed=config.seed, device=device,
        show_progress=show_progress,
    )  # fmt: skip
    train_seconds = time.perf_counter() - start
    if not distributed.is_main_process():
        return run_summary(history, {}, config, train_seconds=train_seconds, sample_seconds=0.0, recipe=recipe_name)
    samples, _ = sample_class_grid(
        history.ema_model, schedule, config.samples_per_class, sampler=config.sampler, steps=config.sampling_steps,
        guidance_scale=config.guidance_scale, generator=torch.Generator(device=device).manual_seed(config.seed + 1),
        show_progress=show_progress, clip_denoised=config.clip_denoised,
    )  # fmt: skip
    sample_seconds = time.perf_counter() - start - train_seconds
    paths = {name: out_dir / f"{name}.png" for name in ("samples", "loss_curve")}
    plot_image_grid(
        samples, config.samples_per_class, row_labels=list(spec.class_names),
        title=f"{dataset}: {config.sampler}, {config.sampling_steps} steps, guidance {config.guidance_scale}",
        path=paths["samples"],
    )  # fmt: skip
    plot_loss_curve(history.losses, path=paths["loss_curve"])
    return run_summary(
        history, paths, config, train_seconds=train_seconds, sample_seconds=sample_seconds, recipe=recipe_name
    )
