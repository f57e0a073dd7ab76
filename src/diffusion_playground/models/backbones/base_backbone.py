"""The generic backbone interface: what a user implements to swap in their own network.

A backbone maps ``(x_t, cond)`` to a tensor of x_t's shape. ``cond`` is a ``(B, cond_dim)``
embedding built by a wrapper (:class:`TimeConditionedModel`, :class:`TimeAndClassConditionedModel`)
from the time step and, optionally, the class label. A backbone knows nothing of time steps,
labels, schedules or samplers, so the trainer and every sampler work with any backbone.

Minimal example::

    class TinyBackbone(BaseBackbone):
        def __init__(self, dim: int = 2, cond_dim: int = 128):
            super().__init__()
            self.cond_dim, self.input_shape = cond_dim, (dim,)
            self.net = nn.Sequential(nn.Linear(dim + cond_dim, 64), nn.SiLU(), nn.Linear(64, dim))

        def forward(self, x, cond_emb):
            return self.net(torch.cat([x, cond_emb], dim=1))
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

_PLAIN_TYPES = (type(None), bool, int, float, str)


class BaseBackbone(nn.Module, ABC):
    """Abstract backbone: ``forward(x, cond_emb) -> Tensor`` of x's shape.

    Attributes a subclass sets in ``__init__``:
        cond_dim: size of the conditioning embedding it expects (the wrapper's ``time_emb_dim``).
        input_shape: shape of one sample, e.g. ``(2,)`` or ``(1, 28, 28)``, or None to accept any;
            the wrappers use it to reject wrongly shaped inputs with a clear message.

    The arguments a backbone was constructed with are recorded automatically, so a checkpoint
    can rebuild it (:meth:`backbone_config`) when its class is importable.
    """

    cond_dim: int
    input_shape: tuple[int, ...] | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "BaseBackbone":
        instance = super().__new__(cls)
        # Stored in __dict__ directly: nn.Module.__init__ has not run yet.
        instance.__dict__["_init_args"] = (args, kwargs)
        return instance

    @abstractmethod
    def forward(self, x: Tensor, cond_emb: Tensor) -> Tensor:
        """Map the noisy input x (B, ...) and the embedding cond_emb (B, cond_dim) to a tensor of x's shape."""

    def backbone_config(self) -> dict[str, Any] | None:
        """``{"class": "module:QualName", "args": [...], "kwargs": {...}}``, or None when the
        class can't be re-imported (defined in a notebook or a function) or was built from
        arguments that are not plain values (numbers, strings, lists, dicts)."""
        cls = type(self)
        args, kwargs = self.__dict__.get("_init_args", ((), {}))
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__ or not _is_plain([args, kwargs]):
            return None
        return {"class": f"{cls.__module__}:{cls.__qualname__}", "args": list(args), "kwargs": dict(kwargs)}


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN_TYPES):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def backbone_from_config(config: dict[str, Any]) -> BaseBackbone:
    """Rebuild a backbone from :meth:`BaseBackbone.backbone_config` by importing its class."""
    module_name, _, qualname = config["class"].partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"cannot import the backbone class {config['class']!r} recorded in the checkpoint ({error}); "
            "build the model yourself and pass it: load_checkpoint(path, model=model)"
        ) from error
    return target(*config["args"], **config["kwargs"])
