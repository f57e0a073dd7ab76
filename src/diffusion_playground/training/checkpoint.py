"""Checkpoint files: atomic writes, finding the newest valid one, and rebuilding a model from one.

A checkpoint is one ``checkpoint-step{step:08d}.pt`` file per save. It is written to a temporary
file in the same folder, flushed to disk, then ``os.replace``d into place, so a crash during a save
leaves the previous checkpoint intact and never a half-written file under a checkpoint's name. Every
record of the archive carries a CRC-32 that is verified on reading, so a file damaged later (bit rot, a
bad copy) is reported as corrupt rather than loaded with changed weights.
Everything in it is plain tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)`` (no arbitrary code runs when a file is opened).

A run can also record what it trained on: ``train_denoiser(metadata={"dataset": "swiss_roll"})`` stores the dict
in every checkpoint under ``"metadata"``, and ``load_checkpoint(path, with_metadata=True)`` returns it (``{}`` for
checkpoints written without it).
"""

from __future__ import annotations

import functools
import os
import random
import re
import time
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffusion_playground.atomic_files import atomic_write, ensure_writable_folder, remove_stale_temporary_files
from diffusion_playground.checks import check_device, check_integer
from diffusion_playground.diffusion.categorical import CategoricalDiffusion
from diffusion_playground.diffusion.multimodal import MultimodalDiffusion
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule, schedule_from_config
from diffusion_playground.models.backbones.base_backbone import backbone_from_config
from diffusion_playground.models.edm_preconditioner import EDMPreconditioner
from diffusion_playground.models.multimodal_model import MultimodalModel
from diffusion_playground.models.time_and_class_conditioned_model import TimeAndClassConditionedModel
from diffusion_playground.models.time_conditioned_model import TimeConditionedModel

CHECKPOINT_FORMAT_VERSION = 1
# what train_denoiser writes in every checkpoint, and what resuming and load_checkpoint read
CHECKPOINT_KEYS = (
    "model", "ema", "ema_num_updates", "optimizer", "lr_scheduler", "grad_scaler", "step", "epoch", "step_in_epoch",
    "losses", "epoch_losses", "rng", "model_config", "noise_schedule", "train_config",
)  # fmt: skip
# what train_autoencoder writes (training/autoencoder_trainer.py)
AUTOENCODER_KEYS = ("autoencoder", "autoencoder_config", "optimizer", "step", "epoch", "losses", "reconstruction", "train_config")
_CHECKPOINT_NAME = re.compile(r"^checkpoint-step(\d+)\.pt$")
_WRAPPERS: dict[str, type[nn.Module]] = {
    "TimeConditionedModel": TimeConditionedModel,
    "TimeAndClassConditionedModel": TimeAndClassConditionedModel,
    "MultimodalModel": MultimodalModel,
    "EDMPreconditioner": EDMPreconditioner,
}


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or from an incompatible version."""


def plain_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metadata`` as a plain dict (tuples as lists) that a checkpoint can hold, or a TypeError naming the value
    that can't be stored: str keys, and None, bools, ints, floats, strings, lists and dicts of them."""

    def plain(value: Any, where: str) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, Mapping):
            bad = [key for key in value if not isinstance(key, str)]
            if bad:
                raise TypeError(f"metadata{where} has a key {bad[0]!r} that is not a string")
            return {key: plain(item, f"{where}[{key!r}]") for key, item in value.items()}
        raise TypeError(
            f"metadata{where} is a {type(value).__name__}; checkpoints store plain values only "
            "(None, bool, int, float, str, and lists and dicts of them)"
        )

    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict of plain values; got {type(metadata).__name__}")
    return plain(metadata, "")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"checkpoint-step{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """torch.save through :func:`~diffusion_playground.atomic_files.atomic_write`: readers see the old file or the
    new one, never a part. Each record of the archive carries its CRC-32, which :func:`read_checkpoint` checks."""
    path = Path(path)
    crc32 = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(True)  # the checksums are what tells bit rot from a good file
    try:
        with atomic_write(path) as handle:
            torch.save(state, handle)
    finally:
        torch.serialization.set_crc32_options(crc32)
    return path


def prepare_checkpoint_dir(directory: str | Path) -> Path:
    """Create ``directory`` if needed, check that files can be written in it, and remove the temporary files of
    saves killed mid-write: run before training, so a bad folder fails at once rather than after an epoch."""
    directory = ensure_writable_folder(directory, "checkpoint_dir")
    remove_stale_temporary_files(directory)
    return directory


def _check_archive(path: Path) -> None:
    """CheckpointError unless every record of the zip archive torch.save wrote matches its stored CRC-32.

    torch.load itself does not check them: a flipped byte inside a tensor would load as a changed weight.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # reads every record, compares its CRC-32
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}); "
            "delete it to resume from the previous one"
        ) from error
    if damaged is not None:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its record {damaged} fails the CRC-32 check (the file changed after it "
            "was written: bit rot or a bad copy); delete it to resume from the previous one"
        )


def load_verified(path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False) -> Any:
    """torch.load(weights_only=True) of a file :func:`save_checkpoint_atomic` wrote, after checking its CRC-32s;
    a CheckpointError (with the reason) for a damaged, truncated or foreign file."""
    path = Path(path)
    _check_archive(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # bad pickle, disk error: all mean "unusable"
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}); "
            "delete it to resume from the previous one"
        ) from error


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False,
    keys: tuple[str, ...] = CHECKPOINT_KEYS,
) -> dict[str, Any]:  # fmt: skip
    """Load one checkpoint file, raising :class:`CheckpointError` with the reason when it can't be used.

    The archive's checksums are verified first; ``mmap=True`` leaves the tensors on disk (to check a file cheaply).
    ``keys`` are the entries it must hold: a denoiser's (train_denoiser) by default, or an autoencoder's
    (AUTOENCODER_KEYS, train_autoencoder).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint file at {path}; pass a checkpoint-step*.pt file or the checkpoint_dir of a training run"
        )
    state = load_verified(path, map_location, mmap=mmap)
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a diffusion_playground checkpoint (no format_version)")
    if state["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format_version']}, this version of diffusion_playground reads "
            f"format {CHECKPOINT_FORMAT_VERSION}; load it with the package version that wrote it "
            f"({state.get('package_version', 'unknown')})"
        )
    missing = [key for key in keys if key not in state]
    if missing and keys == CHECKPOINT_KEYS and "autoencoder" in state:
        raise CheckpointError(f"{path} is an autoencoder checkpoint (train_autoencoder): load it with load_autoencoder")
    if missing and "autoencoder" in missing and "model" in state:
        raise CheckpointError(f"{path} is a denoiser checkpoint (train_denoiser), not an autoencoder's: load it with load_checkpoint")
    if missing:
        raise CheckpointError(
            f"{path} is incomplete: it has no {', '.join(missing)} (not written by train_denoiser?); "
            "use a checkpoint a training run wrote"
        )
    return state


def is_valid_checkpoint(path: str | Path, keys: tuple[str, ...] = CHECKPOINT_KEYS) -> bool:
    """Whether ``path`` is a checkpoint :func:`read_checkpoint` accepts (checksums verified, tensors left on disk);
    remembered per (path, size, modification time), so pruning after each save re-reads only new files."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError:
        return False
    return _is_valid_checkpoint(str(path), info.st_size, info.st_mtime_ns, keys)


@functools.lru_cache(maxsize=256)
def _is_valid_checkpoint(path: str, size: int, mtime_ns: int, keys: tuple[str, ...]) -> bool:
    try:
        read_checkpoint(path, mmap=True, keys=keys)
    except (CheckpointError, OSError):
        return False
    return True


def read_newest_valid_checkpoint(
    directory: str | Path, map_location: str | torch.device = "cpu", *, keys: tuple[str, ...] = CHECKPOINT_KEYS
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that loads (with ``keys``); unusable newer ones are reported and skipped."""
    for path in list_checkpoints(directory):
        try:
            return path, read_checkpoint(path, map_location, keys=keys)
        except CheckpointError as error:
            warnings.warn(f"skipping unusable checkpoint: {error}", RuntimeWarning, stacklevel=2)
    return None


def move_aside_old_checkpoints(directory: str | Path) -> Path | None:
    """Move existing checkpoints into ``previous-<time>/`` (used when a run starts fresh with resume=False)."""
    old = list_checkpoints(directory)
    if not old:
        return None
    aside = Path(directory) / f"previous-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    aside.mkdir()
    for path in old:
        os.replace(path, aside / path.name)
    return aside


def prune_checkpoints(directory: str | Path, keep_last: int, *, keys: tuple[str, ...] = CHECKPOINT_KEYS) -> None:
    """Keep the ``keep_last`` newest *valid* checkpoints and delete the older files.

    Only valid checkpoints count: a corrupt or foreign file named like a newer checkpoint neither takes a slot
    nor causes a good checkpoint to be deleted (it stays where it is, and resuming skips it with a warning).
    """
    keep_last = check_integer("keep_last", keep_last, minimum=1)
    kept = 0
    for path in list_checkpoints(directory):
        if kept >= keep_last:
            path.unlink(missing_ok=True)
        elif is_valid_checkpoint(path, keys):
            kept += 1


# ---------------------------------------------------------------------------- random number generators


def capture_rng_states() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) RNG states, as weights_only-loadable values."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": numpy_state["state"]["key"].tolist(),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": np.asarray(numpy_state["key"], dtype=np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------------------- model description


def model_config(model: nn.Module) -> dict[str, Any] | None:
    """What rebuilds ``model``: its wrapper class and arguments and its backbone's, or None if it can't be rebuilt."""
    wrapper_name = type(model).__name__
    if _WRAPPERS.get(wrapper_name) is not type(model):
        return None
    backbone = model.backbone.backbone_config() if hasattr(model.backbone, "backbone_config") else None
    if backbone is None:
        return None
    return {"wrapper": wrapper_name, "wrapper_kwargs": model.wrapper_config(), "backbone": backbone}


def model_from_config(config: dict[str, Any]) -> nn.Module:
    backbone = backbone_from_config(config["backbone"])
    return _WRAPPERS[config["wrapper"]](backbone, **config["wrapper_kwargs"])


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    *,
    use_ema: bool = True,
    device: torch.device | str | None = None,
    with_schedule: bool = False,
    with_metadata: bool = False,
) -> nn.Module | tuple[Any, ...]:
    """Load a trained model for sampling, from a checkpoint file or a folder of them (newest valid one).

    Args:
        path: a ``checkpoint-step*.pt`` file or the ``checkpoint_dir`` of a training run.
        model: a model to fill with the weights; None rebuilds the model from the configuration
            stored in the checkpoint (possible when its backbone class is importable).
        use_ema: load the exponential moving average of the weights (what samplers should use)
            rather than the raw training weights.
        device: where to put the model (default: CUDA if available, else CPU).
        with_schedule: also return the noise schedule the model was trained with (a :class:`MultimodalDiffusion`
            for a multimodal model, a :class:`CategoricalDiffusion` for a model trained on categorical data, an
            :class:`EDMDiffusion` for an :class:`EDMPreconditioner`), rebuilt from its stored ``config()``.
        with_metadata: also return what the run recorded with ``train_denoiser(metadata=...)`` (e.g. its
            dataset), a dict; ``{}`` for a checkpoint written without it.

    Returns:
        the model in eval mode, or ``(model, noise_schedule)``, ``(model, metadata)`` or
        ``(model, noise_schedule, metadata)``.
    """
    path = Path(path)
    device = check_device(device) if device is not None else default_device()
    if path.is_dir():
        found = read_newest_valid_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no usable checkpoint-step*.pt file in {path}")
        path, state = found
    else:
        state = read_checkpoint(path)
    if model is None:
        if state.get("model_config") is None:
            raise CheckpointError(
                f"{path} does not record how to rebuild its model (its backbone class is defined in a notebook, "
                "a function, or was built from non-plain arguments); build the model and pass load_checkpoint(path, model=model)"
            )
        model = model_from_config(state["model_config"])
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"the weights in {path} do not fit the given model: {error}") from error
    _check_given_model(path, state, model)  # weights that fit can still be read wrongly
    model.to(device).eval()
    extras = []
    if with_schedule:
        extras.append(schedule_from_config(state["noise_schedule"]).to(device))
    if with_metadata:
        extras.append(dict(state.get("metadata") or {}))
    return (model, *extras) if extras else model


def _check_given_model(path: Path, state: dict[str, Any], model: nn.Module) -> None:
    """A ValueError when the model given to load_checkpoint reads its weights differently than the trained one:
    another prediction target (eps weights read as v) or another number of time steps (another time embedding)."""
    trained = dict((state.get("model_config") or {}).get("wrapper_kwargs", {}))
    trained.setdefault("prediction_type", state["train_config"].get("prediction_type"))
    for key in ("prediction_type", "num_time_steps"):
        given = getattr(model, key, None)
        if trained.get(key) is not None and given is not None and given != trained[key]:
            raise ValueError(
                f"{path} was trained with {key}={trained[key]!r} but the given model has {key}={given!r}: its weights "
                f"would be read wrongly; build the wrapper with {key}={trained[key]!r}"
            )


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
