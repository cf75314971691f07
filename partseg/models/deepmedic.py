"""DeepMedic-style two-pathway CNN (Kamnitsas et al. 2017), made "same"-padded.

Layout (widths ``deepmedic_widths`` = n conv layers per pathway, factor f)::

    x (B, in, S) ---------------------------------> normal pathway (n x 3-conv) ---+
     `-> avg-pool f -> context pathway (n x 3-conv, on S / f) -> nearest x f ------+-> concat
        -> 2 x 1-conv "FC" (fc_width) -> 1-conv head -> logits (B, out, S)

Residual connections (DeepMedic's) add the input of layer i to the output of layer i + 1 for
i = 2, 4, 6, ... (channel-padded with zeros when the width grows).

Differences from the original, which uses valid (unpadded) convolutions and feeds each pathway
its own, larger input segment (the context pathway reads a 3x-downsampled segment centred on the
same voxels): here both pathways read the same input box with zero "same" padding, so the output
has the input's spatial size like the U-Nets and plugs into the same minicube partitions and
stitcher. The context comes from the receptive field of the subsampled pathway: each output
reads (2 n + 1) f voxels (51 for the default n = 8, f = 3, versus 17 for the normal pathway),
and over the f phases of an output within its pooling cell the offsets span (2 n + 1) f + f - 1
(53, the reported ``receptive_field``); keep partition margins >= max(``receptive_halo``).
Subsampling is an average over f^d voxels (the original takes every f-th voxel); upsampling
repeats voxels as in the original. The original's PReLU and pre-activation order are replaced
by the configured norm/activation in conv-norm-act order.

Example:
    >>> import torch
    >>> from partseg.models import ModelConfig, build_model
    >>> cfg = ModelConfig(name="deepmedic", spatial_dims=3, in_channels=1, out_channels=2,
    ...                   deepmedic_widths=(4, 4, 4, 4), deepmedic_fc_width=8)
    >>> model = build_model(cfg)
    >>> model(torch.zeros(1, 1, 12, 12, 12)).shape
    torch.Size([1, 2, 12, 12, 12])
    >>> model.total_stride, model.receptive_field
    (3, 29)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from partseg.models.base import SegmentationModel
from partseg.models.blocks import ConvNormAct, avg_pool, channels_last_format, conv
from partseg.models.checkpointing import Stage, Unit
from partseg.models.config import ModelConfig
from partseg.models.receptive import LayerSpec


class Pathway(nn.Module):
    """n x 3-kernel conv-norm-act with DeepMedic's residual connections, after an optional
    average-pool subsampling: (B, in, S) -> (B, widths[-1], S / factor)."""

    def __init__(self, cfg: ModelConfig, factor: int) -> None:
        super().__init__()
        dims = cfg.spatial_dims
        self.factor = factor
        self.pool = avg_pool(dims, factor) if factor > 1 else nn.Identity()
        c_ins = (cfg.in_channels, *cfg.deepmedic_widths[:-1])
        self.layers = nn.ModuleList(
            ConvNormAct(dims, c_in, c_out, norm=cfg.norm, activation=cfg.activation,
                        dropout=cfg.dropout)
            for c_in, c_out in zip(c_ins, cfg.deepmedic_widths, strict=True)
        )  # fmt: skip

    def groups(self) -> list[range]:
        """Layer indices run together: the residual of layer i (even, >= 2) spans i and i + 1,
        other layers run alone, e.g. [0], [1], [2, 3], [4, 5], [6, 7] for 8 layers."""
        n, groups, i = len(self.layers), [], 0
        while i < n:
            size = 2 if i >= 2 and i % 2 == 0 and i + 1 < n else 1
            groups.append(range(i, i + size))
            i += size
        return groups

    def run_group(self, group: range, h: torch.Tensor) -> torch.Tensor:
        """Layers ``group`` on ``h``; a pair adds its (channel-padded) input to its output."""
        out = h
        for i in group:
            out = self.layers[i](out)
        if len(group) == 2:
            out = out + _pad_channels(h, out.shape[1])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(x)
        for group in self.groups():
            h = self.run_group(group, h)
        return h

    def checkpoint_units(self) -> list[Unit]:
        """One checkpoint unit per layer group; the subsampling joins the first group."""
        units = []
        for k, group in enumerate(self.groups()):
            layers = tuple(self.layers[i] for i in group)

            def run(h: torch.Tensor, group: range = group, first: bool = k == 0) -> torch.Tensor:
                return self.run_group(group, self.pool(h) if first else h)

            units.append(Unit(run, layers))
        return units

    def layer_specs(self) -> list[LayerSpec]:
        pool = [LayerSpec(self.factor, stride=self.factor, padding=0)] if self.factor > 1 else []
        return pool + [spec for layer in self.layers for spec in layer.layer_specs()]


def _pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pads (B, C, *S) to (B, channels, *S) (channels >= C) or keeps the first channels."""
    if x.shape[1] >= channels:
        return x[:, :channels]
    return F.pad(x, [0, 0] * (x.ndim - 2) + [0, channels - x.shape[1]])


class Fusion(nn.Module):
    """Upsamples the context pathway (nearest, x factor), concatenates, 2 x 1-kernel CNA."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        dims, width = cfg.spatial_dims, cfg.deepmedic_widths[-1]
        self.factor = cfg.deepmedic_factor
        act = {"norm": cfg.norm, "activation": cfg.activation}
        self.fc = nn.Sequential(
            ConvNormAct(dims, 2 * width, cfg.deepmedic_fc_width, kernel=1, **act),
            ConvNormAct(dims, cfg.deepmedic_fc_width, cfg.deepmedic_fc_width, kernel=1, **act),
        )

    def forward(self, normal: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(context, scale_factor=self.factor, mode="nearest")  # (B, w, *S)
        return self.fc(torch.cat([normal, up], dim=1))

    def checkpoint_units(self) -> list[Unit]:
        """Upsampling + the first 1-kernel layer (without the concatenation), then the second."""
        first, second = self.fc

        def fuse(normal: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
            up = F.interpolate(context, scale_factor=self.factor, mode="nearest")
            return first.forward_concat(normal, up)

        return [Unit(fuse, (first,)), Unit(second, (second,))]

    def layer_specs(self) -> list[LayerSpec]:
        return [LayerSpec(1, upsample=self.factor), LayerSpec(1), LayerSpec(1)]


class DeepMedic(SegmentationModel):
    """Two-pathway "same"-padded DeepMedic; see module docstring."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        # the full-resolution stages are checkpointed by layer groups, the subsampled context
        # pathway (1 / factor**dims of the voxels) as one unit
        self.normal = Stage(Pathway(config, 1), split=True)
        self.context = Stage(Pathway(config, config.deepmedic_factor))
        self.fusion = Stage(Fusion(config), split=True)
        self.head = conv(config.spatial_dims, config.deepmedic_fc_width, config.out_channels, 1)
        if config.channels_last:
            self.to(memory_format=channels_last_format(config.spatial_dims))

    def layer_specs(self) -> list[LayerSpec]:
        # the context pathway is the longest chain (the normal one reads a subset of its inputs)
        return [*self.context.layer_specs(), *self.fusion.layer_specs(), LayerSpec(1)]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        normal = self.normal(x)  # (B, w, *S)
        context = self.context(x)  # (B, w, *S / f)
        return self.head(self.fusion(normal, context))  # (B, out, *S)
