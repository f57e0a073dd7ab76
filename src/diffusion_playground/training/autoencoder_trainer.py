"""Training the first stage of latent diffusion: :class:`~diffusion_playground.models.autoencoder.ConvAutoencoder`.

It is not a denoiser, so it has a short trainer of its own, with the checkpoints of ``train_denoiser``: one
``checkpoint-step*.pt`` per epoch, written atomically (the previous one survives a crash), CRC-checked, the newest
``keep_last`` kept, and resumed from the newest valid one with bit-identical results (each epoch's order and
reparameterisation noise come from a generator seeded by (seed, epoch)).

The loss per batch (Rombach et al. 2022, appendix G's "KL-reg." stage, with the squared error for its perceptual and
adversarial terms): the mean squared error per pixel of x and D(z), z ~ q(z | x), plus ``kl_weight`` times the KL
of q(z | x) to N(0, I) per pixel (:func:`~diffusion_playground.models.autoencoder.gaussian_kl` / pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffusion_playground.checks import check_device, check_integer, check_real
from diffusion_playground.models.autoencoder import ConvAutoencoder, autoencoder_from_config, gaussian_kl
from diffusion_playground.training import checkpoint as ckpt
from diffusion_playground.training.checkpoint import AUTOENCODER_KEYS, CheckpointError


@dataclass
class AutoencoderHistory:
    """What :func:`train_autoencoder` did: the loss of every step (reconstruction + kl_weight KL, per pixel) and the
    reconstruction error alone, the epochs and steps done, and the scale factor fitted at the end."""

    losses: list[float] = field(default_factory=list)
    reconstruction: list[float] = field(default_factory=list)
    epoch: int = 0
    step: int = 0
    scale_factor: float = 1.0


def _check_images(autoencoder: ConvAutoencoder, images: Tensor) -> None:
    if not isinstance(images, Tensor) or not images.is_floating_point() or tuple(images.shape[1:]) != autoencoder.image_shape:
        got = f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (N, {', '.join(map(str, autoencoder.image_shape))}) in [-1, 1] for this "
                         f"autoencoder; got {got}")  # fmt: skip
    if images.shape[0] < 1 or not bool(torch.isfinite(images).all()):
        raise ValueError("images must hold at least one image and no NaN or infinite values")


def train_autoencoder(
    autoencoder: ConvAutoencoder,
    images: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    kl_weight: float = 1e-3,
    checkpoint_dir: str | Path | None = None,
    keep_last: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> AutoencoderHistory:
    """Train ``autoencoder`` in place on ``images`` (N, C, H, W) for ``epochs`` epochs of Adam, then fit its
    ``scale_factor``. With ``checkpoint_dir`` a call resumes from the newest valid checkpoint there (a run that has
    done ``epochs`` returns at once); its settings must match the checkpoint's."""
    _check_images(autoencoder, images)
    epochs = check_integer("epochs", epochs, minimum=1)
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    lr = check_real("lr", lr, minimum=0.0, strict=True)
    kl_weight = check_real("kl_weight", kl_weight, minimum=0.0)
    device = check_device(device)
    autoencoder.to(device)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=lr)
    history = AutoencoderHistory()
    train_config = {"batch_size": batch_size, "lr": lr, "kl_weight": kl_weight, "seed": seed, "num_images": images.shape[0]}
    if checkpoint_dir is not None:
        ckpt.prepare_checkpoint_dir(checkpoint_dir)
        found = ckpt.read_newest_valid_checkpoint(checkpoint_dir, keys=AUTOENCODER_KEYS)
        if found is not None:
            path, state = found
            if state["autoencoder_config"] != autoencoder.config or state["train_config"] != train_config:
                raise CheckpointError(
                    f"{path} was written with {state['autoencoder_config']}, {state['train_config']}; this call has "
                    f"{autoencoder.config}, {train_config}: use the same settings, or another checkpoint_dir"
                )
            autoencoder.load_state_dict(state["autoencoder"])
            optimizer.load_state_dict(state["optimizer"])
            history = AutoencoderHistory(state["losses"], state["reconstruction"], state["epoch"], state["step"],
                                         float(autoencoder.scale_factor))  # fmt: skip
    pixels = images[0].numel()
    autoencoder.train()
    for epoch in tqdm(range(history.epoch, epochs), desc="autoencoder", disable=not show_progress, leave=False):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # the epoch's order and noise
        order = torch.randperm(images.shape[0], generator=generator)
        for start in range(0, images.shape[0], batch_size):
            x = images[order[start : start + batch_size]].to(device)
            mu, log_var = autoencoder.encode_moments(x)
            eps = torch.randn(mu.shape, generator=generator).to(device)
            z = mu + (0.5 * log_var).exp() * eps if autoencoder.kl else mu  # the reparameterisation
            reconstruction = (autoencoder.decode(z) - x).square().mean()
            loss = reconstruction + kl_weight * gaussian_kl(mu, log_var).mean() / pixels if autoencoder.kl else reconstruction
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.losses.append(loss.item())
            history.reconstruction.append(reconstruction.item())
            history.step += 1
        history.epoch = epoch + 1
        autoencoder.eval()
        history.scale_factor = autoencoder.fit_scale_factor(images)  # every checkpoint can encode for diffusion
        autoencoder.train()
        if checkpoint_dir is not None:
            state = {
                "format_version": ckpt.CHECKPOINT_FORMAT_VERSION, "autoencoder": autoencoder.state_dict(),
                "autoencoder_config": autoencoder.config, "optimizer": optimizer.state_dict(), "step": history.step,
                "epoch": history.epoch, "losses": history.losses, "reconstruction": history.reconstruction,
                "train_config": train_config,
            }  # fmt: skip
            ckpt.save_checkpoint_atomic(state, ckpt.checkpoint_path(checkpoint_dir, history.step))
            ckpt.prune_checkpoints(checkpoint_dir, keep_last, keys=AUTOENCODER_KEYS)
    autoencoder.eval()
    return history


def load_autoencoder(path: str | Path, device: torch.device | str = "cpu") -> ConvAutoencoder:
    """The autoencoder of a checkpoint file, or of the newest valid one in a folder, in eval mode (with its
    scale factor)."""
    path = Path(path)
    if path.is_dir():
        found = ckpt.read_newest_valid_checkpoint(path, keys=AUTOENCODER_KEYS)
        if found is None:
            raise FileNotFoundError(f"no usable autoencoder checkpoint in {path}; train one with train_autoencoder(checkpoint_dir=...)")
        state = found[1]
    else:
        state = ckpt.read_checkpoint(path, keys=AUTOENCODER_KEYS)
    autoencoder = autoencoder_from_config(state["autoencoder_config"])
    autoencoder.load_state_dict(state["autoencoder"])
    return autoencoder.to(check_device(device)).eval()


__all__ = ["AutoencoderHistory", "load_autoencoder", "train_autoencoder"]
