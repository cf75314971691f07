"""One U-Net for 2D and 3D, in three variants: ``UNet``, ``DilatedUNet``, ``ResidualSEUNet``.

Layout for ``depth`` = L levels (widths w_l = min(base * 2**l, max_width)); every box is one
checkpointable :class:`~partseg.models.checkpointing.Stage`::

    x (B, in, S) -> enc_0 -------------------------------- skip_0 --> dec_0 -> head -> logits
                     `-> down, enc_1 ------------- skip_1 --> dec_1 --^   `-> aux head (1/2)
                                 `-> ... down, bottleneck (S / 2**(L-1)) --^

Each variant is a subclass registered under its ``model.name`` in
:data:`partseg.models.registry.MODELS`; a subclass replaces the level blocks, nothing else.

* ``unet`` (3D U-Net of Cicek et al. 2016; the 2D baseline of Buda et al. with depth 4 and
  base 32): two 3-kernel conv-norm-act per level, 2-max-pool down, 2-transposed conv up, skip
  concatenation, 1-kernel head.
* ``dilated_unet`` (pancreas paper, after Giddwani et al. 2020): the same U-Net whose bottleneck
  is a cascade of dilated conv-norm-act (rates ``dilations``) with summed outputs, which widens
  the context at the coarsest level at no cost in resolution.
* ``residual_se_unet`` (SE 3D U-Net of the aneurysm paper, after Isensee et al. 2017): the
  encoder levels are a 3-kernel stride-2 conv followed by a residual context module (two
  conv-norm-act with dropout, squeezed-and-excited, added to its input); the decoder levels are
  up-sampling, concatenation and a localisation module (3-kernel then 1-kernel conv-norm-act,
  SE). Isensee sums the upsampled segmentation layers into the final output; here the aux heads
  are returned separately for deep supervision (the loss weights them).

Deep supervision adds 1-kernel heads on decoder levels 1..L-2; in training mode the forward pass
returns ``[full, 1/2, 1/4, ...]`` logits, in eval mode only the full-resolution logits.

Example:
    >>> import torch
    >>> from partseg.models import ModelConfig, build_model
    >>> model = build_model(ModelConfig(spatial_dims=2, in_channels=4, out_channels=4,
    ...                                 depth=3, base_width=4))
    >>> model(torch.zeros(1, 4, 32, 32)).shape
    torch.Size([1, 4, 32, 32])
    >>> model.total_stride, model.receptive_field
    (4, 47)
"""

from __future__ import annotations

import torch
from torch import nn

from partseg.models.base import SegmentationModel
from partseg.models.blocks import (
    Chain,
    ConvNormAct,
    DilatedCascade,
    DoubleConv,
    Downsample,
    ResidualContext,
    SqueezeExcitation,
    Upsample,
    channels_last_format,
    conv,
)
from partseg.models.checkpointing import Stage, Unit, chain_units
from partseg.models.config import ModelConfig
from partseg.models.receptive import LayerSpec


def chain_specs(modules: nn.Module) -> list[LayerSpec]:
    """Layer specs of the children of a sequential container, in order (pointwise or global
    children without ``layer_specs`` add nothing)."""
    return [
        spec
        for child in modules.children()
        if hasattr(child, "layer_specs")
        for spec in child.layer_specs()
    ]


class EncoderBody(Chain):
    """[downsample] -> level block: (B, C_prev, S) -> (B, w_l, S / 2)."""


class DecoderBody(nn.Module):
    """up(x) ++ skip -> block: (B, w_{l+1}, S / 2), (B, w_l, S) -> (B, w_l, S)."""

    def __init__(self, up: nn.Module, block: Chain) -> None:
        super().__init__()
        self.up = up
        self.block = block

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))

    def checkpoint_units(self) -> list[Unit]:
        """up + the block's first conv-norm-act (without the concatenation, see
        :meth:`~partseg.models.blocks.ConvNormAct.forward_concat`), then one unit per block."""
        first, *rest = self.block.blocks()
        assert isinstance(first, ConvNormAct)

        def up_and_first(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
            return first.forward_concat(self.up(x), skip)

        return [Unit(up_and_first, (self.up, first)), *chain_units(rest)]

    def layer_specs(self) -> list[LayerSpec]:
        return self.up.layer_specs() + chain_specs(self.block)


class Localization(Chain):
    """Isensee's localisation module (+ SE): 3-kernel CNA (2C -> C), 1-kernel CNA, SE."""

    def __init__(self, dims: int, c_in: int, c_out: int, cfg: ModelConfig) -> None:
        se = SqueezeExcitation(c_out, cfg.se_reduction) if cfg.se_reduction else nn.Identity()
        super().__init__(
            ConvNormAct(dims, c_in, c_out, norm=cfg.norm, activation=cfg.activation),
            ConvNormAct(dims, c_out, c_out, kernel=1, norm=cfg.norm, activation=cfg.activation),
            se,
        )


class UNet(SegmentationModel):
    """The plain U-Net (``unet``) for 2D and 3D; the variants below replace its level blocks."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        widths = config.widths
        depth = config.depth
        # the full-resolution decoder level is checkpointed block by block (its skip
        # concatenation and three full-width maps make it the peak of a whole-stage
        # recomputation), and so is the first encoder level of the residual-SE variant (a conv
        # and a residual context module: peak -10%); other stages are one unit each: finer
        # units at lower resolutions, or in a plain double-conv first level, keep more
        # boundaries than they save (+13% peak; tools/bench_memory.py, docs/memory.md)
        split_first = config.name == "residual_se_unet"
        self.encoder = nn.ModuleList(
            Stage(self._encoder_body(level), split=split_first and level == 0)
            for level in range(depth)
        )
        self.decoder = nn.ModuleList(
            Stage(DecoderBody(self._up(level), self._decoder_block(level)), split=level == 0)
            for level in reversed(range(depth - 1))
        )
        dims = config.spatial_dims
        self.head = conv(dims, widths[0], config.out_channels, 1)
        aux_levels = range(1, depth - 1) if config.deep_supervision else range(0)
        self.aux_heads = nn.ModuleList(
            conv(dims, widths[level], config.out_channels, 1) for level in aux_levels
        )
        if config.channels_last:
            self.to(memory_format=channels_last_format(dims))

    # -- construction -------------------------------------------------------------------------
    def _encoder_body(self, level: int) -> nn.Module:
        """Level 0 sees the image; level > 0 starts with a downsampling of level - 1."""
        cfg = self.config
        dims, widths = cfg.spatial_dims, cfg.widths
        act = {"norm": cfg.norm, "activation": cfg.activation}
        c_in = cfg.in_channels if level == 0 else widths[level - 1]
        layers: list[nn.Module] = []
        if level > 0:
            down = Downsample(dims, c_in, widths[level], cfg.downsample_mode, **act)
            layers.append(down)
            c_in = down.out_channels
        layers.extend(self._level_block(level, c_in))
        return EncoderBody(*layers)

    def _level_block(self, level: int, c_in: int) -> list[nn.Module]:
        """The layers of encoder level ``level`` after its downsampling: (c_in) -> (w_l)."""
        cfg = self.config
        act = {"norm": cfg.norm, "activation": cfg.activation}
        width = cfg.widths[level]
        return [DoubleConv(cfg.spatial_dims, c_in, width, dropout=cfg.dropout, **act)]

    def _up(self, level: int) -> Upsample:
        widths = self.config.widths
        return Upsample(self.config.spatial_dims, widths[level + 1], widths[level],
                        self.config.upsample)  # fmt: skip

    def _decoder_block(self, level: int) -> Chain:
        cfg = self.config
        dims, width = cfg.spatial_dims, cfg.widths[level]
        return DoubleConv(
            dims, 2 * width, width, norm=cfg.norm, activation=cfg.activation, dropout=cfg.dropout
        )

    # -- interface ----------------------------------------------------------------------------
    def layer_specs(self) -> list[LayerSpec]:
        specs = [spec for stage in self.encoder for spec in stage.layer_specs()]
        specs += [spec for stage in self.decoder for spec in stage.layer_specs()]
        return [*specs, LayerSpec(1)]  # + 1-kernel head

    def _forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        h = x  # (B, in, *S)
        for stage in self.encoder:
            h = stage(h)  # level l: (B, w_l, *S / 2**l)
            skips.append(h)
        skips.pop()  # the bottleneck output is not a skip
        decoded = []
        for stage in self.decoder:
            h = stage(h, skips.pop())  # (B, w_l, *S / 2**l), l = L-2 .. 0
            decoded.append(h)
        logits = self.head(h)  # (B, out, *S)
        if not (self.training and self.aux_heads):
            return logits
        # decoded[-1 - l] is level l; aux head i serves level i + 1
        aux = [head(decoded[-2 - i]) for i, head in enumerate(self.aux_heads)]
        return [logits, *aux]


class DilatedUNet(UNet):
    """``dilated_unet``: the U-Net whose bottleneck is a cascade of dilated conv-norm-act."""

    def _level_block(self, level: int, c_in: int) -> list[nn.Module]:
        cfg = self.config
        if level != cfg.depth - 1:
            return super()._level_block(level, c_in)
        act = {"norm": cfg.norm, "activation": cfg.activation}
        width = cfg.widths[level]
        dims = cfg.spatial_dims
        return [DilatedCascade(dims, c_in, width, cfg.dilations, dropout=cfg.dropout, **act)]


class ResidualSEUNet(UNet):
    """``residual_se_unet``: residual context modules down, SE localisation modules up."""

    def _level_block(self, level: int, c_in: int) -> list[nn.Module]:
        cfg = self.config
        dims, width = cfg.spatial_dims, cfg.widths[level]
        act = {"norm": cfg.norm, "activation": cfg.activation}
        layers: list[nn.Module] = []
        if c_in != width:
            layers.append(ConvNormAct(dims, c_in, width, **act))
        layers.append(
            ResidualContext(dims, width, dropout=cfg.dropout, se_reduction=cfg.se_reduction, **act)
        )
        return layers

    def _decoder_block(self, level: int) -> nn.Module:
        width = self.config.widths[level]
        return Localization(self.config.spatial_dims, 2 * width, width, self.config)

    def _has_global_ops(self) -> bool:
        return self.config.se_reduction > 0
