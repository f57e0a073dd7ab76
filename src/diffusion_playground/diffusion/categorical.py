"""D3PM: diffusion on categorical data (Austin et al. 2021, "Structured Denoising Diffusion Models in Discrete
State-Spaces").

Notation (Austin et al. 2021, section 3), with states as one-hot row vectors of length S:

    one step     q(x_t | x_{t-1}) = Cat(x_{t-1} Q_t),  [Q_t]_ij = q(x_t = j | x_{t-1} = i)          (eq. 2)
    marginal     q(x_t | x_0) = Cat(x_0 Q_bar_t),      Q_bar_t = Q_0 Q_1 ... Q_t                    (eq. 3)
    posterior    q(x_{t-1} | x_t, x_0) ∝ (x_t Q_t^T) ⊙ (x_0 Q_bar_{t-1})                            (eq. 3)
    reverse      p_theta(x_{t-1} | x_t) ∝ sum_{x_0} q(x_{t-1}, x_t | x_0) p~_theta(x_0 | x_t)        (eq. 4)
                 where p~_theta(x_0 | x_t) is the network's prediction of x_0 (softmax of its logits)

Both transitions here have the form Q_t = (1 - beta_t) I + beta_t 1 pi^T with a stationary distribution pi
(uniform: pi = 1/K; absorbing: pi = e_mask), a family closed under products:

    Q_bar_t = alpha_bar_t I + (1 - alpha_bar_t) 1 pi^T,    alpha_bar_t = prod_{s<=t} (1 - beta_s).

Every computation uses these closed forms, O(S) per element; the (T, S, S) matrices are built only when
:attr:`CategoricalDiffusion.Q` or :attr:`CategoricalDiffusion.Q_bar` is read.

Time steps are integers t in [0, T), as for the Gaussian schedules: ``x0`` is the data, index 0 the first
corrupted state (Austin's t = 1) and T - 1 the last; the state before index 0 is ``x0`` itself.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffusion_playground.checks import check_integer
from diffusion_playground.diffusion.backward import class_labels_tensor, model_device
from diffusion_playground.diffusion.training_utils import call_model, check_time_steps

Transition = Literal["uniform", "absorbing"]
TRANSITIONS: tuple[str, ...] = ("uniform", "absorbing")


class CategoricalDiffusion:
    """D3PM on K categories (Austin et al. 2021): the corruption process, its loss and its sampler.

    ``transition="uniform"``: Q_t = (1 - beta_t) I + beta_t / K 11^T (stationary: uniform over the K
    categories; Austin et al. 2021, section 3.1). ``"absorbing"``: one extra [MASK] state with index K;
    a state stays with probability 1 - beta_t and jumps to MASK with probability beta_t, so
    Q_t = (1 - beta_t) I + beta_t 1 e_mask^T (section 3.1); the stationary distribution is all MASK.

    The model is an ordinary :class:`TimeConditionedModel` / :class:`TimeAndClassConditionedModel` around
    any backbone whose input and output have S times the data's channels (S = :attr:`num_states`):
    ``MLPBackbone(data_dim=D * S)`` for vectors (B, D), ``UNetBackbone(in_channels=C * S)`` for images
    (B, C, H, W). It sees :meth:`encode` (x_t) and its output is read as the logits of p~_theta(x_0 | x_t);
    the wrapper's ``prediction_type`` is not used (keep the default).

    Args:
        num_categories: K >= 2, the data's values are integers in [0, K).
        time_steps: T >= 2, the number of corruption steps.
        transition: ``"uniform"`` or ``"absorbing"``.
        hybrid_lambda: weight of the auxiliary cross-entropy in the hybrid loss (Austin et al. 2021, eq. 5).
            The default 0.01 is this package's choice; Austin et al.'s CIFAR-10 configuration uses 0.001. The
            larger value leans more on the cross-entropy, which carries a direct signal at every step, for the
            short runs on small data this package makes. 0 trains on the variational bound alone.
        betas: the T one-step probabilities beta_t, each in (0, 1] (1 only at the last step). Default, as in
            Austin et al.'s code: uniform: the cosine schedule alpha_bar(t) = cos((t / T + s) / (1 + s) pi / 2),
            s = 0.008 (Hoogeboom et al. 2021; Nichol & Dhariwal's eq. 17 without the square),
            beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped at 0.999; absorbing: beta_t = 1 / (T - t) for our
            t in [0, T) (their 1 / (T - t + 1) with t from 1; Sohl-Dickstein et al. 2015), i.e.
            alpha_bar_t = 1 - (t + 1) / T: at t = T - 1 every element is MASK.

    Attributes:
        num_categories: K.  num_states: S = K, or K + 1 with the MASK state.  mask_index: K, or None.
        betas, alpha_bars, alpha_bars_prev: (T,) float32 (alpha_bar_{-1} = 1).
        stationary_probs: (S,) pi, the distribution x_{T-1} is drawn from when sampling.
    """

    def __init__(
        self,
        num_categories: int,
        time_steps: int = 1000,
        transition: Transition = "uniform",
        *,
        hybrid_lambda: float = 0.01,
        betas: Tensor | Sequence[float] | None = None,
    ) -> None:
        if not isinstance(num_categories, int) or isinstance(num_categories, bool) or num_categories < 2:
            raise ValueError(f"num_categories (K) must be an integer >= 2; got {num_categories!r}")
        if not isinstance(time_steps, int) or isinstance(time_steps, bool) or time_steps < 2:
            raise ValueError(f"time_steps (T) must be an integer >= 2 (a chain to denoise); got {time_steps!r}")
        if transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}; got {transition!r}")
        if not 0.0 <= float(hybrid_lambda) < float("inf"):
            raise ValueError(f"hybrid_lambda must be a finite number >= 0 (0: the bound alone); got {hybrid_lambda}")
        self.num_categories = num_categories
        self.transition = transition
        self.hybrid_lambda = float(hybrid_lambda)
        self.num_states = num_categories + 1 if transition == "absorbing" else num_categories
        self.mask_index = num_categories if transition == "absorbing" else None
        self._custom_betas = betas is not None
        if betas is None:
            betas = _default_betas(time_steps, transition)
        self._betas64 = _check_betas(torch.as_tensor(betas, dtype=torch.float64), time_steps)
        self._build(torch.device("cpu"))

    def _build(self, device: torch.device) -> None:
        """Derive every tensor from beta in float64, store float32 on ``device``."""
        betas = self._betas64
        alpha_bars = torch.cumprod(1.0 - betas, dim=0)
        alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
        if self.mask_index is None:
            pi = torch.full((self.num_states,), 1.0 / self.num_categories, dtype=torch.float64)
        else:
            pi = F.one_hot(torch.tensor(self.mask_index), self.num_states).double()

        def f32(x: Tensor) -> Tensor:
            return x.to(device=device, dtype=torch.float32)

        self.betas = f32(betas)
        self.alpha_bars = f32(alpha_bars)
        self.alpha_bars_prev = f32(alpha_bars_prev)  # alpha_bar_{t-1}, with alpha_bar_{-1} = 1
        self.stationary_probs = f32(pi)
        self._log_stationary_probs = f32(pi.log())  # -inf off the MASK state for absorbing
        self._log_alpha_bars_prev = f32(alpha_bars_prev.log())
        self._log_one_minus_alpha_bars_prev = f32((1.0 - alpha_bars_prev).log())  # -inf at t = 0
        self._matrices: tuple[Tensor, Tensor] | None = None  # (Q, Q_bar), built on first use
        self._device = device

    # ------------------------------------------------------------------------------ the schedule's views

    @property
    def time_steps(self) -> int:
        """T, the number of corruption steps."""
        return self._betas64.numel()

    @property
    def T(self) -> int:
        return self.time_steps

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def Q(self) -> Tensor:
        """(T, S, S) one-step matrices, [Q_t]_ij = q(x_t = j | x_{t-1} = i) = (1 - beta_t) delta_ij + beta_t pi_j."""
        return self._transition_matrices()[0]

    @property
    def Q_bar(self) -> Tensor:
        """(T, S, S) cumulative matrices Q_bar_t = Q_0 ... Q_t = alpha_bar_t I + (1 - alpha_bar_t) 1 pi^T."""
        return self._transition_matrices()[1]

    def _transition_matrices(self) -> tuple[Tensor, Tensor]:
        """Build (Q, Q_bar) in float64 from the closed forms, store them float32 (T S^2 floats each)."""
        if self._matrices is None:
            betas = self._betas64[:, None, None]  # (T, 1, 1)
            alpha_bars = torch.cumprod(1.0 - self._betas64, dim=0)[:, None, None]  # (T, 1, 1)
            eye = torch.eye(self.num_states, dtype=torch.float64)  # (S, S)
            jump = self.stationary_probs.double().cpu().expand(self.num_states, -1)  # (S, S): every row is pi
            Q = (1.0 - betas) * eye + betas * jump
            Q_bar = alpha_bars * eye + (1.0 - alpha_bars) * jump
            self._matrices = (Q.to(self._device, torch.float32), Q_bar.to(self._device, torch.float32))
        return self._matrices

    def to(self, device: torch.device | str) -> CategoricalDiffusion:
        """Move every derived tensor to ``device`` (in place) and return self."""
        self._build(torch.device(device))
        return self

    def config(self) -> dict[str, Any]:
        """Arguments that rebuild this process with :func:`schedule_from_config` (used by checkpoints)."""
        return {
            "name": "categorical",
            "num_categories": self.num_categories,
            "time_steps": self.T,
            "transition": self.transition,
            "hybrid_lambda": self.hybrid_lambda,
            "betas": self._betas64.tolist() if self._custom_betas else None,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(K={self.num_categories}, transition={self.transition!r}, T={self.T}, "
            f"alpha_bar_T-1={self.alpha_bars[-1].item():.2e}, hybrid_lambda={self.hybrid_lambda})"
        )

    # ------------------------------------------------------------------------------ the forward process

    def q_probs(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """q(x_t | x_0) = Cat(x_0 Q_bar_t) = alpha_bar_t x_0 + (1 - alpha_bar_t) pi  (Austin et al. 2021, eq. 3).

        Args:
            x0: integer data (B, ...) with values in [0, K).
            t: one step for the whole batch, or (B,) steps in [0, T).
        Returns:
            probabilities of shape x0.shape + (S,).
        """
        self.check_x0(x0)
        return self._q_probs(x0.long(), self._time_steps(t, x0))

    def q_sample(self, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) (Austin et al. 2021, eq. 3): a LongTensor of x0's shape with values in [0, S)."""
        self.check_x0(x0)
        return sample_categorical(self._q_probs(x0.long(), self._time_steps(t, x0)).log(), generator)

    def q_posterior_probs(self, x_t: Tensor, x0_probs: Tensor, t: Tensor | int) -> Tensor:
        """q(x_{t-1} | x_t, x_0) ∝ (x_t Q_t^T) ⊙ (x_0 Q_bar_{t-1})  (Austin et al. 2021, eq. 3), for t >= 1.

        ``x0_probs`` is a distribution over the S states (x0.shape + (S,), summing to 1): one-hot x_0 gives
        the posterior of eq. 3, the network's p~_theta(x_0 | x_t) gives p_theta(x_{t-1} | x_t) of eq. 4
        (both are linear in x_0: sum_{x_0} q(x_{t-1}, x_t | x_0) p~(x_0), normalised). At t = 0 the previous
        state is the data itself, which the loss and the sampler take from p~_theta(x_0 | x_t) directly.
        x_t must be reachable from some x_0 that ``x0_probs`` gives probability (else there is nothing to normalise).

        Returns:
            probabilities of x_{t-1}, shape x_t.shape + (S,).
        """
        self._check_states(x_t, "x_t", self.num_states)
        if x0_probs.shape != (*x_t.shape, self.num_states) or not x0_probs.is_floating_point():
            raise ValueError(
                f"x0_probs must be float probabilities of shape x_t.shape + (S,) = {(*x_t.shape, self.num_states)}; "
                f"got shape {tuple(x0_probs.shape)}, dtype {x0_probs.dtype}"
            )
        t = self._time_steps(t, x_t)
        if (t == 0).any():
            raise ValueError(
                "q(x_{t-1} | x_t, x_0) needs t >= 1: at t = 0 the previous state is the data x_0 itself "
                "(use the x_0 prediction there)"
            )
        return self._posterior_log_probs(x_t.long(), x0_probs.float().log(), t).exp()

    def _q_probs(self, x0: Tensor, t: Tensor) -> Tensor:
        alpha_bar = _per_sample(self.alpha_bars, t, x0)  # (B, 1, ..., 1, 1)
        pi = self.stationary_probs.to(x0.device)
        return alpha_bar * F.one_hot(x0, self.num_states) + (1.0 - alpha_bar) * pi  # (B, ..., S)

    def _posterior_log_probs(self, x_t: Tensor, log_x0_probs: Tensor, t: Tensor) -> Tensor:
        """log of eq. 3 (one-hot x_0) or eq. 4 (x_0 probabilities), normalised over x_{t-1}; t >= 1."""
        beta = _per_sample(self.betas, t, x_t)  # (B, 1, ..., 1, 1)
        # 1. x_t Q_t^T: [Q_t]_{j, x_t} = (1 - beta_t) [j = x_t] + beta_t pi_{x_t}
        stay = (1.0 - beta) * F.one_hot(x_t, self.num_states)  # (B, ..., S)
        fact1 = stay + beta * self.stationary_probs.to(x_t.device)[x_t].unsqueeze(-1)  # (B, ..., S)
        # 2. x_0 Q_bar_{t-1} = alpha_bar_{t-1} x_0 + (1 - alpha_bar_{t-1}) pi (x_0 sums to 1), in log space so that
        #    tiny predicted probabilities do not underflow to 0 and leave nothing to normalise
        log_fact2 = torch.logaddexp(
            _per_sample(self._log_alpha_bars_prev, t, x_t) + log_x0_probs,
            _per_sample(self._log_one_minus_alpha_bars_prev, t, x_t) + self._log_stationary_probs.to(x_t.device),
        )  # (B, ..., S)
        # 3. normalise over x_{t-1}
        return torch.log_softmax(fact1.log() + log_fact2, dim=-1)

    # ------------------------------------------------------------------------------ the network

    def encode(self, x: Tensor) -> Tensor:
        """What the backbone sees: the one-hot code of each element over the S states, as 2 onehot - 1 in [-1, 1].

        Images (B, C, H, W) -> (B, C*S, H, W) with channel c*S + s; vectors (B, D) -> (B, D*S) with entry d*S + s.
        """
        self._check_states(x, "x", self.num_states)
        return self._encode(x.long())

    def _encode(self, x: Tensor) -> Tensor:
        one_hot = F.one_hot(x, self.num_states).movedim(-1, 2)  # (B, C, S, ...)
        return (2.0 * one_hot.float() - 1.0).reshape(x.shape[0], -1, *x.shape[2:])  # (B, C*S, ...)

    def model_logits(self, model: nn.Module, x_t: Tensor, t: Tensor | int, labels: Tensor | None = None) -> Tensor:
        """The logits of p~_theta(x_0 | x_t): model(encode(x_t), t[, labels]) read back as x_t.shape + (S,).

        For the absorbing transition the MASK logit is -inf: x_0 is never MASK.
        """
        self._check_states(x_t, "x_t", self.num_states)
        return self._model_logits(model, x_t.long(), torch.as_tensor(t, device=x_t.device), labels)

    def _model_logits(self, model: nn.Module, x_t: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        self._check_model(model, x_t)
        return self.logits_from_output(call_model(model, self._encode(x_t), t, labels), x_t)

    def logits_from_output(self, out: Tensor, x_t: Tensor) -> Tensor:
        """A network's output on :meth:`encode` (x_t) read back as logits of shape x_t.shape + (S,), MASK at -inf."""
        out = out.float()  # (B, C*S, ...)
        batch, channels, spatial = x_t.shape[0], x_t.shape[1], x_t.shape[2:]
        logits = out.reshape(batch, channels, self.num_states, *spatial).movedim(2, -1)  # (B, C, ..., S)
        if self.mask_index is None:
            return logits
        is_mask = torch.arange(self.num_states, device=logits.device) == self.mask_index  # (S,)
        return logits.masked_fill(is_mask, float("-inf"))

    # ------------------------------------------------------------------------------ the loss

    def loss_terms(
        self,
        model: nn.Module,
        x0: Tensor,
        t: Tensor | int,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The two terms of the hybrid loss at given steps, per element, for one draw x_t ~ q(x_t | x_0).

        Returns ``(vb, ce)``, each of x0's shape (float):
            vb: L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) for t >= 1, and
                L_0 = -log p~_theta(x_0 | x_t) at t = 0 (Austin et al. 2021, eq. 1's terms; nats);
            ce: -log p~_theta(x_0 | x_t), the auxiliary cross-entropy of eq. 5.
        """
        self.check_x0(x0)
        return self._loss_terms(model, x0.long(), self._time_steps(t, x0), labels, generator)

    def training_loss(
        self,
        model: nn.Module,
        x0: Tensor,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The hybrid loss L_vb + lambda E[-log p~_theta(x_0 | x_t)] (Austin et al. 2021, eq. 5), one draw per sample.

        t ~ U{0, ..., T-1}; each sample's terms (:meth:`loss_terms`) are averaged over its elements, then over
        the batch. As in Austin et al.'s code, L_vb is the single sampled term L_{t-1} (not T times it) and
        the constant prior term L_T is left out. Labels go to the model as in the Gaussian loss.
        """
        # the range check syncs with the device: on an accelerator train_denoiser checks a tensor dataset once instead
        self.check_x0(x0, check_values=x0.device.type == "cpu")
        device = generator.device if generator is not None else x0.device
        t = torch.randint(0, self.T, (x0.shape[0],), generator=generator, device=device).to(x0.device)
        vb, ce = self._loss_terms(model, x0.long(), t, labels, generator)
        return (vb + self.hybrid_lambda * ce).flatten(1).mean(dim=1).mean()

    def _loss_terms(
        self, model: nn.Module, x0: Tensor, t: Tensor, labels: Tensor | None, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        x_t = sample_categorical(self._q_probs(x0, t).log(), generator)  # 1. corrupt: x_t ~ q(x_t | x_0)
        return self.loss_terms_from_logits(x0, x_t, t, self._model_logits(model, x_t, t, labels))  # 2. predict

    def loss_terms_from_logits(self, x0: Tensor, x_t: Tensor, t: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`loss_terms` given the network's logits of p~_theta(x_0 | x_t) (x_t.shape + (S,)), for callers
        that run the network themselves (a multimodal model predicting several parts in one call)."""
        log_p_x0 = torch.log_softmax(logits, dim=-1)  # (B, ..., S)
        ce = -log_p_x0.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # (B, ...): the cross-entropy of the true x_0
        # KL between the true posterior and the model's at t >= 1 (rows with t = 0 are computed at t = 1
        # and replaced by the CE below, so that no -inf - -inf enters the graph)
        t_post = t.clamp(min=1)
        log_q = self._posterior_log_probs(x_t, F.one_hot(x0, self.num_states).float().log(), t_post)
        log_p = self._posterior_log_probs(x_t, log_p_x0, t_post)
        q = log_q.exp()
        kl = (q * torch.where(q > 0, log_q - log_p, 0.0)).sum(dim=-1)  # (B, ...)
        vb = torch.where((t == 0).reshape(-1, *([1] * (x0.ndim - 1))), ce, kl)  # (B, ...)
        return vb, ce

    # ------------------------------------------------------------------------------ the reverse process

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        shape: Sequence[int],
        *,
        class_labels: Tensor | Sequence[int] | int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        show_progress: bool = False,
        return_trajectory: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Ancestral sampling from p_theta (Austin et al. 2021, section 3), with the model in eval mode.

        1. x_{T-1} ~ pi: uniform categories, or all MASK;
        2. for t = T-1, ..., 1: x_{t-1} ~ p_theta(x_{t-1} | x_t) ∝ sum_{x_0} q(x_{t-1}, x_t | x_0) p~_theta(x_0 | x_t)
           (eq. 4);
        3. x_0 ~ p~_theta(x_0 | x_t) at t = 0, the network's own prediction (the L_0 term of the loss).

        Args:
            model: the trained wrapper (e.g. the EMA model of :func:`train_denoiser`).
            shape: the batch shape (B, ...) of the samples, e.g. (64, 4) or (16, 1, 28, 28).
            class_labels: an int (one class for all) or one label per sample; None = unconditional.
            device: where to sample; defaults to the model's device.
            return_trajectory: also return the T + 1 states from x_{T-1} to x_0, stacked on the CPU (T + 1, *shape).
        Returns:
            a LongTensor of ``shape`` with values in [0, K), or ``(samples, trajectory)``.
        """
        shape = tuple(check_integer("shape", d) for d in shape)  # 2.7 is refused, not truncated
        if len(shape) < 2 or any(d < 1 for d in shape):
            raise ValueError(f"shape must be a batch shape (B, ...) of positive sizes, e.g. (64, 4); got {shape}")
        device = torch.device(device) if device is not None else model_device(model)
        process = copy.copy(self).to(device)  # a device copy: this process stays where it is
        labels = class_labels_tensor(model, class_labels, shape[0], device)
        x = process.sample_stationary(shape, generator)  # x_{T-1}
        trajectory = [x.cpu()] if return_trajectory else None
        was_training = model.training
        model.eval()
        try:
            for t_int in tqdm(range(self.T - 1, -1, -1), desc="D3PM sampling", disable=not show_progress, leave=False):
                t = torch.tensor(t_int, device=device)  # one step for the whole batch: 0-dim, embedded once
                x = process.reverse_step(x, process._model_logits(model, x, t, labels), t, generator)
                if trajectory is not None:
                    trajectory.append(x.cpu())
        finally:
            model.train(was_training)
        return (x, torch.stack(trajectory)) if trajectory is not None else x

    def sample_stationary(self, shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
        """x_{T-1} ~ pi, the stationary distribution: uniform categories, or all [MASK] (Austin et al. 2021, section 3.1)."""
        return sample_categorical(self._log_stationary_probs.expand(*shape, -1), generator)

    def reverse_step(self, x_t: Tensor, logits: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One ancestral step: x_{t-1} ~ p_theta(x_{t-1} | x_t) (eq. 4) from the logits of p~_theta(x_0 | x_t); at
        t = 0 (one step for the batch, a 0-dim tensor) x_0 ~ p~_theta(x_0 | x_t) itself."""
        log_p_x0 = torch.log_softmax(logits, dim=-1)  # (B, ..., S)
        return sample_categorical(self._posterior_log_probs(x_t, log_p_x0, t) if int(t) > 0 else log_p_x0, generator)

    # ------------------------------------------------------------------------------ argument checks

    def check_x0(self, x0: Tensor, *, check_values: bool = True) -> None:
        """Raise a ValueError unless x0 is an integer tensor (B, ...) with values in [0, K) (the range check syncs)."""
        self._check_states(x0, "x0", self.num_categories, check_values=check_values)

    def _check_states(self, x: Tensor, name: str, num_values: int, *, check_values: bool = True) -> None:
        if not isinstance(x, Tensor) or x.ndim < 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a tensor of shape (batch, ...), e.g. (B, D) or (B, C, H, W); got {shape}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(
                f"{name} must be an integer tensor of category indices; got dtype {x.dtype} "
                "(convert with .long(); images in [0, 1] become categories with (x * (K - 1)).round().long())"
            )
        if check_values and x.numel() and (x.min() < 0 or x.max() >= num_values):
            what = "categories" if num_values == self.num_categories else "states (categories and MASK)"
            raise ValueError(
                f"{name} must hold {what} in [0, {num_values}); got values from {x.min().item()} to {x.max().item()}"
            )

    def _time_steps(self, t: Tensor | int, x: Tensor) -> Tensor:
        """t as a (B,) long tensor on x's device (an int or 0-dim t is one step for all)."""
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        check_time_steps(t, self.T, x.shape[0])
        return t.long()

    def _check_model(self, model: nn.Module, x: Tensor) -> None:
        """The backbone must take S channels per data channel, and the wrapper must know every step."""
        expected = (x.shape[1] * self.num_states, *x.shape[2:])
        input_shape = _backbone_input_shape(model)
        if input_shape is not None and tuple(input_shape) != expected:
            kind = "in_channels" if x.ndim > 2 else "data_dim (MLPBackbone)"
            raise ValueError(
                f"the model's backbone takes inputs of shape (batch, {', '.join(map(str, input_shape))}) but the "
                f"one-hot code of x of shape {tuple(x.shape)} with S = {self.num_states} states has shape (batch, "
                f"{', '.join(map(str, expected))}); build the backbone with {kind} = C*S = "
                f"{x.shape[1]}*{self.num_states} = {expected[0]}"
            )
        model_steps = getattr(model, "num_time_steps", None)
        if model_steps is not None and model_steps < self.T:
            raise ValueError(
                f"the process has T={self.T} steps but the model was built for num_time_steps={model_steps}; "
                f"build the wrapper with num_time_steps={self.T}"
            )


def sample_categorical(log_probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of Cat(exp(log_probs)) over the last dimension, by the Gumbel-max trick:
    argmax_s (log p_s + g_s), g_s = -log(-log u_s), u_s ~ U(0, 1) (Gumbel 1954; Maddison et al. 2014).

    The uniforms come from ``generator`` on its own device (so a CPU generator seeds CUDA runs too).
    Returns a LongTensor of shape log_probs.shape[:-1].
    """
    device = generator.device if generator is not None else log_probs.device
    u = torch.rand(log_probs.shape, generator=generator, device=device).to(log_probs.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
    return (log_probs + gumbel).argmax(dim=-1)


def _per_sample(values: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """values[t] reshaped to (B, 1, ..., 1, 1) (or all ones for a 0-dim t) to broadcast against x.shape + (S,)."""
    return values.to(x.device)[t].reshape(-1, *([1] * x.ndim))


def _default_betas(time_steps: int, transition: Transition) -> Tensor:
    """Austin et al.'s defaults: the cosine alpha_bar for uniform, 1 / (T - t + 1) (t from 1) for absorbing."""
    if transition == "absorbing":
        return 1.0 / (time_steps - torch.arange(time_steps, dtype=torch.float64))  # (T,): 1/T, ..., 1/2, 1
    steps = torch.arange(time_steps + 1, dtype=torch.float64) / time_steps  # (T + 1,)
    alpha_bars = torch.cos((steps + 0.008) / 1.008 * math.pi / 2)  # alpha_bar(t), only ratios matter
    return (1.0 - alpha_bars[1:] / alpha_bars[:-1]).clamp(max=0.999)  # (T,)


def _check_betas(betas: Tensor, time_steps: int) -> Tensor:
    if betas.shape != (time_steps,):
        raise ValueError(
            f"betas must be a 1-D tensor of T = time_steps = {time_steps} probabilities; got shape "
            f"{tuple(betas.shape)} (pass time_steps=len(betas))"
        )
    if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas > 1).any():
        raise ValueError(
            f"every beta_t must lie in (0, 1]; got values from {betas.min().item():.3g} to {betas.max().item():.3g}"
        )
    if (betas[:-1] == 1).any():
        raise ValueError(
            "beta_t = 1 is allowed only at the last step: earlier, it would erase x_0 before the chain ends "
            f"(got beta_t = 1 at t = {torch.nonzero(betas[:-1] == 1).flatten().tolist()})"
        )
    return betas


def _backbone_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The backbone's ``input_shape``, looking through DDP (``.module``) and torch.compile (``._orig_mod``)."""
    for _ in range(3):
        backbone = getattr(model, "backbone", None)
        if backbone is not None:
            return getattr(backbone, "input_shape", None)
        inner = getattr(model, "module", None)
        model = inner if inner is not None else getattr(model, "_orig_mod", None)
        if model is None:
            return None
    return None


__all__ = ["TRANSITIONS", "CategoricalDiffusion", "Transition", "sample_categorical"]
