"""Segmentation networks: one U-Net for 2D and 3D (plain, dilated, residual-SE) and DeepMedic.

Every network is a :class:`SegmentationModel` built from a frozen :class:`ModelConfig`; it
knows its ``total_stride`` (input sizes must be multiples of it), its theoretical
``receptive_field`` (computed from its layers) and can recompute its stages in backward
(``set_grad_checkpointing``) to trade compute for memory.

Example:
    >>> import torch
    >>> from partseg.models import ModelConfig, build_model
    >>> cfg = ModelConfig(name="unet", spatial_dims=3, in_channels=4, out_channels=4,
    ...                   depth=3, base_width=4)
    >>> model = build_model(cfg)
    >>> model.set_grad_checkpointing(True)
    >>> model(torch.randn(1, 4, 16, 16, 16)).shape
    torch.Size([1, 4, 16, 16, 16])
"""

from __future__ import annotations

from partseg.models.base import SegmentationModel
from partseg.models.config import ModelConfig
from partseg.models.memory import saved_tensor_bytes


def build_model(config: ModelConfig) -> SegmentationModel:
    """Builds the network named by ``config.name`` (weights randomly initialised).

    Example:
        >>> build_model(ModelConfig(name="dilated_unet", spatial_dims=2)).total_stride
        8
    """
    if config.name == "deepmedic":
        from partseg.models.deepmedic import DeepMedic

        return DeepMedic(config)
    from partseg.models.unet import UNet

    return UNet(config)


__all__ = ["ModelConfig", "SegmentationModel", "build_model", "saved_tensor_bytes"]
