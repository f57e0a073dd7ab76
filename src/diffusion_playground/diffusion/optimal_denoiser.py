"""The exact denoiser of a finite dataset: what a perfectly trained network would output.

For data {x_1, ..., x_N} (the empirical distribution) corrupted as x_sigma = x0 + sigma eps, Bayes' rule gives
(Karras et al. 2022, appendix B.3, eq. 57; Tweedie / Robbins 1956):

    E[x0 | x_sigma = x] = sum_i w_i(x) x_i,     w_i(x) = softmax_i( -||x - x_i||^2 / (2 sigma^2) ).

No training, no approximation error: a sampler's distance from the data measures the sampler alone. It
memorizes the data (as sigma -> 0 the weights pick the nearest x_i), which makes its ODE the stiffest case.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffusion_playground.checks import check_integer, labels_tensor, per_sample
from diffusion_playground.diffusion.denoiser import NULL_LABEL, Denoiser

_DIRECT_DIMENSIONS = 16  # up to this data dimension, distances come from differences (q, n, D) instead of a matmul


class OptimalDenoiser(Denoiser):
    """D(x, sigma) = E[x0 | x_sigma = x] for the empirical distribution of ``data`` (optionally class-conditional).

    Computed in chunks of queries x data points with a streaming log-sum-exp (Milakov & Gimelshein 2018's
    online softmax), so 10k queries x 10k points never form a 10k x 10k matrix, and stays finite at any
    sigma > 0: the logits are shifted by their running maximum before exp.

    Pass it wherever a trained model goes, e.g. ``generate_samples(OptimalDenoiser(data), schedule, (2,), 1000)``.

    Args:
        data: (N, ...) the dataset it denoises towards.
        labels: optional (N,) int64 class of each point; then ``D(x, sigma, y)`` averages over class y only,
            and y = None (or NULL_LABEL) over all points: the exact conditional/unconditional pair of CFG.
        chunk_size: queries and points are taken chunk_size at a time: at most chunk_size^2 distances in memory.
        dtype: precision of distances and weights. None: float32 for data of <= 16 dimensions (distances from
            the differences x - x_i, exact enough at any sigma), else float64 (distances from
            ||x||^2 - 2 x.x_i + ||x_i||^2, whose cancellation float32 would amplify by 1 / sigma^2).
    """

    def __init__(
        self, data: Tensor, labels: Tensor | None = None, *, chunk_size: int = 2048, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        if not isinstance(data, Tensor) or data.ndim < 2 or data.shape[0] < 1:
            shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
            raise ValueError(f"data must be a tensor of shape (N >= 1, ...); got {shape}")
        if not data.is_floating_point() or not bool(torch.isfinite(data).all()):
            raise ValueError("data must be floating-point and finite (no NaN or inf): every sample would be NaN")
        check_integer("chunk_size", chunk_size, minimum=1)
        dimension = data[0].numel()
        self.direct_differences = dimension <= _DIRECT_DIMENSIONS
        dtype = dtype or (torch.float32 if self.direct_differences else torch.float64)
        flat = data.detach().reshape(data.shape[0], -1).to(dtype)  # (N, D)
        self.register_buffer("points", flat)
        self.register_buffer("squared_norms", flat.square().sum(dim=1))  # (N,)
        self.data_shape = tuple(data.shape[1:])
        self.chunk_size = int(chunk_size)
        if labels is not None:
            labels = labels_tensor("labels", labels, num_classes=torch.iinfo(torch.long).max)  # floats refused
            if labels.shape != (data.shape[0],) or labels.min() < 0:
                raise ValueError(f"labels must be ({data.shape[0]},) non-negative ints; got shape {tuple(labels.shape)}")
            self.num_classes = int(labels.max()) + 1
            self.register_buffer("point_labels", labels)
        else:
            self.point_labels = None

    def forward(self, x: Tensor, sigma: Tensor | float, labels: Tensor | None = None) -> Tensor:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"x has shape {tuple(x.shape)} but the data are (N, {', '.join(map(str, self.data_shape))})")
        if labels is not None and self.point_labels is None:
            raise ValueError("labels were given but this OptimalDenoiser was built without labels")
        batch = x.shape[0]
        queries = x.reshape(batch, -1).to(self.points)  # (B, D)
        sigma = per_sample("sigma", torch.as_tensor(sigma, dtype=queries.dtype, device=queries.device), batch)  # (B,)
        if bool((sigma <= 0).any()):
            raise ValueError("the optimal denoiser needs sigma > 0 (at sigma = 0 it is the identity)")
        if labels is not None:
            labels = per_sample("labels", torch.as_tensor(labels, device=queries.device), batch)  # (B,)
        out = torch.cat(
            [
                self._denoise_chunk(
                    queries[start : start + self.chunk_size],
                    sigma[start : start + self.chunk_size],
                    None if labels is None else labels[start : start + self.chunk_size],
                )
                for start in range(0, batch, self.chunk_size)
            ]
        )  # (B, D)
        return out.reshape(x.shape).to(x.dtype)

    def _denoise_chunk(self, queries: Tensor, sigma: Tensor, labels: Tensor | None) -> Tensor:
        """sum_i softmax_i(logit_i) x_i for a chunk of queries, streaming over chunks of points."""
        q = queries.shape[0]
        running_max = torch.full((q, 1), -torch.inf, dtype=queries.dtype, device=queries.device)  # (q, 1)
        running_sum = torch.zeros((q, 1), dtype=queries.dtype, device=queries.device)  # (q, 1)
        weighted = torch.zeros_like(queries)  # (q, D): sum_i exp(logit_i - max) x_i
        query_norms = queries.square().sum(dim=1, keepdim=True)  # (q, 1)
        underflow = math.log(torch.finfo(queries.dtype).tiny) + 1.0  # exp below this is subnormal: slow, and ~0 anyway
        for start in range(0, self.points.shape[0], self.chunk_size):
            points = self.points[start : start + self.chunk_size]  # (n, D)
            logits = self._squared_distances(queries, query_norms, points, start) * (-0.5 / sigma**2)[:, None]  # (q, n)
            if labels is not None:
                point_labels = self.point_labels[start : start + self.chunk_size]
                wrong_class = (labels[:, None] != NULL_LABEL) & (point_labels[None, :] != labels[:, None])  # (q, n)
                logits = logits.masked_fill(wrong_class, -torch.inf)
            new_max = torch.maximum(running_max, logits.amax(dim=1, keepdim=True))  # (q, 1)
            safe_max = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            rescale = torch.exp(running_max - safe_max)  # (q, 1): the old sums in the new scale
            weights = torch.exp((logits - safe_max).clamp_(min=underflow))  # (q, n), each <= 1
            if labels is not None:
                weights = weights.masked_fill(wrong_class, 0.0)  # not in place: autograd needs exp's output
            running_sum = running_sum * rescale + weights.sum(dim=1, keepdim=True)
            weighted = weighted * rescale + (points.T @ weights.T).T  # (q, D); this order is ~3x faster for small D
            running_max = new_max
        if bool((running_sum == 0).any()):
            raise ValueError("a class label has no data point; every label must occur in the data")
        return weighted / running_sum  # (q, D)

    def _squared_distances(self, queries: Tensor, query_norms: Tensor, points: Tensor, start: int) -> Tensor:
        """||x - x_i||^2 for a chunk, shape (q, n): summed coordinate by coordinate for low-dimensional data
        (no cancellation), else ||x||^2 - 2 x.x_i + ||x_i||^2 by one matmul."""
        if not self.direct_differences:
            squared = query_norms - 2.0 * queries @ points.T + self.squared_norms[start : start + points.shape[0]]
            return squared.clamp_(min=0.0)
        queries_t, points_t = queries.T.contiguous(), points.T.contiguous()  # (D, q), (D, n)
        squared = torch.zeros(queries.shape[0], points.shape[0], dtype=queries.dtype, device=queries.device)
        for d in range(queries.shape[1]):
            squared += (queries_t[d, :, None] - points_t[d, None, :]).square_()  # (q, n)
        return squared


__all__ = ["OptimalDenoiser"]
