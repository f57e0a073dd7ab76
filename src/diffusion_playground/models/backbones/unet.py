"""A U-Net backbone for images in the DDPM/ADM family (Ho et al. 2020; Dhariwal & Nichol 2021).

Layout (ADM's ``UNetModel``, Dhariwal & Nichol 2021, section 3 and appendix; after Ronneberger et al. 2015)::

    x (B, C, H, W) -> 3x3 conv -> down path -> middle -> up path -> GroupNorm, SiLU, 3x3 conv (zero) -> (B, C, H, W)

    down path: per level, ``num_res_blocks`` x [ResBlock (+ self-attention)], then a stride-2 conv
               (all but the last level); every output is kept as a skip connection.
    middle:    ResBlock, self-attention, ResBlock.
    up path:   per level (deepest first), ``num_res_blocks + 1`` x [concat skip, ResBlock (+ attention)],
               then nearest up-sampling to the next skip's size and a 3x3 conv.

The conditioning embedding ``cond`` (B, cond_dim) enters every ResBlock as the scale-and-shift of
ADM's adaptive group normalisation (AdaGN): ``GroupNorm(h) * (1 + scale) + shift``.

Sizes need not be powers of two: a stride-2 conv maps a side n to ceil(n / 2) (28 -> 14 -> 7 -> 4),
and up-sampling interpolates to the skip's exact size, so 28x28 MNIST works as well as 32x32 CIFAR-10.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion_playground.models.backbones.base_backbone import BaseBackbone


def _group_norm(channels: int, max_groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest number of groups <= max_groups that divides ``channels`` (Wu & He 2018)."""
    groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's weights and bias, so the branch it ends starts as the identity (ADM's ``zero_module``)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def _side_after_downsampling(n: int, times: int) -> int:
    """Side length after ``times`` stride-2, padding-1, 3x3 convs: each maps n to ceil(n / 2)."""
    for _ in range(times):
        n = (n + 1) // 2
    return n


class AdaGNResBlock(nn.Module):
    """h + conv(dropout(SiLU(AdaGN(conv(SiLU(GN(h))), cond)))) with AdaGN(h, cond) = GN(h) * (1 + scale) + shift.

    (scale, shift) = Linear(SiLU(cond)), as ADM's ResBlock with ``use_scale_shift_norm``
    (Dhariwal & Nichol 2021, section 3). The last conv is zero-initialised, so the block starts as
    the identity (or as the 1x1 skip projection when the channel count changes).
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, dropout: float, norm_groups: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            _group_norm(in_channels, norm_groups), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.cond_proj = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * out_channels))
        self.out_norm = _group_norm(out_channels, norm_groups)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), _zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        residual = self.in_layers(h)  # (B, C_out, H, W)
        scale, shift = self.cond_proj(cond)[:, :, None, None].chunk(2, dim=1)  # (B, C_out, 1, 1) each
        residual = self.out_norm(residual) * (1 + scale) + shift
        return self.skip(h) + self.out_layers(residual)


class SelfAttention2d(nn.Module):
    """h + proj(MultiHeadAttention(GN(h))) over the H*W positions (Vaswani et al. 2017; used at low
    resolutions in DDPM and ADM). The output projection is zero-initialised."""

    def __init__(self, channels: int, head_channels: int, norm_groups: int) -> None:
        super().__init__()
        self.num_heads = max(1, channels // head_channels)
        if channels % self.num_heads:
            raise ValueError(
                f"attention needs the channel count ({channels}) to split evenly into {self.num_heads} heads of "
                f"head_channels={head_channels}; choose head_channels dividing {channels}"
            )
        self.norm = _group_norm(channels, norm_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, h: Tensor) -> Tensor:
        B, C, H, W = h.shape
        qkv = self.qkv(self.norm(h)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W)  # (B, 3, nh, hs, HW)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # (B, nh, HW, hs) each
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, nh, HW, hs)
        attended = attended.transpose(-1, -2).reshape(B, C, H, W)  # (B, C, H, W)
        return h + self.proj(attended)


class UNetBackbone(BaseBackbone):
    """An ADM-style U-Net (Dhariwal & Nichol 2021) mapping (x_t (B, C, H, W), cond (B, cond_dim)) to (B, C, H, W).

    Args:
        in_channels: image channels C (1 for MNIST, 3 for CIFAR-10).
        image_size: side H = W of the images, or a pair (H, W); the network accepts exactly this size.
        cond_dim: size of the conditioning embedding (the wrapper's ``time_emb_dim``).
        base_channels: channels of the first level.
        channel_mult: channels of level i are ``base_channels * channel_mult[i]``; one level per entry,
            and every level but the last halves the resolution.
        num_res_blocks: ResBlocks per level on the way down (the way up has one more, as in ADM).
        attention_resolutions: feature-map sides (the smaller of H and W at that level) where
            self-attention follows each ResBlock, e.g. ``(16,)`` for 32x32 inputs; the middle block
            always has attention.
        dropout: dropout inside every ResBlock (DDPM used 0.1 on CIFAR-10).
        head_channels: channels per attention head (ADM: 64); layers narrower than that use one head.
        norm_groups: at most this many GroupNorm groups (32 as in DDPM/ADM; fewer when they must divide the channels).

    The output conv and the last conv of every residual branch are zero-initialised, so the untrained
    network outputs exactly 0 (for eps-prediction: "no noise"), as in ADM.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int | Sequence[int] = 32,
        cond_dim: int = 128,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        head_channels: int = 64,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if len(image_size) != 2:
            raise ValueError(f"image_size must be an int or a pair (H, W); got {image_size}")
        H, W = image_size
        for name, value in [("in_channels", in_channels), ("cond_dim", cond_dim), ("base_channels", base_channels),
                            ("num_res_blocks", num_res_blocks), ("head_channels", head_channels),
                            ("norm_groups", norm_groups), ("image height", H), ("image width", W)]:  # fmt: skip
            if value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty sequence of positive ints; got {channel_mult}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {dropout}")
        num_levels = len(channel_mult)
        min_side = 2 ** (num_levels - 1)
        if min(H, W) < min_side:
            raise ValueError(
                f"image_size {H}x{W} is too small for {num_levels} levels: each of the {num_levels - 1} down-samplings "
                f"halves the size, so both sides must be >= {min_side}; use fewer channel_mult entries or larger images"
            )
        level_sides = [min(_side_after_downsampling(H, i), _side_after_downsampling(W, i)) for i in range(num_levels)]
        unknown = sorted(set(attention_resolutions) - set(level_sides))
        if unknown:
            raise ValueError(
                f"attention_resolutions {unknown} match no level of this network; for {H}x{W} inputs the levels "
                f"have sides {level_sides}"
            )

        self.cond_dim = cond_dim
        self.input_shape = (in_channels, H, W)
        self.num_levels = num_levels
        self.num_res_blocks = num_res_blocks

        def res_block(c_in: int, c_out: int) -> AdaGNResBlock:
            return AdaGNResBlock(c_in, c_out, cond_dim, dropout, norm_groups)

        def attention(channels: int, side: int) -> nn.Module:
            if side not in attention_resolutions:
                return nn.Identity()
            return SelfAttention2d(channels, head_channels, norm_groups)

        # 1. Down path: remember the channels of every tensor pushed as a skip connection.
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        skip_channels = [base_channels]
        ch = base_channels
        self.down_blocks = nn.ModuleList()
        self.down_attention = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down_blocks.append(res_block(ch, base_channels * mult))
                ch = base_channels * mult
                self.down_attention.append(attention(ch, level_sides[level]))
                skip_channels.append(ch)
            if level < num_levels - 1:
                self.downsamplers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)

        # 2. Middle: ResBlock, attention, ResBlock at the lowest resolution.
        self.middle_block1 = res_block(ch, ch)
        self.middle_attention = SelfAttention2d(ch, head_channels, norm_groups)
        self.middle_block2 = res_block(ch, ch)

        # 3. Up path: each ResBlock takes the concatenation of h and one skip, deepest level first.
        self.up_blocks = nn.ModuleList()
        self.up_attention = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up_blocks.append(res_block(ch + skip_channels.pop(), base_channels * mult))
                ch = base_channels * mult
                self.up_attention.append(attention(ch, level_sides[level]))
            if level > 0:
                self.upsamplers.append(nn.Conv2d(ch, ch, 3, padding=1))

        # 4. Output: GroupNorm, SiLU, zero-initialised 3x3 conv back to the image channels.
        self.output = nn.Sequential(
            _group_norm(ch, norm_groups), nn.SiLU(), _zero_init(nn.Conv2d(ch, in_channels, 3, padding=1))
        )

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x: Tensor, cond_emb: Tensor) -> Tensor:
        self._check_input(x, cond_emb)
        blocks_per_level_down, blocks_per_level_up = self.num_res_blocks, self.num_res_blocks + 1

        h = self.input_conv(x)  # (B, base_channels, H, W)
        skips = [h]
        for level in range(self.num_levels):
            for i in range(level * blocks_per_level_down, (level + 1) * blocks_per_level_down):
                h = self.down_attention[i](self.down_blocks[i](h, cond_emb))
                skips.append(h)
            if level < self.num_levels - 1:
                h = self.downsamplers[level](h)  # (B, ch, ceil(H/2), ceil(W/2))
                skips.append(h)

        h = self.middle_block2(self.middle_attention(self.middle_block1(h, cond_emb)), cond_emb)

        for up_level in range(self.num_levels):  # deepest level first
            for i in range(up_level * blocks_per_level_up, (up_level + 1) * blocks_per_level_up):
                h = torch.cat([h, skips.pop()], dim=1)  # (B, ch + skip_ch, h, w)
                h = self.up_attention[i](self.up_blocks[i](h, cond_emb))
            if up_level < self.num_levels - 1:
                h = F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest")  # (B, ch, next skip's h, w)
                h = self.upsamplers[up_level](h)
        return self.output(h)  # (B, C, H, W)

    def _check_input(self, x: Tensor, cond_emb: Tensor) -> None:
        C, H, W = self.input_shape
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"UNetBackbone expects images of shape (batch, {C}, {H}, {W}); got {tuple(x.shape)}. "
                f"Build it with in_channels and image_size matching the data (in_channels={C}, image_size={H}x{W} now)"
            )
        if cond_emb.shape != (x.shape[0], self.cond_dim):
            raise ValueError(
                f"cond_emb must have shape (batch, cond_dim) = ({x.shape[0]}, {self.cond_dim}); "
                f"got {tuple(cond_emb.shape)}"
            )


def _preset(name: str, **kwargs: object) -> UNetBackbone:
    backbone = UNetBackbone(**kwargs)
    print(f"{name}: {backbone.num_parameters():,} parameters")
    return backbone


def unet_tiny(cond_dim: int = 128, **overrides: object) -> UNetBackbone:
    """About 92k parameters for 8x8 grayscale (scikit-learn digits): trains on a CPU in seconds (tests, quick mode)."""
    config = dict(in_channels=1, image_size=8, base_channels=16, channel_mult=(1, 1), num_res_blocks=1,
                  attention_resolutions=(4,), head_channels=32, norm_groups=8)  # fmt: skip
    return _preset("unet_tiny", cond_dim=cond_dim, **{**config, **overrides})


def unet_mnist(cond_dim: int = 128, **overrides: object) -> UNetBackbone:
    """A U-Net for 28x28 grayscale (MNIST): levels of 28, 14 and 7 pixels, attention at 7."""
    config = dict(in_channels=1, image_size=28, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
                  attention_resolutions=(7,), dropout=0.1)  # fmt: skip
    return _preset("unet_mnist", cond_dim=cond_dim, **{**config, **overrides})


def unet_mnist_cpu(cond_dim: int = 128, **overrides: object) -> UNetBackbone:
    """About 1.1M parameters for 28x28 grayscale: ``unet_mnist`` with one residual block per level, attention only
    in the middle block (at 7x7) and no dropout, so it trains in minutes on a CPU (the MNIST CPU recipe)."""
    config = dict(in_channels=1, image_size=28, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                  attention_resolutions=(), dropout=0.0)  # fmt: skip
    return _preset("unet_mnist_cpu", cond_dim=cond_dim, **{**config, **overrides})


def unet_small(cond_dim: int = 128, **overrides: object) -> UNetBackbone:
    """About 3M parameters for 32x32 RGB (CIFAR-10): levels of 32, 16, 8 and 4 pixels, attention at 16.

    DDPM's CIFAR-10 channel multipliers (1, 2, 2, 2), attention at 16x16 and dropout 0.1 (Ho et al. 2020,
    appendix B) at a quarter of its width (32 base channels instead of 128), with 3 ResBlocks per level
    instead of DDPM's 2."""
    config = dict(in_channels=3, image_size=32, base_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=3,
                  attention_resolutions=(16,), dropout=0.1)  # fmt: skip
    return _preset("unet_small", cond_dim=cond_dim, **{**config, **overrides})


def unet_large(cond_dim: int = 128, **overrides: object) -> UNetBackbone:
    """About 53M parameters for 32x32 RGB (CIFAR-10): DDPM's CIFAR-10 layout (Ho et al. 2020, appendix B, 35.7M)
    widened from 128 to 160 base channels, with ADM's AdaGN conditioning."""
    config = dict(in_channels=3, image_size=32, base_channels=160, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                  attention_resolutions=(16,), dropout=0.1)  # fmt: skip
    return _preset("unet_large", cond_dim=cond_dim, **{**config, **overrides})


__all__ = [
    "AdaGNResBlock",
    "SelfAttention2d",
    "UNetBackbone",
    "unet_large",
    "unet_mnist",
    "unet_mnist_cpu",
    "unet_small",
    "unet_tiny",
]
