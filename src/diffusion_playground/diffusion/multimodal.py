"""Joint diffusion of a structured sample: a dict of parts, each corrupted by its own process at its own time.

For a sample x_0 = {x_0^k} (say an image and its label) and processes {q^k} (Gaussian for the image,
categorical for the label), training draws an independent t_k ~ U{0, ..., T-1} per part, corrupts each part
with its own q^k(x_t^k | x_0^k), lets one network (:class:`~diffusion_playground.models.MultimodalModel`) see
all noisy parts at once, and sums the per-part losses with weights:

    L = sum_k w_k L^k,   L^k = E ||f^k - target^k||^2   (Gaussian, Ho et al. 2020, eq. 14)
                         L^k = E [L_vb + lambda CE]       (categorical, Austin et al. 2021, eq. 5)

Sampling walks t = T-1, ..., 0 with every part at the same t and takes each part's own ancestral step from the
one network call: the parts are generated jointly, so a generated label agrees with its generated image. A part
passed as ``given`` is held fixed while the others are sampled: p(image | label) or p(label | image) from the same
network, because the times were independent in training (Bao et al. 2023). The given part is fed as it is, with
time step t = 0, which in this package is already one noise step: a given Gaussian part is fed as x_0 itself (not
sqrt(alpha_bar_0) x_0 + sqrt(beta_0) eps, what training showed at t = 0), a given categorical part as the one-hot
code of x_0 (a state training drew at t = 0 with probability alpha_bar_0 + (1 - alpha_bar_0) pi_{x_0}).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffusion_playground.checks import check_integer
from diffusion_playground.diffusion.backward import model_device, posterior_step, strided_posterior
from diffusion_playground.diffusion.categorical import CategoricalDiffusion
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.diffusion.parameterization import coefficients, target_from_x0_eps, x0_eps_from_prediction
from diffusion_playground.diffusion.training_utils import q_sample, randn_like

Process = NoiseSchedule | CategoricalDiffusion


class MultimodalDiffusion:
    """A dict of processes, one per part of the sample, with loss weights; the parts share T.

    Args:
        processes: ``{name: NoiseSchedule or CategoricalDiffusion}``, in the order of the model's parts.
        weights: ``{name: w_k}`` of the summed loss (default 1 for every part).
    """

    def __init__(self, processes: Mapping[str, Process], weights: Mapping[str, float] | None = None) -> None:
        self.processes = dict(processes)
        if len(self.processes) < 2:
            raise ValueError(f"a multimodal process needs at least two parts; got {list(self.processes)}")
        for name, process in self.processes.items():
            if not isinstance(process, (NoiseSchedule, CategoricalDiffusion)):
                raise TypeError(f"part {name!r}: expected a NoiseSchedule or a CategoricalDiffusion; got {type(process).__name__}")
        steps = {name: process.T for name, process in self.processes.items()}
        if len(set(steps.values())) != 1:
            raise ValueError(f"every part's process must have the same T (joint sampling walks them together); got {steps}")
        weights = {name: 1.0 for name in self.processes} if weights is None else {k: float(v) for k, v in weights.items()}
        if set(weights) != set(self.processes) or any(not math.isfinite(w) or w < 0 for w in weights.values()):
            raise ValueError(f"weights must give a finite w >= 0 for each of the parts {list(self.processes)}; got {weights}")
        self.weights = weights

    def __copy__(self) -> MultimodalDiffusion:
        """A copy whose parts are copies too, so moving it (``copy.copy(p).to(device)``) leaves this one in place."""
        return MultimodalDiffusion({name: copy.copy(process) for name, process in self.processes.items()}, self.weights)

    @property
    def T(self) -> int:  # noqa: N802 - the paper's symbol
        return next(iter(self.processes.values())).T

    def to(self, device: torch.device | str) -> MultimodalDiffusion:
        """Move every part's process to ``device`` (in place) and return self."""
        for process in self.processes.values():
            process.to(device)
        return self

    def config(self) -> dict[str, Any]:
        """What rebuilds this process with :func:`~diffusion_playground.diffusion.noise_schedule.schedule_from_config`."""
        return {
            "name": "multimodal",
            "processes": {name: process.config() for name, process in self.processes.items()},
            "weights": self.weights,
        }

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}: {process!r} (w={self.weights[name]:g})" for name, process in self.processes.items())
        return f"MultimodalDiffusion({parts})"

    def encoded_shape(self, name: str, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape a part of one sample's ``shape`` has for the network: as is (Gaussian), one-hot (categorical)."""
        process = self.processes[name]
        if isinstance(process, NoiseSchedule):
            return tuple(shape)
        return tuple(process.encode(torch.zeros(1, *shape, dtype=torch.long)).shape[1:])

    def check_x0(self, x0: Mapping[str, Tensor], *, check_values: bool = True) -> None:
        """Raise a ValueError unless x0 holds every part, with one batch size, in its process's format."""
        if not isinstance(x0, Mapping) or set(x0) != set(self.processes):
            got = sorted(x0) if isinstance(x0, Mapping) else type(x0).__name__
            raise ValueError(f"the data must be a dict with the parts {list(self.processes)}; got {got}")
        sizes = {name: x0[name].shape[0] for name in self.processes}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"every part must hold the same number of samples; got {sizes}")
        for name, process in self.processes.items():
            if isinstance(process, CategoricalDiffusion):
                process.check_x0(x0[name], check_values=check_values)
            elif not x0[name].is_floating_point():
                raise ValueError(f"part {name!r} has a Gaussian process and must be floating point; got {x0[name].dtype}")

    # ------------------------------------------------------------------------------ the loss

    def part_losses(
        self,
        model: nn.Module,
        x0: Mapping[str, Tensor],
        t: Mapping[str, Tensor],
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Each part's loss per sample, shape (B,), at the given steps, from one network call on all noisy parts.

        Gaussian parts: ||f^k - target^k||^2 averaged over the part's elements (target by ``model.prediction_type``);
        categorical parts: L_vb + lambda CE averaged over the part's elements.
        """
        x_t, noise = {}, {}
        for name, process in self.processes.items():
            if isinstance(process, NoiseSchedule):
                noise[name] = randn_like(x0[name], generator)
                x_t[name] = q_sample(x0[name], process, t[name], noise[name])
            else:
                x_t[name] = process.q_sample(x0[name], t[name], generator)
        out = model(self._network_inputs(x_t), t)
        losses = {}
        for name, process in self.processes.items():
            if isinstance(process, NoiseSchedule):
                target = target_from_x0_eps(x0[name], noise[name], *coefficients(process, t[name], x0[name]), model.prediction_type)
                losses[name] = F.mse_loss(out[name].float(), target.float(), reduction="none").flatten(1).mean(dim=1)
            else:
                logits = process.logits_from_output(out[name], x_t[name])
                vb, ce = process.loss_terms_from_logits(x0[name].long(), x_t[name], t[name], logits)
                losses[name] = (vb + process.hybrid_lambda * ce).flatten(1).mean(dim=1)
        return losses

    def training_loss(
        self,
        model: nn.Module,
        x0: Mapping[str, Tensor],
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """sum_k w_k mean_i L^k_i with an independent t_k ~ U{0, ..., T-1} per part and sample (what the trainer calls)."""
        if labels is not None:
            raise ValueError("a multimodal model generates its labels as a part of the sample: put them in the data dict")
        self.check_x0(x0, check_values=next(iter(x0.values())).device.type == "cpu")
        batch = next(iter(x0.values())).shape[0]
        device = next(iter(x0.values())).device
        draw_device = generator.device if generator is not None else device
        t = {name: torch.randint(0, self.T, (batch,), generator=generator, device=draw_device).to(device) for name in self.processes}
        losses = self.part_losses(model, x0, t, generator=generator)
        return sum(self.weights[name] * loss.mean() for name, loss in losses.items())

    def _network_inputs(self, x_t: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """What the network sees of each part: Gaussian parts as they are, categorical ones as their one-hot code."""
        return {
            name: x_t[name] if isinstance(process, NoiseSchedule) else process.encode(x_t[name])
            for name, process in self.processes.items()
        }

    # ------------------------------------------------------------------------------ joint sampling

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        num_samples: int,
        shapes: Mapping[str, Sequence[int]],
        *,
        given: Mapping[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        show_progress: bool = False,
    ) -> dict[str, Tensor]:
        """Draw every part jointly by ancestral sampling, all parts stepping t = T-1, ..., 0 together.

        Args:
            model: the trained :class:`~diffusion_playground.models.MultimodalModel` (e.g. the EMA model).
            num_samples: B, how many structured samples.
            shapes: the shape of one sample of each part, e.g. ``{"image": (1, 8, 8), "label": (1,)}``.
            given: parts to hold fixed, ``{name: (B, ...) tensor}``: at every step each is fed as it is (x_0, not
                noised; categorical parts as their one-hot code) with time step t = 0, and returned as given, so
                the others are drawn from the conditional (e.g. images of a label). t = 0 is one noise step in
                training (std sqrt(beta_0) for a Gaussian part), so a clean Gaussian part is slightly off it.
            generator: a torch.Generator for reproducible samples.
            device: where to sample; defaults to the model's device.
        Returns:
            ``{name: (B, ...) tensor}``: floats for Gaussian parts, category indices for categorical ones.
        """
        given = dict(given or {})
        if set(shapes) != set(self.processes) or not set(given) <= set(self.processes):
            raise ValueError(f"shapes must name the parts {list(self.processes)} and given a subset of them; got {sorted(shapes)}, {sorted(given)}")
        if len(given) == len(self.processes):
            raise ValueError("every part is given: there is nothing to sample")
        num_samples = check_integer("num_samples", num_samples, minimum=1)
        device = torch.device(device) if device is not None else model_device(model)
        processes = {name: copy.copy(process).to(device) for name, process in self.processes.items()}
        steps = list(range(self.T - 1, -1, -1))
        x = {}
        for name, process in processes.items():
            shape = (num_samples, *(check_integer(f'shapes[{name!r}]', d, minimum=1) for d in shapes[name]))
            if name in given:
                x[name] = given[name].to(device)
                if tuple(x[name].shape) != shape:
                    raise ValueError(f"given[{name!r}] has shape {tuple(x[name].shape)}; expected {shape}")
            elif isinstance(process, NoiseSchedule):
                x[name] = randn_like(torch.empty(shape, device=device), generator)  # x_{T-1} ~ N(0, I)
            else:
                x[name] = process.sample_stationary(shape, generator)  # x_{T-1} ~ pi
        posteriors = {name: strided_posterior(p, steps) for name, p in processes.items() if isinstance(p, NoiseSchedule)}
        was_training = model.training
        model.eval()
        try:
            for i, t_int in enumerate(tqdm(steps, desc="joint sampling", disable=not show_progress, leave=False)):
                t = {name: torch.tensor(0 if name in given else t_int, device=device) for name in processes}
                out = model(self._network_inputs(x), t)
                for name, process in processes.items():
                    if name in given:
                        continue
                    if isinstance(process, NoiseSchedule):  # DDPM step (Ho et al. 2020, Alg. 2)
                        a_t, s_t = coefficients(process, t[name], x[name])
                        x0_hat, _ = x0_eps_from_prediction(out[name].float(), x[name], a_t, s_t, model.prediction_type)
                        x[name] = posterior_step(x[name], x0_hat, posteriors[name][:, i], generator)
                    else:  # D3PM step (Austin et al. 2021, eq. 4)
                        x[name] = process.reverse_step(x[name], process.logits_from_output(out[name], x[name]), t[name], generator)
        finally:
            model.train(was_training)
        return x


__all__ = ["MultimodalDiffusion"]
