"""What the CLI's ``inpaint`` and ``edit`` do with an image checkpoint: read the image (and mask) files, run
:func:`~diffusion_playground.diffusion.editing.inpaint` or :func:`~diffusion_playground.diffusion.editing.sdedit`,
and write a before/after figure and the results as a tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from diffusion_playground.atomic_files import atomic_write, ensure_writable_folder
from diffusion_playground.diffusion.editing import inpaint, sdedit
from diffusion_playground.experiments.from_checkpoint import SamplingOptions, TrainedModel, _finite, _output_stem
from diffusion_playground.visualization import plot_image_grid


def _image_checkpoint(trained: TrainedModel, command: str) -> tuple[int, int, int]:
    if trained.is_points:
        raise ValueError(f"`{command}` works on image checkpoints; this one makes 2-D points")
    return trained.shape  # (C, H, W)


def _read_pixels(path: str | Path, shape: tuple[int, int, int], what: str, mode: str) -> np.ndarray:
    """The file as an (H, W, C) uint8 array in ``mode`` ("L" or "RGB"), checked against the model's image size."""
    try:
        with Image.open(path) as file:
            pixels = np.asarray(file.convert(mode), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError(f"{what} {path} is not an image file Pillow can read (PNG, JPEG, ...)") from None
    height, width = shape[1:]
    if pixels.shape[:2] != (height, width):
        raise ValueError(
            f"{what} {path} is {pixels.shape[1]}x{pixels.shape[0]} pixels but this checkpoint's model makes "
            f"{width}x{height} images; resize it to {width}x{height}"
        )
    return pixels.reshape(height, width, -1)


def read_image_file(path: str | Path, shape: tuple[int, int, int]) -> Tensor:
    """An image file as a (1, C, H, W) tensor in [-1, 1] (grey for C = 1, RGB for C = 3), or a ValueError that
    says what is wrong with it. MNIST-style digits are white on black."""
    pixels = _read_pixels(path, shape, "--image", "L" if shape[0] == 1 else "RGB")
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def read_mask_file(path: str | Path, shape: tuple[int, int, int]) -> Tensor:
    """A mask file as a (1, 1, H, W) tensor of 0/1: white (grey >= 128) = known and kept, black = filled in."""
    mask = torch.from_numpy(_read_pixels(path, shape, "--mask", "L")[..., 0] >= 128).float()[None, None]
    if bool((mask == 1).all()):
        raise ValueError(f"--mask {path} is white everywhere: nothing to fill in (black marks the pixels to fill in)")
    if bool((mask == 0).all()):
        raise ValueError(f"--mask {path} is black everywhere: nothing is kept, which is sampling (use `sample`); white marks the known pixels")
    return mask


def _conditioning(trained: TrainedModel, options: SamplingOptions) -> dict:
    if options.class_label is None:
        if options.guidance_scale != 0.0:
            raise ValueError("--guidance needs --class (the digit to guide towards)")
        return {}
    if trained.num_classes is None:
        raise ValueError("--class needs a class-conditional checkpoint; this model is unconditional")
    if not 0 <= options.class_label < trained.num_classes:
        raise ValueError(f"--class must lie in [0, {trained.num_classes}); got {options.class_label}")
    return {"class_labels": options.class_label, "guidance_scale": options.guidance_scale}


def _write(results: Tensor, rows: list[Tensor], row_labels: list[str], title: str, out: Path) -> list[Path]:
    figure_path, tensor_path = out.with_suffix(".png"), out.with_suffix(".pt")
    with atomic_write(tensor_path) as handle:
        torch.save({"results": results}, handle)
    ncol = results.shape[0]
    grid = torch.cat([row.expand(ncol, *row.shape[1:]) if row.shape[0] == 1 else row for row in rows])
    plot_image_grid(grid.cpu(), ncol, row_labels=row_labels, title=title, cell_inches=0.8, path=figure_path)
    return [figure_path, tensor_path]


def inpaint_checkpoint(
    trained: TrainedModel, options: SamplingOptions, image_path: str | Path, mask_path: str | Path, out: str | Path,
    *, resample: int = 1, count: int = 8,
) -> list[Path]:  # fmt: skip
    """``count`` completions of the image file's pixels where the mask file is black; writes ``<out>.png`` (the
    image, the image with the pixels to fill in grey, the completions) and ``<out>.pt``."""
    shape = _image_checkpoint(trained, "inpaint")
    image, mask = read_image_file(image_path, shape), read_mask_file(mask_path, shape)
    if options.sampler not in ("ddpm", "ddim"):
        raise ValueError(f"inpainting walks the reverse posterior: --sampler must be ddpm or ddim; got {options.sampler}")
    out = _output_stem(out, "inpainted")
    ensure_writable_folder(out.parent, "--out's folder")
    device = next(trained.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(options.seed)
    results = inpaint(
        trained.model, trained.schedule, image.expand(count, *shape).to(device), mask.to(device), sampler=options.sampler,
        steps=options.steps, resample=resample, clip_denoised=options.clip_denoised, generator=generator,
        **_conditioning(trained, options),
    ).cpu()  # fmt: skip
    results = _finite(results, options)
    shown_mask = image * mask  # the pixels to fill in shown at 0 (mid grey in [-1, 1])
    title = f"inpainting: {options.sampler}, {options.steps} steps, resample {resample}"
    return _write(results, [image, shown_mask, results], ["input", "known", "inpainted"], title, out)


def edit_checkpoint(
    trained: TrainedModel, options: SamplingOptions, image_path: str | Path, out: str | Path, *, strength: float,
    count: int = 8,
) -> list[Path]:  # fmt: skip
    """SDEdit: ``count`` edits of the image file at ``strength``; writes ``<out>.png`` (input and edits) and ``<out>.pt``."""
    shape = _image_checkpoint(trained, "edit")
    image = read_image_file(image_path, shape)
    out = _output_stem(out, "edited")
    ensure_writable_folder(out.parent, "--out's folder")
    device = next(trained.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(options.seed)
    results = sdedit(
        trained.model, trained.schedule, image.expand(count, *shape).to(device), strength, sampler=options.sampler,
        steps=options.steps, clip_denoised=options.clip_denoised, generator=generator, **_conditioning(trained, options),
    ).cpu()  # fmt: skip
    results = _finite(results, options)
    title = f"SDEdit: strength {strength}, {options.sampler}, {options.steps} steps"
    return _write(results, [image, results], ["input", "edited"], title, out)


__all__ = ["edit_checkpoint", "inpaint_checkpoint", "read_image_file", "read_mask_file"]
