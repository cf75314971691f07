"""Model registry: the network names ``model.name`` accepts and what each family needs.

:data:`MODELS` is the one list of model names: :class:`~partseg.models.ModelConfig` validates
``model.name`` against it, :func:`~partseg.models.build_model` looks the class up in it, and the
docs' model table and its test read it. Each entry is a :class:`ModelFamily`, a torch-free record
of the lazily imported class (``"module:Class"``) and of the facts a config needs before any
network exists (its total stride and default downsampling), so reading a recipe imports no
torch. A new family is one module with a :class:`~partseg.models.SegmentationModel` subclass
plus one ``MODELS.add`` line.

Example:
    >>> MODELS.names()
    ('unet', 'dilated_unet', 'residual_se_unet', 'deepmedic')
    >>> MODELS.get("deepmedic").stride_key
    'deepmedic_factor'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from partseg.registry import Registry

__all__ = ["MODELS", "ModelFamily"]


@dataclass(frozen=True)
class ModelFamily:
    """What the registry knows about one network family, without importing it.

    Attributes:
        target: ``"module:Class"`` of the :class:`~partseg.models.SegmentationModel` subclass,
            built as ``Class(config)``.
        stride_key: the :class:`~partseg.models.ModelConfig` field holding the total stride;
            ``None`` for a U-Net, whose stride is ``2 ** (depth - 1)``.
        downsample: the downsampling used when ``model.downsample`` is unset.
        deep_supervision: whether the family can return lower-resolution outputs.
    """

    target: str
    stride_key: str | None = None
    downsample: str = "maxpool"
    deep_supervision: bool = True

    def load(self) -> type:
        """The model class (imports its module, and torch)."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


#: Network names accepted by ``model.name``.
MODELS: Registry[ModelFamily] = Registry("model")
MODELS.add(
    "unet",
    ModelFamily("partseg.models.unet:UNet"),
    help="3D U-Net (Cicek et al.) / 2D U-Net (Buda et al.)",
)
MODELS.add(
    "dilated_unet",
    ModelFamily("partseg.models.unet:DilatedUNet"),
    help="U-Net with a cascade of dilated bottleneck convolutions (pancreas paper)",
)
MODELS.add(
    "residual_se_unet",
    ModelFamily("partseg.models.unet:ResidualSEUNet", downsample="strided"),
    help="residual encoder with squeeze-and-excitation (Isensee 2017; aneurysm paper)",
)
MODELS.add(
    "deepmedic",
    ModelFamily(
        "partseg.models.deepmedic:DeepMedic",
        stride_key="deepmedic_factor",
        deep_supervision=False,
    ),
    help="two-pathway 3D CNN (Kamnitsas et al. 2017), same-padded",
)
