"""The discrete-digits helpers: quantisation, the memorisation check, and the variational bound in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffusion_playground import CategoricalDiffusion, MLPBackbone, TimeConditionedModel
from diffusion_playground.experiments.discrete_digits import dequantize, exact_copy_fraction, nll_bound_bits, quantize

T, K, D = 12, 4, 6


class CopyVisibleModel(nn.Module):
    """Logits 50 on a visible pixel's own category, 0 everywhere for a masked pixel (the process sets MASK to -inf):
    p~(x_0 | x_t) copies what it sees and is uniform over the K categories where it sees [MASK]."""

    prediction_type = "eps"
    num_time_steps = T

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x_code, t):
        return 25.0 * (x_code + 1.0) + 0 * self.anchor  # one-hot code in {-1, 1} -> {0, 50}


def test_quantize_and_dequantize_round_trip():
    x = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    for k in (2, 16):
        states = quantize(x, k)
        assert states.dtype == torch.long and states.min() == 0 and states.max() == k - 1
        assert torch.equal(quantize(dequantize(states, k), k), states)
        assert (dequantize(states, k) - x).abs().max() <= 1 / (k - 1) + 1e-6  # nearest of K levels
    with pytest.raises(ValueError, match="no MASK"):
        dequantize(torch.tensor([[4]]), 4)


def test_exact_copy_fraction_counts_rows_found_in_the_reference():
    reference = torch.randint(0, 3, (20, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    images = torch.cat([reference[:3], reference[:1] + 3])  # 3 copies, 1 image of values not in the reference
    assert exact_copy_fraction(images, reference) == pytest.approx(0.75)


def test_the_bound_of_a_copy_visible_uniform_masked_model_is_log2_k_bits():
    """Absorbing transition: at step t >= 1 a masked pixel is unmasked with probability r_t = (a_{t-1} - a_t) / (1 - a_t)
    (a = alpha_bar), and the model spreads that mass over K categories: KL = r_t log K. Weighted by P(masked at t) =
    1 - a_t and summed, sum_t (a_{t-1} - a_t) log K = (a_0 - a_{T-1}) log K; the t = 0 term adds (1 - a_0) log K and the
    prior term is 0 (everything is MASK at T-1): the bound is exactly log K, i.e. log2 K bits per pixel."""
    process = CategoricalDiffusion(K, T, "absorbing")
    x0 = torch.randint(0, K, (2000, D), generator=torch.Generator().manual_seed(1))
    # nll_bound_bits draws one x_t per pixel and step: a Monte-Carlo estimate, whose std here is about 0.006 bits
    assert nll_bound_bits(process, CopyVisibleModel(), x0) == pytest.approx(math.log2(K), abs=0.03)
    # an untrained network (zero logits) does not copy the visible pixels either: its bound is larger
    mlp = TimeConditionedModel(MLPBackbone(data_dim=D * process.num_states, cond_dim=16, hidden_dim=16, num_blocks=1), 16, num_time_steps=T)
    assert nll_bound_bits(process, mlp, x0) > math.log2(K) + 0.5
