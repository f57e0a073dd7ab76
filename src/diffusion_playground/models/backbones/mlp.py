"""A residual MLP backbone for vector data (2-D points and the like)."""

from __future__ import annotations

from torch import Tensor, nn

from diffusion_playground.checks import check_integer, check_real
from diffusion_playground.models.backbones.base_backbone import BaseBackbone


class FiLMResidualBlock(nn.Module):
    """h + MLP(LayerNorm(h) * (1 + scale) + shift), with (scale, shift) = Linear(cond).

    The conditioning enters every block by feature-wise affine modulation (FiLM, Perez et al. 2018),
    as the scale-and-shift of ADM's AdaGN (Dhariwal & Nichol 2021) does for images.
    """

    def __init__(self, hidden_dim: int, cond_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim, elementwise_affine=False)
        self.film = nn.Linear(cond_dim, 2 * hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
        )

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.film(cond).chunk(2, dim=1)  # (B, hidden) each
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class MLPBackbone(BaseBackbone):
    """x (B, data_dim) -> Linear -> num_blocks x FiLMResidualBlock -> SiLU -> Linear (zero-initialised) -> (B, data_dim).

    The zero-initialised output layer makes the untrained network predict 0 (for eps-prediction:
    "no noise"), a stable start used by ADM and EDM alike.
    """

    def __init__(
        self,
        data_dim: int = 2,
        cond_dim: int = 128,
        hidden_dim: int = 128,
        num_blocks: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("data_dim", data_dim), ("cond_dim", cond_dim), ("hidden_dim", hidden_dim), ("num_blocks", num_blocks)):
            check_integer(name, value, minimum=1)
        check_real("dropout", dropout, minimum=0.0, maximum=1.0)
        self.cond_dim = cond_dim
        self.input_shape = (data_dim,)
        self.input_proj = nn.Linear(data_dim, hidden_dim)
        self.blocks = nn.ModuleList(FiLMResidualBlock(hidden_dim, cond_dim, dropout) for _ in range(num_blocks))
        self.output = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, data_dim))
        nn.init.zeros_(self.output[1].weight)
        nn.init.zeros_(self.output[1].bias)

    def forward(self, x: Tensor, cond_emb: Tensor) -> Tensor:
        h = self.input_proj(x)  # (B, hidden)
        for block in self.blocks:
            h = block(h, cond_emb)
        return self.output(h)  # (B, data_dim)
