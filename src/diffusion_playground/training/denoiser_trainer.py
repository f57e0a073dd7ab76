"""The one trainer: any wrapper + any backbone + any dataset (a tensor or a DataLoader).

train_denoiser minimises the denoising loss (Ho et al. 2020, Algorithm 1) with AdamW, optional
LR warm-up and cosine decay, gradient clipping and an EMA of the weights. With a
``checkpoint_dir`` it saves everything needed to continue exactly (model, EMA, optimizer,
LR scheduler, step/epoch and position in the epoch, loss history, Python/NumPy/torch RNG states);
calling it again with the same folder resumes from the newest valid checkpoint.

Data order is a pure function of (seed, epoch): epoch e visits the samples in the permutation
drawn from a generator seeded with (seed, e), so a resumed run sees exactly the batches the
uninterrupted run would have seen.

Started by ``torchrun`` (WORLD_SIZE > 1 in the environment), it trains data-parallel with
DistributedDataParallel: ``batch_size`` is then the global batch, split over the processes, and
the run follows the single-process trajectory (see :mod:`diffusion_playground.training.distributed`).
Rank 0 logs and writes the checkpoints, which are the same files a single process writes.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from diffusion_playground.checks import check_device, check_integer, check_real, labels_tensor
from diffusion_playground.diffusion.backward import parameter_dtype
from diffusion_playground.diffusion.denoiser import Denoiser
from diffusion_playground.diffusion.edm import EDMDiffusion
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.diffusion.training_utils import LossWeighting, denoising_loss
from diffusion_playground.models.backbones.base_backbone import BaseBackbone
from diffusion_playground.training import acceleration, distributed
from diffusion_playground.training import checkpoint as ckpt
from diffusion_playground.training.acceleration import Precision
from diffusion_playground.training.ema import EMA

LRSchedule = Literal["constant", "cosine"]
TensorData = Tensor | Mapping[str, Tensor]  # a tensor (N, ...) or, for a multimodal process, a dict of them
Augmentation = Callable[[Tensor, torch.Generator], Tensor]  # (x0 batch, generator) -> augmented batch


class CorruptionProcess(Protocol):
    """A corruption process other than a Gaussian NoiseSchedule that train_denoiser can train on, e.g.
    :class:`~diffusion_playground.diffusion.categorical.CategoricalDiffusion` or
    :class:`~diffusion_playground.diffusion.edm.EDMDiffusion` (continuous sigma): it brings its own loss.
    A process of time steps has ``T`` (checked against the model's ``num_time_steps``). It may also define
    ``check_x0(data)``, called once on a tensor dataset before training. A process of structured samples
    (:class:`~diffusion_playground.diffusion.multimodal.MultimodalDiffusion`) trains on a dict of tensors with one
    row per sample in each."""

    def to(self, device: torch.device) -> CorruptionProcess: ...

    def config(self) -> dict[str, Any]: ...

    def training_loss(
        self, model: nn.Module, x0: Tensor, *, labels: Tensor | None, generator: torch.Generator | None
    ) -> Tensor: ...


@dataclass
class TrainingHistory:
    """What a training run returns.

    Attributes:
        losses: the loss of every optimizer step, from the first step of the first run (resumed runs included).
        epoch_losses: the mean loss of every completed epoch.
        step: optimizer steps taken so far.
        epoch: completed epochs.
        ema_model: the EMA of the weights (eval mode): the model to sample with.
        checkpoint_path: the newest checkpoint written or resumed from, if any.
    """

    losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    ema_model: nn.Module | None = field(default=None, repr=False)
    checkpoint_path: Path | None = None


@dataclass
class _Batches:
    """Uniform access to a tensor dataset or a DataLoader, with a deterministic order per epoch."""

    data: TensorData | DataLoader
    labels: Tensor | None
    batch_size: int
    seed: int
    device: torch.device
    float_dtype: torch.dtype  # floating-point batches of a DataLoader are cast to it (the model's dtype)
    gaussian: bool  # a Gaussian schedule: a DataLoader's x must be floating-point

    def __len__(self) -> int:
        if not isinstance(self.data, DataLoader):
            return math.ceil(_num_rows(self.data) / self.batch_size)
        return len(self.data)

    def epoch(self, epoch: int, skip: int) -> Iterator[tuple[Tensor, Tensor | None]]:
        """The batches of ``epoch``, starting after the first ``skip`` (when resuming mid-epoch)."""
        if not isinstance(self.data, DataLoader):
            order_generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(_num_rows(self.data), generator=order_generator).to(self.device)
            for start in range(skip * self.batch_size, _num_rows(self.data), self.batch_size):
                index = order[start : start + self.batch_size]
                yield _rows(self.data, index), (self.labels[index] if self.labels is not None else None)
            return
        _seed_loader_for_epoch(self.data, self.seed, epoch)
        for i, batch in enumerate(self.data):
            if i >= skip:
                x, y = _split_batch(batch, self.device, self.float_dtype)
                if self.gaussian and not x.is_floating_point():
                    raise TypeError(
                        f"the DataLoader yields x of dtype {x.dtype}; a Gaussian noise schedule needs floating-point "
                        "data (for categorical data train with CategoricalDiffusion)"
                    )
                yield x, y


def _augmented(augment: Augmentation, x0: Tensor, generator: torch.Generator) -> Tensor:
    """``augment(x0, generator)``, checked: an augmentation must return a batch like the one it was given."""
    out = augment(x0, generator)
    if not isinstance(out, Tensor) or out.shape != x0.shape:
        got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else f"a {type(out).__name__}"
        raise TypeError(f"augment returned {got} for a batch of shape {tuple(x0.shape)}; it must return the augmented batch")
    return out


def _loader_length(loader: DataLoader) -> int | None:
    """len(loader), or None for a DataLoader over an iterable dataset without a length."""
    try:
        return len(loader)
    except TypeError:
        return None


def _num_rows(data: TensorData) -> int:
    return data.shape[0] if isinstance(data, Tensor) else next(iter(data.values())).shape[0]


def _rows(data: TensorData, index: Tensor) -> TensorData:
    return data[index] if isinstance(data, Tensor) else {name: part[index] for name, part in data.items()}


def _seed_loader_for_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Make a shuffling DataLoader's order a function of (seed, epoch) too, where it allows it."""
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)  # DistributedSampler
    elif isinstance(getattr(sampler, "generator", None), torch.Generator):
        sampler.generator.manual_seed(seed * 1_000_003 + epoch)


def _split_batch(batch: Any, device: torch.device, float_dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        x, y = batch, None
    elif isinstance(batch, (list, tuple)) and 1 <= len(batch) <= 2 and isinstance(batch[0], Tensor):
        x, y = batch[0], (batch[1] if len(batch) == 2 else None)
    else:
        raise TypeError(
            "a DataLoader given to train_denoiser must yield tensors x or pairs (x, y) of tensors; "
            f"got a batch of type {type(batch).__name__}"
        )
    x = x.to(device, dtype=float_dtype if x.is_floating_point() else None, non_blocking=True)
    return x, (y.to(device, non_blocking=True) if y is not None else None)



def _check_model_and_process(model: nn.Module, process: NoiseSchedule | CorruptionProcess) -> None:
    """A TypeError for a bare backbone (it takes an embedding, not t), a denoiser D(x, sigma) given a schedule of
    integer steps, or something that is not a process."""
    if isinstance(model, BaseBackbone):
        raise TypeError(
            f"{type(model).__name__} is a backbone: it takes a conditioning embedding, not time steps; train "
            "TimeConditionedModel(backbone) (or TimeAndClassConditionedModel(backbone, num_classes)) instead"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (a wrapper around a backbone); got {type(model).__name__}")
    if not isinstance(process, NoiseSchedule) and not hasattr(process, "training_loss"):
        raise TypeError(
            f"noise_schedule must be a NoiseSchedule (e.g. LinearNoiseSchedule(1000)) or a corruption process such as "
            f"CategoricalDiffusion; got {type(process).__name__}"
        )
    if isinstance(model, Denoiser) and isinstance(process, NoiseSchedule):
        raise TypeError(
            f"{type(model).__name__} is a denoiser called as D(x, sigma), and a {type(process).__name__} trains "
            "wrappers called as model(x_t, t); train it with EDMDiffusion(...) (an EDMPreconditioner), or wrap the "
            "backbone in TimeConditionedModel for this schedule"
        )


def _check_dataset(
    model: nn.Module,
    data: TensorData | DataLoader,
    labels: Tensor | Sequence[int] | None,
    process: NoiseSchedule | CorruptionProcess,
) -> Tensor | None:
    """Refuse data the trainer can't use, with the reason; return the labels as a long tensor (or None)."""
    if isinstance(data, DataLoader):
        if labels is not None:
            raise ValueError("labels=... goes with a tensor dataset; a DataLoader should yield (x, y) pairs instead")
        if _loader_length(data) == 0:
            raise ValueError(
                f"the DataLoader yields no batches (dataset of {len(data.dataset)} samples, batch_size={data.batch_size}, "
                f"drop_last={data.drop_last}); use a smaller batch_size or drop_last=False"
            )
        return None
    if isinstance(data, Mapping):
        if not hasattr(process, "check_x0"):  # a NoiseSchedule has none
            raise TypeError(
                "a dict of tensors is the data of a multimodal process; pass MultimodalDiffusion({...}) as the noise "
                f"schedule (got {type(process).__name__})"
            )
        process.check_x0(data)
        if labels is not None:
            raise ValueError("with a dict dataset the labels are one of its parts; do not pass labels=...")
        return None
    if not isinstance(data, Tensor):
        raise TypeError(f"data must be a tensor (N, ...) or a torch DataLoader; got {type(data).__name__}")
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(f"data must have shape (N, ...) with N >= 1 samples; got {tuple(data.shape)}")
    if not _is_gaussian(process):
        if hasattr(process, "check_x0"):
            process.check_x0(data)  # e.g. integer categories in [0, K)
    elif not data.is_floating_point():
        raise ValueError(
            f"data must be a floating-point tensor for a Gaussian noise schedule; got dtype {data.dtype} "
            "(for categorical data train with CategoricalDiffusion)"
        )
    elif not torch.isfinite(data).all():
        raise ValueError("data contains NaN or infinite values; clean or re-normalise it before training")
    num_classes = getattr(model, "num_classes", None)
    if labels is None:
        return None
    if num_classes is None:
        raise ValueError(
            f"labels were given but {type(model).__name__} is not class-conditional; "
            "wrap the backbone in TimeAndClassConditionedModel(backbone, num_classes)"
        )
    labels = labels_tensor("labels", labels, num_classes)  # a list of ints is fine; 1.7 or a float tensor is not
    if labels.shape != (data.shape[0],):
        raise ValueError(f"labels must hold one label per sample, shape ({data.shape[0]},); got shape {tuple(labels.shape)}")
    return labels


def _is_gaussian(process: NoiseSchedule | CorruptionProcess) -> bool:
    """Whether the process adds Gaussian noise to real-valued data (a NoiseSchedule, or EDM's continuous sigma)."""
    return isinstance(process, (NoiseSchedule, EDMDiffusion))


def _check_settings(**settings: Any) -> None:
    """Every numeric setting of train_denoiser, before any work: a clear error instead of a frozen or lost run."""
    for name in ("epochs", "batch_size", "keep_last", "log_every"):
        check_integer(name, settings[name], minimum=1)  # keep_last=0 would delete the checkpoint just written
    check_integer("seed", settings["seed"], minimum=0, maximum=2**32 - 1)
    for name in ("save_every", "save_every_steps", "max_steps"):
        if settings[name] is not None:
            check_integer(f"{name} (None to turn it off)", settings[name], minimum=1)
    if settings["warmup_steps"] is not None:
        check_integer("warmup_steps", settings["warmup_steps"], minimum=0)
    check_real("lr", settings["lr"], minimum=0.0, strict=True)
    if settings["grad_clip_norm"] is not None:  # 0 would scale every gradient to 0: the weights would never move
        check_real("grad_clip_norm (None for no clipping)", settings["grad_clip_norm"], minimum=0.0, strict=True)
    check_real("ema_decay", settings["ema_decay"], minimum=0.0, maximum=1.0)
    check_real("weight_decay", settings["weight_decay"], minimum=0.0)
    check_real("min_snr_gamma", settings["min_snr_gamma"], minimum=0.0, strict=True)


def _lr_lambda(schedule: LRSchedule, warmup_steps: int, total_steps: int):
    """Linear warm-up over ``warmup_steps``, then constant or cosine decay to 0 at ``total_steps``
    (Loshchilov & Hutter 2017, SGDR without restarts)."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine'; got {schedule!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def train_denoiser(
    model: nn.Module,
    data: TensorData | DataLoader,
    noise_schedule: NoiseSchedule | CorruptionProcess,
    *,
    labels: Tensor | None = None,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    checkpoint_dir: str | Path | None = None,
    save_every: int | None = 1,
    save_every_steps: int | None = None,
    keep_last: int = 3,
    resume: bool = True,
    grad_clip_norm: float | None = 1.0,
    ema_decay: float = 0.999,
    weight_decay: float = 0.0,
    lr_schedule: LRSchedule = "cosine",
    warmup_steps: int | None = None,
    loss_weighting: LossWeighting = "uniform",
    min_snr_gamma: float = 5.0,
    max_steps: int | None = None,
    augment: Augmentation | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    precision: Precision = "auto",
    channels_last: bool | None = None,
    compile: bool = False,
    show_progress: bool = True,
    log_every: int = 25,
    metadata: Mapping[str, Any] | None = None,
) -> TrainingHistory:
    """Train ``model`` to denoise ``data`` under ``noise_schedule``; the one trainer for every experiment.

    Args:
        model: a TimeConditionedModel or TimeAndClassConditionedModel around any backbone (an EDMPreconditioner
            for an EDMDiffusion).
        data: a tensor (N, ...) of training samples, or a DataLoader yielding x or (x, y) batches; for a
            MultimodalDiffusion a dict ``{part: (N, ...) tensor}``. Floating-point data of another dtype than the
            model's weights (float64, float16) is cast to it.
        noise_schedule: a NoiseSchedule (trained with :func:`denoising_loss`), or a corruption process such as
            :class:`~diffusion_playground.diffusion.categorical.CategoricalDiffusion` (integer data), trained with
            its own ``noise_schedule.training_loss(model, x0, labels=y, generator=...)``; see :class:`CorruptionProcess`.
            ``EDMDiffusion()`` trains an :class:`~diffusion_playground.models.edm_preconditioner.EDMPreconditioner`
            with Karras et al.'s (2022) log-normal noise levels and loss weight.
        labels: (N,) integer class labels (a tensor or a list of ints) for a tensor dataset (class-conditional
            training); None otherwise.
        epochs: total number of passes over the data (a resumed run continues up to this number).
        lr: peak learning rate of AdamW.
        batch_size: batch size for a tensor dataset (a DataLoader brings its own). Under torchrun it is the
            global batch: each of the world_size processes takes batch_size // world_size of it.
        checkpoint_dir: folder for ``checkpoint-step*.pt`` files; None disables checkpointing.
        save_every: save every this many epochs (None: only by steps and at the end).
        save_every_steps: also save every this many optimizer steps.
        keep_last: how many of the newest valid checkpoints to keep (>= 1); files that are not valid checkpoints
            never count (see :func:`~diffusion_playground.training.checkpoint.prune_checkpoints`).
        resume: continue from the newest valid checkpoint in ``checkpoint_dir``; with False, existing
            checkpoints are moved into a ``previous-*`` subfolder and training starts over.
        grad_clip_norm: clip the global gradient norm to this value (None: no clipping).
        ema_decay: decay of the weight EMA used for sampling.
        weight_decay: AdamW's decoupled weight decay (Loshchilov & Hutter 2019).
        lr_schedule: ``"constant"`` or ``"cosine"`` (decay to 0 at the last step), after linear warm-up.
        warmup_steps: linear LR warm-up length; None = 5% of all steps (at most 1000).
        loss_weighting: ``"uniform"`` (L_simple) or ``"min_snr"`` (Hang et al. 2023), see :func:`loss_weights`;
            ignored by a corruption process, whose loss is its own.
        max_steps: stop after this many optimizer steps in total, with a checkpoint, even if ``epochs``
            is not reached (the LR schedule still spans all epochs); call again to continue.
        augment: applied to every batch as ``augment(x0, generator)``, e.g.
            :func:`diffusion_playground.data.random_horizontal_flip`; it draws from the trainer's
            generator, so resumed runs stay exact.
        seed: seeds the weight-independent randomness (data order, t and noise draws, dropout).
        device: where to train (default: CUDA if available, else CPU; under torchrun ``cuda:LOCAL_RANK``).
        precision: autocast dtype of the forward pass: ``"auto"`` (bf16 on CUDA GPUs that support it,
            fp16 with a gradient scaler on older ones, fp32 on the CPU), ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        channels_last: NHWC memory format for image models; None = on for image data on CUDA.
        compile: run the forward and backward pass through ``torch.compile`` (the first steps are slow
            while it compiles; worth it for long GPU runs).
        show_progress: show a tqdm bar with the live loss.
        log_every: how often (in steps) the loss is read back from the device and checked.
        metadata: what the run is, in plain values (e.g. ``{"dataset": "swiss_roll"}``), stored in every checkpoint
            and returned by ``load_checkpoint(path, with_metadata=True)``; resuming from a checkpoint that recorded
            other metadata is refused, as for another schedule.

    Returns:
        a :class:`TrainingHistory` with the losses and the EMA model.

    Raises:
        ValueError, TypeError: a setting or the data can't be used (checked before the first step); resuming
            from a checkpoint written with another schedule, target, batch size, seed or model.
        OSError: ``checkpoint_dir`` can't be written to (checked before the first step).
        FloatingPointError: the loss became NaN or infinite; the message names the step, and the
            last checkpoint written before it is left untouched.
    """
    _check_settings(
        epochs=epochs, batch_size=batch_size, lr=lr, keep_last=keep_last, save_every=save_every,
        save_every_steps=save_every_steps, grad_clip_norm=grad_clip_norm, ema_decay=ema_decay,
        weight_decay=weight_decay, warmup_steps=warmup_steps, min_snr_gamma=min_snr_gamma, max_steps=max_steps,
        log_every=log_every, seed=seed,
    )  # fmt: skip
    metadata = ckpt.plain_metadata(metadata)
    _check_model_and_process(model, noise_schedule)
    labels = _check_dataset(model, data, labels, noise_schedule)
    device = check_device(device) if device is not None else None
    context, device = distributed.setup(device)  # None unless started by torchrun with WORLD_SIZE > 1
    if context is not None and not isinstance(noise_schedule, NoiseSchedule):
        raise NotImplementedError(
            f"data-parallel training (torchrun) supports Gaussian noise schedules only; train "
            f"{type(noise_schedule).__name__} in a single process"
        )
    device = device if device is not None else ckpt.default_device()
    is_main = context is None or context.is_main
    model_steps, process_steps = getattr(model, "num_time_steps", None), getattr(noise_schedule, "T", None)
    if model_steps is not None and process_steps is not None and model_steps < process_steps:
        raise ValueError(
            f"the noise schedule has T={process_steps} steps but the model was built for "
            f"num_time_steps={model_steps}; build the wrapper with num_time_steps={process_steps}"
        )

    amp_dtype = acceleration.autocast_dtype(precision, device)
    nhwc = acceleration.use_channels_last(channels_last, _batch_ndim(data, model), device)
    acceleration.enable_tf32(device)
    model.to(device).train()
    if nhwc:
        model.to(memory_format=torch.channels_last)
    forward_model = distributed.wrap(model, device) if context is not None else model
    forward_model = torch.compile(forward_model) if compile else forward_model
    noise_schedule = copy.copy(noise_schedule).to(device)  # the caller's schedule stays where it is
    float_dtype = parameter_dtype(model)  # float64 or float16 data is cast to the model's dtype, batch by batch
    if isinstance(data, Tensor):
        data = data.to(device, dtype=float_dtype if data.is_floating_point() else None)
        labels = labels.to(device) if labels is not None else None
    elif isinstance(data, Mapping):
        data = {name: part.to(device) for name, part in data.items()}
    batches = _Batches(data, labels, batch_size, seed, device, float_dtype, _is_gaussian(noise_schedule))
    steps_per_epoch = len(batches)
    total_steps = epochs * steps_per_epoch
    if warmup_steps is None:
        warmup_steps = min(1000, max(1, total_steps // 20))
    if context is not None:
        _announce_data_parallel(context, data, batch_size, lr)

    torch.manual_seed(seed)
    noise_generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(lr_schedule, warmup_steps, total_steps))
    scaler = acceleration.grad_scaler(amp_dtype, device)
    ema = EMA(model, ema_decay)
    history = TrainingHistory()
    step_in_epoch = 0
    train_config = {
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
        "seed": seed, "lr_schedule": lr_schedule, "warmup_steps": warmup_steps, "ema_decay": ema_decay,
        "loss_weighting": loss_weighting, "min_snr_gamma": min_snr_gamma, "grad_clip_norm": grad_clip_norm,
        "weight_decay": weight_decay,
        "world_size": 1 if context is None else context.world_size,
        "data": "dataloader" if isinstance(data, DataLoader) else "tensor",
        "prediction_type": getattr(model, "prediction_type", None),
    }  # fmt: skip

    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        if is_main:  # a file in the way or a folder without write permission fails here, not after an epoch
            ckpt.prepare_checkpoint_dir(checkpoint_dir)
        if resume:
            with distributed.main_rank_output(context):
                found = _read_newest_checkpoint(checkpoint_dir, device, context)
            if found is not None:
                history.checkpoint_path, state = found
                with distributed.main_rank_output(context):
                    step_in_epoch = _restore(
                        state, model, ema, optimizer, scheduler, scaler, noise_generator, history, train_config,
                        noise_schedule.config(), metadata,
                    )  # fmt: skip
                    print(f"Resuming from {history.checkpoint_path} (epoch {history.epoch}, step {history.step})")
        elif is_main:
            aside = ckpt.move_aside_old_checkpoints(checkpoint_dir)
            if aside is not None:
                print(f"resume=False: moved the existing checkpoints of {checkpoint_dir} into {aside}")
        distributed.barrier(context)  # no rank starts before rank 0 has looked at the folder

    def save() -> None:
        if checkpoint_dir is None:
            return
        path = ckpt.checkpoint_path(checkpoint_dir, history.step)
        if is_main:  # the model is the unwrapped one: its state_dict has no DDP "module." prefixes
            write(path)
        history.checkpoint_path = path
        distributed.barrier(context)  # the file is complete before any rank goes on (and may resume from it)

    def write(path: Path) -> None:
        state = {
            "format_version": ckpt.CHECKPOINT_FORMAT_VERSION,
            "package_version": _package_version(),
            "model": model.state_dict(),
            "ema": ema.model.state_dict(),
            "ema_num_updates": ema.num_updates,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "grad_scaler": scaler.state_dict(),
            "step": history.step,
            "epoch": history.epoch,
            "step_in_epoch": step_in_epoch,
            "losses": history.losses,
            "epoch_losses": history.epoch_losses,
            "rng": {**ckpt.capture_rng_states(), "noise_generator": noise_generator.get_state()},
            "model_config": ckpt.model_config(model),
            "noise_schedule": noise_schedule.config(),
            "train_config": train_config,
            "metadata": metadata,
        }
        ckpt.save_checkpoint_atomic(state, path)
        ckpt.prune_checkpoints(checkpoint_dir, keep_last)

    pending: list[Tensor] = []  # losses not yet read back from the device

    def flush() -> None:
        """Read pending losses back, stop on the first non-finite one."""
        if not pending:
            return
        values = distributed.mean_over_ranks(context, torch.stack(pending)).tolist()  # the global batch's losses
        first_step = history.step - len(values) + 1
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                last = f"the last good checkpoint is {history.checkpoint_path}" if history.checkpoint_path else "no checkpoint was written"
                raise FloatingPointError(
                    f"the loss became {value} at step {first_step + offset} (epoch {history.epoch + 1}); "
                    f"training stopped and {last}. Try a lower lr (now {lr}), gradient clipping, or check the data."
                )
        history.losses.extend(values)
        pending.clear()

    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)
    show_progress = show_progress and is_main  # one bar for the run, on rank 0
    progress = tqdm(total=total_steps, initial=history.step, desc="training", disable=not show_progress, dynamic_ncols=True)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    try:
        while history.epoch < epochs and history.step < stop_at:
            for x0, y in batches.epoch(history.epoch, skip=step_in_epoch):
                if augment is not None:
                    x0 = _augmented(augment, x0, noise_generator)
                if context is not None:
                    x0, y, shard = distributed.local_part(context, x0, y, isinstance(data, Tensor))
                if nhwc:
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                with autocast:
                    if not isinstance(noise_schedule, NoiseSchedule):  # a corruption process with its own loss
                        loss = noise_schedule.training_loss(forward_model, x0, labels=y, generator=noise_generator)
                    elif context is None:
                        loss = denoising_loss(
                            forward_model, x0, noise_schedule, labels=y, weighting=loss_weighting,
                            min_snr_gamma=min_snr_gamma, generator=noise_generator,
                        )  # fmt: skip
                    else:
                        loss = distributed.sharded_denoising_loss(
                            forward_model, x0, noise_schedule, shard, y, loss_weighting, min_snr_gamma, noise_generator
                        )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # the scaler is a pass-through unless precision is fp16
                if grad_clip_norm is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                ema.update(model)
                pending.append(loss.detach())
                history.step += 1
                step_in_epoch += 1
                progress.update(1)
                if history.step % log_every == 0:
                    flush()
                    progress.set_postfix(loss=f"{history.losses[-1]:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if save_every_steps and history.step % save_every_steps == 0:
                    flush()
                    save()
                if history.step >= stop_at:
                    break
            flush()
            if step_in_epoch >= steps_per_epoch:
                epoch_steps = history.losses[len(history.losses) - step_in_epoch :]
                history.epoch_losses.append(sum(epoch_steps) / max(1, len(epoch_steps)))
                history.epoch += 1
                step_in_epoch = 0
                if save_every and history.epoch % save_every == 0:
                    save()
        flush()
        if checkpoint_dir is not None and (history.checkpoint_path is None or _step_of(history.checkpoint_path) != history.step):
            save()
    finally:
        progress.close()
    history.ema_model = ema.model
    return history


def _announce_data_parallel(
    context: distributed.DistributedContext, data: Tensor | DataLoader, batch_size: int, lr: float
) -> None:
    """Check the global batch splits over the ranks; print it and the LR on rank 0 (to reason about scaling)."""
    if isinstance(data, Tensor):
        if batch_size % context.world_size:
            raise ValueError(
                f"batch_size={batch_size} is the global batch and must split evenly over the {context.world_size} "
                f"processes; use a multiple of {context.world_size}"
            )
        per_rank = batch_size // context.world_size
    else:
        if context.is_main and not isinstance(data.sampler, torch.utils.data.DistributedSampler):
            warnings.warn(
                "under torchrun a DataLoader should use a DistributedSampler, or every process sees the same batches",
                stacklevel=3,
            )
        per_rank = data.batch_size or 1
    if context.is_main:
        print(
            f"data-parallel training on {context.world_size} processes ({torch.distributed.get_backend()}): "
            f"global batch {per_rank * context.world_size} ({per_rank} per process), lr {lr:g}"
        )


def _read_newest_checkpoint(
    directory: Path, device: torch.device, context: distributed.DistributedContext | None
) -> tuple[Path, dict[str, Any]] | None:
    """The newest valid checkpoint; under torchrun rank 0 chooses it and every rank loads that same file."""
    if context is None:
        return ckpt.read_newest_valid_checkpoint(directory, map_location=device)
    found = ckpt.read_newest_valid_checkpoint(directory, map_location=device) if context.is_main else None
    path = distributed.broadcast_from_main(context, found[0] if found is not None else None)
    if path is None or context.is_main:
        return found
    return path, ckpt.read_checkpoint(path, map_location=device)


def _batch_ndim(data: TensorData | DataLoader, model: nn.Module) -> int | None:
    """Dimensions of a training batch: from the tensor, else from the backbone's input_shape, else unknown
    (a dict of parts: unknown, so no channels_last)."""
    if isinstance(data, Mapping):
        return None
    if isinstance(data, Tensor):
        return data.ndim
    input_shape = getattr(getattr(model, "backbone", None), "input_shape", None)
    return len(input_shape) + 1 if input_shape is not None else None


def _step_of(path: Path) -> int:
    return int(path.stem.removeprefix("checkpoint-step"))


_RESUME_MUST_MATCH = (
    "batch_size", "steps_per_epoch", "seed", "lr", "weight_decay", "lr_schedule", "loss_weighting", "min_snr_gamma",
    "ema_decay", "grad_clip_norm",
)  # fmt: skip


def _restore(
    state: dict[str, Any],
    model: nn.Module,
    ema: EMA,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    noise_generator: torch.Generator,
    history: TrainingHistory,
    train_config: dict[str, Any],
    schedule_config: dict[str, Any],
    metadata: dict[str, Any],
) -> int:
    """Fill everything from a checkpoint; return the position within the current epoch."""
    saved = state["train_config"]
    if "metadata" in state and state["metadata"] != metadata:  # checkpoints written before metadata existed pass
        raise ValueError(
            f"the checkpoint {history.checkpoint_path} was written with metadata={state['metadata']} but this call has "
            f"metadata={metadata} (another dataset?); resume with the same metadata, or pass resume=False (or another "
            "checkpoint_dir) to start over"
        )
    if state["noise_schedule"] != schedule_config:
        raise ValueError(
            f"the checkpoint {history.checkpoint_path} was trained with the noise schedule {_describe(state['noise_schedule'])} "
            f"but this call has {_describe(schedule_config)}; resume with the checkpoint's schedule, or pass resume=False "
            "(or another checkpoint_dir) to start over"
        )
    if saved.get("prediction_type", train_config["prediction_type"]) != train_config["prediction_type"]:
        raise ValueError(
            f"the checkpoint {history.checkpoint_path} was trained to predict {saved['prediction_type']!r} but this "
            f"model predicts {train_config['prediction_type']!r}; build the wrapper with "
            f"prediction_type={saved['prediction_type']!r}, or pass resume=False (or another checkpoint_dir) to start over"
        )
    saved_world_size = saved.get("world_size", 1)
    if saved.get("data") == "dataloader" and saved_world_size != train_config["world_size"]:
        raise ValueError(
            f"the checkpoint {history.checkpoint_path} was written by a DataLoader run on {saved_world_size} process(es) "
            f"and this run has {train_config['world_size']}: a DistributedSampler's batches depend on the process count. "
            f"Resume on {saved_world_size} process(es), or train from a tensor dataset, which resumes on any count"
        )
    # what the optimisation is: a different value would silently not apply (the optimizer's state brings the old
    # lr and weight decay back) or change the objective mid-run; epochs may change (the LR plan is re-made, below)
    for key in _RESUME_MUST_MATCH:
        if key in saved and saved[key] != train_config[key]:
            raise ValueError(
                f"the checkpoint {history.checkpoint_path} was written with {key}={saved[key]} but this call has "
                f"{key}={train_config[key]}; resume with the same settings, or pass resume=False (or another checkpoint_dir) "
                "to start over"
            )
    try:
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
    except RuntimeError as error:
        raise ValueError(
            f"the checkpoint {history.checkpoint_path} holds a different model than the one given ({error}); "
            "use another checkpoint_dir or resume=False"
        ) from error
    ema.num_updates = state["ema_num_updates"]
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["lr_scheduler"])
    if state["grad_scaler"]:
        scaler.load_state_dict(state["grad_scaler"])
    for group, base_lr, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base_lr * factor(scheduler.last_epoch)  # this call's schedule (it differs if epochs changed)
    history.step, history.epoch = state["step"], state["epoch"]
    history.losses, history.epoch_losses = list(state["losses"]), list(state["epoch_losses"])
    ckpt.restore_rng_states(state["rng"])
    noise_generator.set_state(state["rng"]["noise_generator"].cpu())
    if history.epoch >= train_config["epochs"]:
        print(f"{history.checkpoint_path} has already trained {history.epoch} epochs (epochs={train_config['epochs']}): "
              "nothing to do; pass a larger epochs to continue, or resume=False to start over")
    elif saved["epochs"] != train_config["epochs"] and train_config["lr_schedule"] == "cosine":
        warnings.warn(
            f"resuming a run planned for {saved['epochs']} epochs with epochs={train_config['epochs']}: the cosine "
            f"LR schedule is re-planned for the new length, so the LR continues at {optimizer.param_groups[0]['lr']:.3g} "
            "(a warm restart if the first run had decayed it)",
            stacklevel=3,
        )
    return state["step_in_epoch"]


def _describe(config: dict[str, Any]) -> str:
    """A schedule's config in a line: its name and settings (a custom schedule's betas summarised)."""
    shown = {key: (f"[{len(value)} values]" if isinstance(value, list) else value) for key, value in config.items()}
    return ", ".join(f"{key}={value}" for key, value in shown.items())


def _package_version() -> str:
    from diffusion_playground import __version__

    return __version__


__all__ = ["TrainingHistory", "train_denoiser"]
