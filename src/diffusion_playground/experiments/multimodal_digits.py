"""Multimodal digits: an image and its label diffused and generated together (``mnist_multimodal.ipynb``).

The sample is ``{"image": (B, 1, H, W) floats in [-1, 1], "label": (B, 1) category indices}``, corrupted by a
:class:`~diffusion_playground.diffusion.multimodal.MultimodalDiffusion` (Gaussian image, categorical label) and
denoised by one :class:`~diffusion_playground.models.MultimodalModel`. This module holds what the notebook needs
beyond the package's generic parts: the network, batched sampling, how well the network reads the label off a
noisy image, and two plots.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from diffusion_playground.diffusion.categorical import CategoricalDiffusion
from diffusion_playground.diffusion.multimodal import MultimodalDiffusion
from diffusion_playground.diffusion.training_utils import q_sample, randn_like
from diffusion_playground.models.backbones.unet import unet_mnist, unet_tiny
from diffusion_playground.models.multimodal_model import MultimodalModel
from diffusion_playground.visualization.image_grid import image_mosaic


def image_label_model(
    process: MultimodalDiffusion, image_shape: Sequence[int], *, time_emb_dim: int = 128
) -> MultimodalModel:
    """``unet_tiny`` (8x8) or ``unet_mnist`` (28x28) over the image with the label's one-hot code as extra constant
    channels (``MultimodalModel.packed_shape``), in a MultimodalModel for ``process``'s parts "image" and "label"."""
    image_shape = tuple(int(d) for d in image_shape)
    make_backbone = {8: unet_tiny, 28: unet_mnist}.get(image_shape[-1])
    if make_backbone is None or len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, 8, 8) (digits) or (C, 28, 28) (MNIST); got {image_shape}")
    part_shapes = {"image": image_shape, "label": process.encoded_shape("label", (1,))}  # label: (1,) -> one-hot (S,)
    in_channels = MultimodalModel.packed_shape(part_shapes)[0]  # C + S
    backbone = make_backbone(cond_dim=time_emb_dim, in_channels=in_channels)
    return MultimodalModel(backbone, part_shapes, time_emb_dim, num_time_steps=process.T)


def sample_in_batches(
    process: MultimodalDiffusion, model: torch.nn.Module, num_samples: int, shapes: Mapping[str, Sequence[int]], *,
    given: Mapping[str, Tensor] | None = None, batch_size: int = 500, seed: int = 0,
) -> dict[str, Tensor]:  # fmt: skip
    """``process.sample`` in batches of at most ``batch_size`` (``given`` split alongside), results on the CPU."""
    given = dict(given or {})
    generator = torch.Generator().manual_seed(seed)  # on the CPU: seeds a CUDA run the same way
    parts: dict[str, list[Tensor]] = {name: [] for name in shapes}
    for start in range(0, num_samples, batch_size):
        size = min(batch_size, num_samples - start)
        batch_given = {name: value[start : start + size] for name, value in given.items()}
        out = process.sample(model, size, shapes, given=batch_given, generator=generator)
        for name, value in out.items():
            parts[name].append(value.cpu())
    return {name: torch.cat(values) for name, values in parts.items()}


@torch.no_grad()
def label_accuracy_vs_image_noise(
    process: MultimodalDiffusion, model: torch.nn.Module, images: Tensor, labels: Tensor, steps: Sequence[int], *,
    seed: int = 0,
) -> list[float]:  # fmt: skip
    """For each t in ``steps``: the accuracy of argmax_k p~_theta(label_0 = k | x_t^image, label_{T-1}), the
    network's one-shot guess of the label from an image noised to step t while the label is pure noise (drawn from
    the label process's stationary distribution: all MASK for the absorbing transition, uniform otherwise)."""
    label_process = process.processes["label"]
    if not isinstance(label_process, CategoricalDiffusion):
        raise TypeError("the 'label' part must have a CategoricalDiffusion")
    device = next(model.parameters()).device
    image_process = copy.copy(process.processes["image"]).to(device)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)  # on the CPU: seeds a CUDA run the same way
    images, labels = images.to(device), labels.to(device)
    batch = images.shape[0]
    last = torch.full((batch,), process.T - 1, device=device)
    label_t = label_process.sample_stationary((batch, 1), generator).to(device)  # (B, 1): x_{T-1}^label ~ pi
    accuracies = []
    for t in steps:
        t_image = torch.full((batch,), int(t), device=device)
        x_t = q_sample(images, image_process, t_image, randn_like(images, generator))
        out = model({"image": x_t, "label": label_process.encode(label_t)}, {"image": t_image, "label": last})
        logits = label_process.logits_from_output(out["label"], label_t)  # (B, 1, S)
        accuracies.append(float((logits[:, 0].argmax(dim=-1) == labels).double().mean()))
    model.train(was_training)
    return accuracies


def plot_labelled_images(
    images: Tensor, labels: Tensor, *, agrees: Tensor | None = None, ncol: int = 10, title: str | None = None,
    cell_inches: float = 0.6,
) -> Figure:  # fmt: skip
    """Images (N, 1, H, W) in [-1, 1], each titled with its label (N,); a title in red where ``agrees`` (N,) is False."""
    labels = labels.reshape(-1).cpu()
    if images.ndim != 4 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"need images (N, C, H, W) and one label each; got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    nrow = -(-images.shape[0] // ncol)
    fig = Figure(
        figsize=(ncol * cell_inches + 0.2, nrow * (cell_inches + 0.15) + (0.4 if title else 0.1)), layout="constrained"
    )
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= images.shape[0]:
            continue
        cell = image_mosaic(images[i : i + 1], 1, padding=0)  # (H, W, C) in [0, 1]
        ax.imshow(
            cell[..., 0].numpy() if cell.shape[-1] == 1 else cell.numpy(),
            cmap="gray",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        wrong = agrees is not None and not bool(agrees[i])
        ax.set_title(str(int(labels[i])), fontsize=9, color="tab:red" if wrong else "black", pad=2)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_label_histogram(counts: Mapping[str, Tensor], *, num_classes: int = 10) -> Figure:
    """Bars of the fraction of each class, one group per entry of ``counts`` (e.g. generated vs training labels)."""
    fig = Figure(figsize=(6, 2.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(counts), 1)
    for j, (name, labels) in enumerate(counts.items()):
        fraction = torch.bincount(labels.reshape(-1).cpu(), minlength=num_classes).double() / labels.numel()
        ax.bar(torch.arange(num_classes) + (j - (len(counts) - 1) / 2) * width, fraction, width, label=name)
    ax.set_xticks(range(num_classes))
    ax.set_xlabel("label")
    ax.set_ylabel("fraction")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


def plot_accuracy_vs_t(steps: Sequence[int], accuracies: Sequence[float], *, reference: float | None = None) -> Figure:
    """Accuracy against the image's time step, with a dashed reference line (e.g. a classifier on real images)."""
    fig = Figure(figsize=(5, 2.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(list(steps), list(accuracies), marker="o", label="one-shot label from the noisy image")
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label="CNN classifier, real test images")
    ax.axhline(0.1, color="gray", linestyle=":", label="chance (1/10)")
    ax.set_xlabel(r"$t_\mathrm{image}$")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


__all__ = [
    "image_label_model",
    "label_accuracy_vs_image_noise",
    "plot_accuracy_vs_t",
    "plot_label_histogram",
    "plot_labelled_images",
    "sample_in_batches",
]
