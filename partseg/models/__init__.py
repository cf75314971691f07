"""Segmentation networks: one U-Net for 2D and 3D (plain, dilated, residual-SE) and DeepMedic.

Every network is a :class:`SegmentationModel` built from a frozen :class:`ModelConfig`; it
knows its ``total_stride`` (input sizes must be multiples of it), its theoretical
``receptive_field`` (computed from its layers) and can recompute its stages in backward
(``set_grad_checkpointing``) to trade compute for memory. The names ``model.name`` accepts are
the entries of :data:`MODELS` (:mod:`partseg.models.registry`); :func:`build_model` looks the
class up there. ``ModelConfig`` and ``MODELS`` need no torch (a recipe is validated without it);
the network classes are imported on first use.

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

from typing import TYPE_CHECKING

from partseg.errors import ConfigError
from partseg.lazy import lazy_getattr
from partseg.models.config import ModelConfig
from partseg.models.registry import MODELS, ModelFamily

if TYPE_CHECKING:
    from partseg.models.base import SegmentationModel

# torch-dependent names, imported on first access
_LAZY = {"SegmentationModel": "base", "saved_tensor_bytes": "memory"}


def build_model(config: ModelConfig) -> SegmentationModel:
    """Builds the network named by ``config.name`` (weights randomly initialised).

    Raises:
        ConfigError: ``in_channels`` or ``out_channels`` unset (training takes them from the
            store; give them to build a model without one).

    Example:
        >>> cfg = ModelConfig(name="dilated_unet", spatial_dims=2, in_channels=4, out_channels=4)
        >>> build_model(cfg).total_stride
        8
    """
    unset = [k for k in ("in_channels", "out_channels") if getattr(config, k) is None]
    if unset:
        raise ConfigError(
            f"model.{unset[0]} is not set: training takes it from the store (data.store); set "
            f"{' and '.join(f'model.{k}' for k in unset)} to build a model without a store"
        )
    return MODELS.get(config.name, key="model.name").load()(config)


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "MODELS",
    "ModelConfig",
    "ModelFamily",
    "SegmentationModel",
    "build_model",
    "saved_tensor_bytes",
]
