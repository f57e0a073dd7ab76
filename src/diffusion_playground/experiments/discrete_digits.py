"""Discrete digits: images quantised to K grey levels as categories, for D3PM (``mnist_discrete.ipynb``).

A pixel x in [-1, 1] becomes the category k = round((x + 1) / 2 (K - 1)) in [0, K), and back x = 2 k / (K - 1) - 1.
:class:`~diffusion_playground.diffusion.categorical.CategoricalDiffusion` then treats the (B, 1, H, W) integer
image as H W categorical variables. This module holds what the notebook needs beyond the package's generic
parts: the quantisation, the D3PM U-Net, a picture of states with [MASK] in colour, two small plots, and
per-class sampling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from diffusion_playground.diffusion.categorical import CategoricalDiffusion
from diffusion_playground.models.backbones.unet import unet_mnist, unet_tiny
from diffusion_playground.models.time_and_class_conditioned_model import TimeAndClassConditionedModel
from diffusion_playground.visualization.loss_curve import ema_smooth

MASK_COLOR = (0.85, 0.25, 0.1)  # RGB of the [MASK] state in pictures


def quantize(images: Tensor, num_categories: int) -> Tensor:
    """Images in [-1, 1] -> LongTensor categories k = round((x + 1) / 2 (K - 1)) in [0, K) (nearest of K levels)."""
    if num_categories < 2:
        raise ValueError(f"num_categories (K) must be >= 2; got {num_categories}")
    levels = ((images.float().clamp(-1.0, 1.0) + 1.0) / 2.0 * (num_categories - 1)).round()
    return levels.long()


def dequantize(states: Tensor, num_categories: int) -> Tensor:
    """Categories k in [0, K) -> grey values x = 2 k / (K - 1) - 1 in [-1, 1] (float32)."""
    if states.is_floating_point() or states.min() < 0 or states.max() >= num_categories:
        raise ValueError(f"states must be integer categories in [0, {num_categories}) (no MASK)")
    return states.float() * (2.0 / (num_categories - 1)) - 1.0


def states_to_rgb(states: Tensor, num_categories: int, mask_color: Sequence[float] = MASK_COLOR) -> Tensor:
    """(N, 1, H, W) states -> (N, 3, H, W) RGB in [0, 1]: category k as grey k / (K - 1), [MASK] (k = K) in colour.

    Plot with ``plot_image_grid(rgb, ncol, value_range=(0, 1))``.
    """
    if states.ndim != 4 or states.shape[1] != 1:
        raise ValueError(f"states must have shape (N, 1, H, W); got {tuple(states.shape)}")
    states = states.long().cpu()
    is_mask = states >= num_categories  # (N, 1, H, W)
    grey = states.clamp(max=num_categories - 1).float() / (num_categories - 1)  # (N, 1, H, W)
    rgb = grey.expand(-1, 3, -1, -1).clone()  # (N, 3, H, W)
    color = torch.tensor(mask_color, dtype=torch.float32)[None, :, None, None]  # (1, 3, 1, 1)
    return torch.where(is_mask.expand_as(rgb), color.expand_as(rgb), rgb)


def d3pm_model(
    process: CategoricalDiffusion, image_size: int, *, num_classes: int = 10, time_emb_dim: int = 128
) -> TimeAndClassConditionedModel:
    """The class-conditional D3PM network: ``unet_tiny`` (8x8) or ``unet_mnist`` (28x28) with S = num_states input
    and output channels (one-hot x_t in, logits of p~_theta(x_0 | x_t) out), in TimeAndClassConditionedModel.

    No label dropout (``cond_drop_prob=0``): D3PM sampling here is plain conditional, without guidance.
    """
    make_backbone = {8: unet_tiny, 28: unet_mnist}.get(image_size)
    if make_backbone is None:
        raise ValueError(f"image_size must be 8 (digits) or 28 (MNIST); got {image_size}")
    backbone = make_backbone(cond_dim=time_emb_dim, in_channels=process.num_states)
    return TimeAndClassConditionedModel(
        backbone, num_classes, time_emb_dim, num_time_steps=process.T, cond_drop_prob=0.0
    )


def plot_alpha_bars(processes: Mapping[str, CategoricalDiffusion]) -> Figure:
    """alpha_bar_t of each process (solid) and P(x_t = x_0) = alpha_bar_t + (1 - alpha_bar_t) pi_{x_0} (dashed)."""
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    for (name, process), color in zip(processes.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        t = torch.arange(process.T)
        alpha_bars = process.alpha_bars.cpu()
        ax.plot(t, alpha_bars, color=color, label=rf"{name}: $\bar\alpha_t$")
        pi_x0 = 0.0 if process.mask_index is not None else 1.0 / process.num_categories
        ax.plot(t, alpha_bars + (1 - alpha_bars) * pi_x0, color=color, linestyle="--", label=rf"{name}: $P(x_t = x_0)$")
    ax.set_xlabel("t")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_loss_curves(losses: Mapping[str, Sequence[float]], *, smoothing: float = 0.95) -> Figure:
    """The per-step hybrid losses of several runs (EMA-smoothed, log scale) in one plot."""
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    for name, values in losses.items():
        ax.plot(range(1, len(values) + 1), ema_smooth(values, smoothing), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(r"$L_{vb} + \lambda L_{ce}$ (nats / pixel)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def sample_per_class(
    process: CategoricalDiffusion, model: torch.nn.Module, image_shape: Sequence[int], per_class: int, *,
    num_classes: int = 10, batch_size: int = 500, seed: int = 0,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``per_class`` D3PM samples of each class, drawn in batches: ``(samples (N, *image_shape) long on the CPU,
    requested (N,))``, class-major (row k of a grid with ``per_class`` columns is digit k)."""
    requested = torch.arange(num_classes).repeat_interleave(per_class)  # (N,)
    generator = torch.Generator().manual_seed(seed)  # on the CPU: seeds a CUDA run the same way
    samples = [
        process.sample(model, (len(labels), *image_shape), class_labels=labels, generator=generator).cpu()
        for labels in requested.split(batch_size)
    ]
    return torch.cat(samples), requested


__all__ = [
    "MASK_COLOR",
    "d3pm_model",
    "dequantize",
    "exact_copy_fraction",
    "nll_bound_bits",
    "plot_alpha_bars",
    "plot_loss_curves",
    "quantize",
    "sample_per_class",
    "states_to_rgb",
]


def exact_copy_fraction(images: Tensor, reference: Tensor) -> float:
    """Fraction of ``images`` (N, ...) equal, in every element, to at least one image of ``reference`` (M, ...):
    a memorisation check for integer images (compare samples with the training set, and test images with it).
    Each image is hashed as its bytes, so the cost is O((N + M) D) even for MNIST's 60,000 training images."""
    if images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"image shapes differ: {tuple(images.shape[1:])} vs {tuple(reference.shape[1:])}")
    known = {row.tobytes() for row in reference.flatten(1).long().cpu().numpy()}
    return sum(row.tobytes() in known for row in images.flatten(1).long().cpu().numpy()) / max(1, images.shape[0])


@torch.no_grad()
def nll_bound_bits(
    process: CategoricalDiffusion, model: torch.nn.Module, x0: Tensor, labels: Tensor | None = None, *,
    batch_size: int = 512, seed: int = 0,
) -> float:  # fmt: skip
    """The variational bound on -log p_theta(x_0 [| y]) of ``x0``, in bits per pixel (Austin et al. 2021, eq. 1):

        L_vb = KL(q(x_{T-1} | x_0) || pi) + sum_{t=1}^{T-1} E KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))
               - E log p~_theta(x_0 | x_{t=0}),

    every term evaluated at every t (one draw of x_t per image and step), averaged over images and pixels,
    divided by log 2. Compare with log2 K, the cost of drawing every pixel uniformly: under the absorbing transition
    a model that copies the visible pixels and guesses uniformly at masked ones has exactly that bound.
    """
    model.eval()
    device = next(model.parameters()).device
    x0 = x0.to(device)
    labels = labels.to(device) if labels is not None else None
    generator = torch.Generator(device).manual_seed(seed)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for t in range(process.T):
        for index in torch.arange(x0.shape[0], device=device).split(batch_size):
            y = labels[index] if labels is not None else None
            vb, _ = process.loss_terms(model, x0[index], t, labels=y, generator=generator)
            total += vb.double().sum()
    # the prior term: KL(alpha_bar_{T-1} x_0 + (1 - alpha_bar_{T-1}) pi || pi), 0 when x_{T-1} is all MASK
    q_last = process.q_probs(x0, process.T - 1).double()  # (N, ..., S)
    pi = process.stationary_probs.to(device).double()
    prior = torch.where(q_last > 0, q_last * (q_last.log() - pi.log()), 0.0).sum()
    return float((total + prior) / x0.numel() / torch.log(torch.tensor(2.0, dtype=torch.float64)))
