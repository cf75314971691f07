"""The interface every partseg network offers (:class:`SegmentationModel`)."""

from __future__ import annotations

import torch
from torch import nn

from partseg.errors import ConfigError, GeometryError
from partseg.models.blocks import channels_last_format
from partseg.models.checkpointing import set_checkpointing, to_autocast_dtype
from partseg.models.config import ModelConfig
from partseg.models.receptive import LayerSpec, receptive_field, receptive_halo


class SegmentationModel(nn.Module):
    """Base class: a fully convolutional network mapping (B, in, *S) to logits (B, out, *S).

    Subclasses build their layers from ``config`` and implement ``_forward`` and
    ``layer_specs`` (the longest chain of layers, from which ``receptive_field`` is computed).

    Attributes:
        config: the :class:`ModelConfig` the model was built from.
        spatial_dims, in_channels, out_channels: copied from ``config``.
        total_stride: input spatial sizes must be multiples of it (2**poolings for U-Nets).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.spatial_dims = config.spatial_dims
        self.in_channels = config.in_channels
        self.out_channels = config.out_channels
        self.total_stride = config.total_stride
        self._checkpointing = False

    @property
    def receptive_field(self) -> int:
        """Theoretical receptive field per axis, in voxels: the width of the centred window
        holding every input any output voxel reads along the longest chain of layers,
        2 * max(receptive_halo) + 1 (see :mod:`partseg.models.receptive`). A partition margin
        of receptive_field // 2 on each side gives every core voxel all its context."""
        return receptive_field(self.layer_specs())

    @property
    def receptive_halo(self) -> tuple[int, int]:
        """Input voxels (before, after) an output voxel may read along each axis; a partition
        margin of max(halo) voxels holds all the context of every core voxel."""
        return receptive_halo(self.layer_specs())

    @property
    def is_local(self) -> bool:
        """True when each output depends only on inputs within ``receptive_field``.

        False with instance/group norm or squeeze-and-excitation, whose statistics span the
        whole input: partitioned inference then differs from whole-volume inference (the
        stitcher must blend). BatchNorm is local in eval mode.
        """
        return self.config.norm in ("batch", "none") and not self._has_global_ops()

    def _has_global_ops(self) -> bool:
        return False

    def layer_specs(self) -> list[LayerSpec]:
        raise NotImplementedError

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of (distinct) parameters, all of them or only those requiring grad."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each stage in backward instead of keeping its activations (see
        :mod:`partseg.models.checkpointing`)."""
        set_checkpointing(self, enabled)
        self._checkpointing = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits (B, out, *S) for input (B, in, *S); in training mode with deep supervision,
        a list [full resolution, 1/2, 1/4, ...] of logits."""
        self.check_input(x)
        if self._checkpointing and self.training and torch.is_grad_enabled():
            x = to_autocast_dtype(x)  # one low-precision copy shared by all first stages
        if self.config.channels_last:
            x = x.contiguous(memory_format=channels_last_format(self.spatial_dims))
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        """Raises when ``x`` does not have (B, in_channels, *S) with S multiples of the stride."""
        name = self.config.name
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            expected = "(B, C, Y, X)" if self.spatial_dims == 2 else "(B, C, Z, Y, X)"
            raise ConfigError(
                f"model {name!r}: input of shape {tuple(x.shape)} does not match {expected} "
                f"with C={self.in_channels}; check spatial_dims and in_channels of the model "
                "config against the data"
            )
        spatial = tuple(x.shape[2:])
        if any(s % self.total_stride for s in spatial):
            fitted = tuple(-(-s // self.total_stride) * self.total_stride for s in spatial)
            raise GeometryError(
                f"model {name!r}: input spatial size {spatial} is not a multiple of the total "
                f"stride {self.total_stride}; pad or crop the partition to e.g. {fitted}"
            )
