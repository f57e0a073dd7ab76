"""What the CLI does with a trained checkpoint: sample it, evaluate it, animate its reverse process.

A checkpoint rebuilds its own model and noise schedule (:func:`load_checkpoint`), so the only input is its path.
Its backbone's ``input_shape`` tells the kind: ``(2,)`` is a 2-D point model, ``(C, H, W)`` an image model. A point
model's checkpoint records its 2-D toy dataset (``train_denoiser(metadata=...)``, see experiments.moons.toy_metadata);
one that does not is taken for moons, what every 2-D run trained on before datasets were recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import torch
from torch import Tensor, nn

from diffusion_playground.atomic_files import atomic_write, ensure_writable_folder
from diffusion_playground.data.toys_2d import load_toy_2d
from diffusion_playground.diffusion.backward import generate_samples, non_finite_count, sampler_sigmas
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.evaluation.classifier import classifier_metrics, load_or_train_classifier
from diffusion_playground.evaluation.metrics import sample_quality
from diffusion_playground.experiments.images import IMAGE_RECIPES, RECIPE_OF_SHAPE, sample_class_grid
from diffusion_playground.experiments.moons import toy_data_of
from diffusion_playground.training.checkpoint import load_checkpoint
from diffusion_playground.visualization import animate_reverse_process, plot_image_grid, plot_samples_2d


@dataclass
class TrainedModel:
    """A checkpoint's EMA model, its schedule, and what it generates."""

    model: nn.Module
    schedule: NoiseSchedule
    shape: tuple[int, ...]  # one sample: (2,) or (C, H, W)
    metadata: dict[str, Any] = field(default_factory=dict)  # what the run recorded (train_denoiser(metadata=...))

    @property
    def is_points(self) -> bool:
        return len(self.shape) == 1

    @property
    def num_classes(self) -> int | None:
        return getattr(self.model, "num_classes", None)

    @property
    def dataset(self) -> str | None:
        """Points: the 2-D toy the checkpoint was trained on (moons if it does not say); images: the image recipe
        whose images have this shape, if any."""
        if self.is_points:
            return toy_data_of(self.metadata)[0]
        return RECIPE_OF_SHAPE.get(self.shape)

    def real_points(self, n: int, seed: int) -> Tensor:
        """``n`` fresh points of the 2-D toy this point model was trained on (same options, same standardisation)."""
        if not self.is_points:
            raise ValueError(f"this checkpoint makes {self.shape} images, not 2-D points")
        name, options = toy_data_of(self.metadata)
        return load_toy_2d(name, n, seed=seed, **options)


def open_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a checkpoint file (or the newest valid one in a folder); raises FileNotFoundError or CheckpointError."""
    model, schedule, metadata = load_checkpoint(path, device=device, with_schedule=True, with_metadata=True)
    return TrainedModel(model, schedule, tuple(model.backbone.input_shape), metadata)


@dataclass
class SamplingOptions:
    """The sampler settings shared by ``sample``, ``evaluate`` and ``animate``."""

    sampler: str = "ddim"  # a key of diffusion.backward.SAMPLERS
    steps: int | None = 50  # None = all T trained steps
    class_label: int | None = None  # images: one class only (None = every class, one row each)
    guidance_scale: float = 0.0
    num_samples: int | None = None  # points: total (default 2000); images: per class (default 8)
    seed: int = 0
    clip_denoised: bool = True  # images: keep x0_hat in [-1, 1] at every step (points are never clipped)


def draw_samples(
    trained: TrainedModel, options: SamplingOptions, *, show_progress: bool = True, return_trajectory: bool = False
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(samples, labels or None, trajectory or None)`` from a checkpoint's model."""
    generator = torch.Generator(device=next(trained.model.parameters()).device).manual_seed(options.seed)
    if trained.is_points or trained.num_classes is None:
        if options.class_label is not None or options.guidance_scale != 0.0:
            raise ValueError("--class and --guidance need a class-conditional checkpoint; this model is unconditional")
        default = 2000 if trained.is_points else 64
        result = generate_samples(
            trained.model, trained.schedule, trained.shape, options.num_samples or default, sampler=options.sampler,
            steps=options.steps, generator=generator, show_progress=show_progress, return_trajectory=return_trajectory,
            clip_denoised=options.clip_denoised and not trained.is_points,
        )  # fmt: skip
        samples, trajectory = result if return_trajectory else (result, None)
        return _finite(samples.cpu(), options), None, trajectory
    if options.class_label is not None and not 0 <= options.class_label < trained.num_classes:
        raise ValueError(f"--class must lie in [0, {trained.num_classes}); got {options.class_label}")
    classes = None if options.class_label is None else [options.class_label]
    result = sample_class_grid(
        trained.model, trained.schedule, options.num_samples or 8, sampler=options.sampler, steps=options.steps,
        guidance_scale=options.guidance_scale, classes=classes, generator=generator, show_progress=show_progress,
        return_trajectory=return_trajectory, clip_denoised=options.clip_denoised,
    )  # fmt: skip
    samples, labels, trajectory = result if return_trajectory else (*result, None)
    return _finite(samples, options), labels, trajectory


def _output_stem(out: str | Path, name: str) -> Path:
    """``--out`` as a path without suffix: a folder (existing, or written with a trailing /) gets ``name`` in it."""
    if str(out).endswith(("/", os.sep)) or Path(out).is_dir():
        return Path(out) / name
    return Path(out)


def _finite(samples: Tensor, options: SamplingOptions) -> Tensor:
    """The samples, or a ValueError when some are NaN or infinite (rather than writing them and exiting 0)."""
    bad = non_finite_count(samples)
    if bad:
        raise ValueError(
            f"{bad} of {samples.shape[0]} samples came out NaN or infinite ({options.sampler}, {options.steps} steps, "
            f"guidance {options.guidance_scale}); lower --guidance, use more --steps, or check the checkpoint"
        )
    return samples


def _grid_layout(trained: TrainedModel, options: SamplingOptions, count: int) -> tuple[int, list[str] | None]:
    """(columns, row labels) of an image grid: one row per class when every class was drawn."""
    if trained.num_classes is None:
        return min(8, count), None
    per_class = count // (1 if options.class_label is not None else trained.num_classes)
    if options.class_label is not None:
        return min(8, per_class), None
    names = IMAGE_RECIPES[trained.dataset].class_names if trained.dataset else [str(k) for k in range(trained.num_classes)]
    return per_class, list(names)


def write_samples(trained: TrainedModel, options: SamplingOptions, out: str | Path, *, show_progress: bool = True) -> list[Path]:
    """Samples as ``<out>.pt`` (a dict of tensors) and ``<out>.png`` (a scatter or an image grid); returns both paths."""
    out = _output_stem(out, "samples")
    tensor_path, figure_path = out.with_suffix(".pt"), out.with_suffix(".png")
    ensure_writable_folder(out.parent, "--out's folder")  # before sampling, not after
    samples, labels, _ = draw_samples(trained, options, show_progress=show_progress)
    with atomic_write(tensor_path) as handle:
        torch.save({"samples": samples, "labels": labels}, handle)
    walked = len(sampler_sigmas(trained.model, trained.schedule, options.sampler, options.steps)) - 1
    title = f"{options.sampler}, {walked} steps"  # the steps walked (a snapped Karras grid can have fewer than asked)
    if trained.is_points:
        real = trained.real_points(samples.shape[0], seed=options.seed + 1001)
        plot_samples_2d(samples, real, title=title, path=figure_path)
    else:
        ncol, row_labels = _grid_layout(trained, options, samples.shape[0])
        plot_image_grid(samples, ncol, row_labels=row_labels, title=title, path=figure_path)
    return [figure_path, tensor_path]


def evaluate_points(trained: TrainedModel, options: SamplingOptions, *, show_progress: bool = True) -> dict[str, float]:
    """Sliced W2 and MMD^2 of the samples vs fresh points of the checkpoint's dataset (``trained.dataset``), with
    the data-vs-data floor (see evaluation.metrics)."""
    _check_sample_count(options.num_samples or 2000)
    samples, _, _ = draw_samples(trained, options, show_progress=show_progress)
    n = samples.shape[0]
    real = trained.real_points(n, seed=options.seed + 1001)
    reference = trained.real_points(n, seed=options.seed + 2002)
    return sample_quality(samples, real, reference)


def evaluate_images(
    trained: TrainedModel, options: SamplingOptions, *, data_root: str | Path, download: bool, classifier_path: str | Path,
    show_progress: bool = True,
) -> tuple[dict[str, float], bool]:  # fmt: skip
    """Class accuracy and classifier-feature Fréchet distance of class-conditional samples (evaluation.classifier).

    The classifier is read from ``classifier_path`` or trained on the dataset's real training images and saved
    there. Returns ``(figures, trained_now)``.
    """
    if trained.dataset is None or trained.num_classes is None:
        raise ValueError(
            f"image metrics need a class-conditional model of a known dataset ({dict(RECIPE_OF_SHAPE)}); "
            f"this checkpoint makes {trained.shape} images, class-conditional: {trained.num_classes is not None}"
        )
    _check_sample_count((options.num_samples or 8) * (1 if options.class_label is not None else trained.num_classes))
    trained_now = not Path(classifier_path).exists()  # load_or_train_classifier checks the path before training
    recipe = IMAGE_RECIPES[trained.dataset]
    train_images, train_labels = recipe.load(data_root, True, download)
    test_images, test_labels = recipe.load(data_root, False, download)
    device = next(trained.model.parameters()).device
    classifier = load_or_train_classifier(
        classifier_path, train_images, train_labels, trained.num_classes, device=device, show_progress=show_progress
    )
    samples, labels, _ = draw_samples(trained, options, show_progress=show_progress)
    return classifier_metrics(classifier, samples, labels, train_images, test_images, test_labels), trained_now


def _check_sample_count(total: int) -> None:
    """The metrics compare two distributions: they need at least two samples to estimate one."""
    if total < 2:
        raise ValueError(f"evaluating needs at least 2 samples to compare with the data; got {total} (raise --n)")


def animate_checkpoint(
    trained: TrainedModel, options: SamplingOptions, out: str | Path, *, frames: int = 40, fps: int = 10,
    show_progress: bool = True,
) -> list[Path]:  # fmt: skip
    """A GIF of the reverse process (points or an image grid) at ``out`` (suffix .gif)."""
    sigmas = sampler_sigmas(trained.model, trained.schedule, options.sampler, options.steps)  # what is walked
    if len(sigmas) < frames:  # before sampling; Karras grids snapped to trained levels can have fewer steps than asked
        walked = "" if options.steps is None or len(sigmas) - 1 == options.steps else (
            f" (on this model's trained noise levels --steps {options.steps} walks {len(sigmas) - 1})")
        raise ValueError(f"--frames {frames} needs at least {frames - 1} sampling steps; got --steps {options.steps}{walked}")
    if not trained.is_points and options.num_samples is None:
        options = SamplingOptions(**{**options.__dict__, "num_samples": 1 if options.class_label is None else 8})
    path = _output_stem(out, "reverse_process").with_suffix(".gif")
    ensure_writable_folder(path.parent, "--out's folder")
    _, _, trajectory = draw_samples(trained, options, show_progress=show_progress, return_trajectory=True)
    if trained.is_points:  # the learned field as arrows under the points, at each frame's noise level
        extra = {"field": (trained.model, trained.schedule), "sigmas": sigmas}
    else:
        extra = {"ncol": 10 if options.class_label is None else 8}
    animate_reverse_process(trajectory, path, frames=frames, fps=fps, show_progress=show_progress, **extra)
    return [path]
