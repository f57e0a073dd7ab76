"""Data-parallel training with torch.distributed: the trainer's hooks for runs under ``torchrun``.

``torchrun --nproc_per_node=N script.py`` starts N copies of a script and sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` (and the rendezvous address) in each one's environment; that is all
:func:`context_from_environment` looks at. Without those variables (or with ``WORLD_SIZE=1``)
nothing here is used and the trainer runs as a single process.

How a distributed run matches a single-process one (Goyal et al. 2017, "Accurate, large minibatch SGD"):

1. ``batch_size`` is the GLOBAL batch: every rank forms the same global batch from the (seed, epoch)
   permutation and keeps its contiguous part of it (``batch_size // world_size`` rows).
2. Every rank draws the (t, eps) of the whole global batch from the shared, identically seeded
   generator and keeps the rows of its part, so the draws are those of the single process.
3. Each rank's loss is its part's sum scaled by ``world_size / global_batch``; DDP averages the
   gradients over ranks, which gives the gradient of the global batch's mean loss.

So N processes with ``batch_size=B`` follow the same trajectory as one process with ``batch_size=B``,
up to the order of floating-point sums.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.diffusion.training_utils import LossWeighting, sample_time_steps, weighted_errors


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel run."""

    rank: int  # 0 .. world_size - 1; rank 0 logs and writes checkpoints
    local_rank: int  # index of this process on its machine: which GPU it uses
    world_size: int  # number of processes in the run

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_environment() -> DistributedContext | None:
    """This process's place in a torchrun launch, from the variables torchrun sets; None for a single process.

    It only reads the environment, so it also answers before the process group exists (the CLI asks it
    to decide which rank prints and writes figures).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    missing = [name for name in ("RANK", "LOCAL_RANK") if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} is set but {', '.join(missing)} are not; start the script with "
            "torchrun (e.g. `torchrun --nproc_per_node=2 script.py`), which sets them all, or unset WORLD_SIZE"
        )
    return DistributedContext(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), world_size)


def is_main_process() -> bool:
    """True for a single process and for rank 0 of a torchrun launch: the process that samples and writes files."""
    context = context_from_environment()
    return context is None or context.is_main


def device_for(local_rank: int, device: torch.device | str | None) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for CUDA (asked for, or available and nothing asked), else the CPU."""
    wanted = torch.device(device) if device is not None else None
    if wanted is None:
        wanted = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.type == "cuda" and wanted.index is None:
        wanted = torch.device("cuda", local_rank)
    return wanted


def setup(device: torch.device | str | None) -> tuple[DistributedContext | None, torch.device | None]:
    """Detect a torchrun launch, join (or create) the process group; returns (context, device) or (None, device)."""
    context = context_from_environment()
    if context is None:
        return None, (torch.device(device) if device is not None else None)
    device = device_for(context.local_rank, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # kept for the process's lifetime: later train_denoiser calls reuse it
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
        atexit.register(shutdown)
    if dist.get_world_size() != context.world_size:
        raise ValueError(f"the process group has {dist.get_world_size()} processes but WORLD_SIZE={context.world_size}")
    return context, device


def shutdown() -> None:
    """Destroy the process group :func:`setup` created, if any (also run at exit); a no-op for one process."""
    if dist.is_initialized():
        dist.destroy_process_group()


class DataParallelModel(nn.parallel.DistributedDataParallel):
    """DDP that also shows the wrapped model's attributes (``prediction_type``, ``num_classes``) the loss reads."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: nn.Module, device: torch.device) -> DataParallelModel:
    """DDP around ``model``: rank 0's weights are broadcast now, gradients are averaged in every backward pass."""
    # The weight (O, I, 1, 1) of a 1x1 convolution gets gradients whose strides differ from the weight's only along
    # its size-1 dimensions, the same memory layout, yet DDP warns once per run (pytorch/pytorch#157862): silence
    # that case only.
    warnings.filterwarnings(
        "ignore", message=r"Grad strides do not match bucket view strides[\s\S]*grad\.sizes\(\) = \[\d+, \d+, 1, 1\]"
    )
    return DataParallelModel(model, device_ids=[device.index] if device.type == "cuda" else None)


def barrier(context: DistributedContext | None) -> None:
    """Wait for every rank (e.g. until rank 0 has finished writing a checkpoint); a no-op for one process."""
    if context is not None:
        dist.barrier()


def broadcast_from_main(context: DistributedContext | None, value: object) -> object:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if context is None:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def mean_over_ranks(context: DistributedContext | None, values: Tensor) -> Tensor:
    """Element-wise mean of ``values`` over the ranks (gloo has no AVG, so SUM / world_size)."""
    if context is None:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / context.world_size


def shard_rows(num_rows: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous part of ``num_rows`` rows, cut like ``torch.tensor_split`` (sizes differ by <= 1)."""
    base, extra = divmod(num_rows, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


@dataclass(frozen=True)
class Shard:
    """Which rows of a global batch of ``global_size`` rows one rank holds."""

    rows: slice
    global_size: int
    world_size: int


def local_part(
    context: DistributedContext, x0: Tensor, labels: Tensor | None, is_global_batch: bool
) -> tuple[Tensor, Tensor | None, Shard]:
    """This rank's rows of a batch: ``(x0, labels, shard)``.

    A tensor dataset gives every rank the whole global batch (``is_global_batch``): the rank keeps its
    shard. A DataLoader (with a DistributedSampler) gives each rank its own batch already; the global
    batch is then the ranks' batches side by side (they have equal sizes: the sampler pads to that).
    """
    if is_global_batch:
        rows = shard_rows(x0.shape[0], context.rank, context.world_size)
        return x0[rows], (labels[rows] if labels is not None else None), Shard(rows, x0.shape[0], context.world_size)
    size = x0.shape[0]
    rows = slice(context.rank * size, (context.rank + 1) * size)
    return x0, labels, Shard(rows, size * context.world_size, context.world_size)


def sharded_denoising_loss(
    model: nn.Module,
    x0: Tensor,
    noise_schedule: NoiseSchedule,
    shard: Shard,
    labels: Tensor | None,
    weighting: LossWeighting,
    min_snr_gamma: float,
    generator: torch.Generator,
) -> Tensor:
    """This rank's share of :func:`denoising_loss` over a global batch of which ``x0`` holds ``shard.rows``.

    1. Draw t and eps for the whole global batch, in the order sample_xt draws them, and keep the shard's rows.
    2. Corrupt and regress as denoising_loss does.
    3. Return sum_{i in rows} w_i err_i * world_size / global_size: averaged over ranks (by DDP for the
       gradients, by :func:`mean_over_ranks` for the logged value), it is the global batch's mean loss.
    """
    global_shape = (shard.global_size, *x0.shape[1:])
    t = sample_time_steps(shard.global_size, noise_schedule, x0.device, generator)[shard.rows]  # (B_local,)
    noise = torch.randn(global_shape, device=x0.device, dtype=x0.dtype, generator=generator)
    noise = noise[shard.rows]  # (B_local, ...)
    errors = weighted_errors(model, x0, noise_schedule, t, noise, labels, weighting, min_snr_gamma)  # (B_local,)
    return errors.sum() * (shard.world_size / shard.global_size)


@contextlib.contextmanager
def main_rank_output(context: DistributedContext | None) -> Iterator[None]:
    """Let only rank 0 print, warn and draw progress bars inside the block (the other ranks would repeat them).

    An exception leaving the block is still reported on every rank: the interpreter prints it after the
    block has given back the real stdout and stderr.
    """
    if context is None or context.is_main:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
