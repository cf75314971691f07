"""The typed, frozen description of a segmentation network.

A :class:`ModelConfig` is all :func:`partseg.models.build_model` needs; it is saved inside every
checkpoint so a model can be rebuilt exactly. Every field is validated in ``__post_init__`` and a
bad value raises :class:`partseg.errors.ConfigError` naming the key, the value and what to use.

Example:
    >>> from partseg.models.config import ModelConfig
    >>> cfg = ModelConfig(name="unet", spatial_dims=2, in_channels=4, out_channels=4)
    >>> cfg.widths
    (32, 64, 128, 256)
    >>> cfg.total_stride
    8
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from partseg.errors import ConfigError
from partseg.models.registry import MODELS

NORMS = ("batch", "instance", "group", "none")
ACTIVATIONS = ("relu", "leaky_relu", "gelu")
UPSAMPLES = ("transpose", "interpolate")
DOWNSAMPLES = ("maxpool", "strided")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one network (the ``model:`` section of a recipe).

    Args:
        name: one of :data:`partseg.models.registry.MODELS`: ``"unet"`` (3D U-Net of Cicek
            et al. / 2D U-Net of Buda et al.), ``"dilated_unet"`` (dilated bottleneck, pancreas
            paper), ``"residual_se_unet"`` (residual encoder, squeeze-and-excitation, after
            Isensee 2017; aneurysm paper) or ``"deepmedic"`` (two-pathway 3D CNN of Kamnitsas
            et al. 2017, "same"-padded).
        spatial_dims: 2 (inputs (B, C, Y, X)) or 3 (inputs (B, C, Z, Y, X)).
        in_channels: network input channels, e.g. 4 for BraTS (t1, t1ce, t2, flair); None
            (default): training takes them from the store (channels + derived channels, times
            the context slices of a 2D model).
        out_channels: logit channels: the classes, background included (1 for a sigmoid
            binary model), or one per region of a region-based store; None (default): from the
            store.
        depth: resolution levels of a U-Net; poolings = depth - 1. Ignored by DeepMedic.
        base_width: feature maps at full resolution; doubled at every level.
        max_width: cap on the feature maps of any level.
        norm: ``"batch"``, ``"instance"``, ``"group"`` (8 groups or fewer) or ``"none"``.
        activation: ``"relu"``, ``"leaky_relu"`` (slope 0.01) or ``"gelu"``.
        dropout: dropout probability inside each block (0 disables it).
        upsample: ``"transpose"`` (2-kernel stride-2 transposed conv) or ``"interpolate"``
            ((bi/tri)linear x2 followed by a 1-kernel conv).
        downsample: ``"maxpool"`` (2-kernel max pooling) or ``"strided"`` (3-kernel stride-2
            conv-norm-act); None picks the family's default (registry): maxpool for ``unet``
            and ``dilated_unet``, strided for ``residual_se_unet`` (as in Isensee 2017).
        deep_supervision: in training mode, also return logits of the lower decoder levels.
        dilations: dilation rates of the cascaded bottleneck convs of ``dilated_unet``.
        se_reduction: channel reduction of the squeeze-and-excitation blocks of
            ``residual_se_unet``; 0 disables SE (keeps the model local, see ``is_local``).
        channels_last: run in channels-last memory format (channels_last_3d for 3D).
        deepmedic_widths: feature maps of the 3-kernel conv layers of each DeepMedic pathway.
        deepmedic_fc_width: feature maps of the two 1-kernel "fully connected" layers.
        deepmedic_factor: subsampling factor of the context pathway (3 in the paper); it is
            also DeepMedic's total stride (input sizes must be multiples of it).
    """

    name: str = "unet"
    spatial_dims: int = 3
    in_channels: int | None = None
    out_channels: int | None = None
    depth: int = 4
    base_width: int = 32
    max_width: int = 320
    norm: str = "batch"
    activation: str = "relu"
    dropout: float = 0.0
    upsample: str = "transpose"
    downsample: str | None = None
    deep_supervision: bool = False
    dilations: tuple[int, ...] = (1, 2, 4)
    se_reduction: int = 8
    channels_last: bool = False
    deepmedic_widths: tuple[int, ...] = (30, 30, 40, 40, 40, 40, 50, 50)
    deepmedic_fc_width: int = 150
    deepmedic_factor: int = 3

    def __post_init__(self) -> None:
        # YAML gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "dilations", tuple(self.dilations))
        object.__setattr__(self, "deepmedic_widths", tuple(self.deepmedic_widths))
        self._check_choices()
        self._check_numbers()
        self._check_variant()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Builds a config from a mapping (e.g. a YAML section), rejecting unknown keys.

        Example:
            >>> ModelConfig.from_dict({"name": "unet", "spatial_dims": 2}).spatial_dims
            2
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"model config: unknown key(s) {unknown}; valid keys are {sorted(known)}"
            )
        return cls(**values)

    @property
    def downsample_mode(self) -> str:
        """The downsampling actually used (resolves ``downsample=None``)."""
        if self.downsample is not None:
            return self.downsample
        return MODELS.get(self.name).downsample

    @property
    def widths(self) -> tuple[int, ...]:
        """Feature maps per U-Net level, full resolution first: min(base * 2**l, max_width)."""
        return tuple(min(self.base_width * 2**level, self.max_width) for level in range(self.depth))

    @property
    def total_stride(self) -> int:
        """Product of all strides: input sizes must be multiples of it (no torch needed)."""
        key = MODELS.get(self.name).stride_key
        return int(getattr(self, key)) if key else 2 ** (self.depth - 1)

    def _check_choices(self) -> None:
        MODELS.check(self.name, key="model.name")
        choices = {
            "norm": NORMS,
            "activation": ACTIVATIONS,
            "upsample": UPSAMPLES,
        }
        for key, allowed in choices.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(
                    f"model config: {key}={value!r} is not supported; use one of {list(allowed)}"
                )
        if self.downsample is not None and self.downsample not in DOWNSAMPLES:
            raise ConfigError(
                f"model config: downsample={self.downsample!r} is not supported; use one of "
                f"{list(DOWNSAMPLES)} or leave it unset for the variant's default"
            )
        if self.spatial_dims not in (2, 3):
            raise ConfigError(
                f"model config: spatial_dims={self.spatial_dims!r}; use 2 for slices (C, Y, X) "
                "or 3 for volumes (C, Z, Y, X)"
            )

    def _check_numbers(self) -> None:
        positive = {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "base_width": self.base_width,
            "max_width": self.max_width,
            "deepmedic_fc_width": self.deepmedic_fc_width,
        }
        for key, value in positive.items():
            if value is None and key.endswith("_channels"):
                continue  # taken from the store at training setup
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model config: {key}={value!r} must be a positive integer")
        if self.max_width < self.base_width:
            raise ConfigError(
                f"model config: max_width={self.max_width} is below base_width="
                f"{self.base_width}; raise max_width or lower base_width"
            )
        if not isinstance(self.depth, int) or not 2 <= self.depth <= 8:
            raise ConfigError(
                f"model config: depth={self.depth!r} must be an integer in 2..8 "
                "(resolution levels; poolings = depth - 1)"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"model config: dropout={self.dropout!r} must be in [0, 1)")
        if not isinstance(self.se_reduction, int) or self.se_reduction < 0:
            raise ConfigError(
                f"model config: se_reduction={self.se_reduction!r} must be an integer >= 0 "
                "(0 disables squeeze-and-excitation)"
            )

    def _check_variant(self) -> None:
        if self.name == "dilated_unet" and (
            not self.dilations or any(not isinstance(d, int) or d < 1 for d in self.dilations)
        ):
            raise ConfigError(
                f"model config: dilations={self.dilations!r} must be a non-empty list of "
                "integers >= 1, e.g. [1, 2, 4]"
            )
        if self.deep_supervision and not MODELS.get(self.name).deep_supervision:
            raise ConfigError(
                f"model config: deep_supervision is not available for name={self.name!r} (it "
                "has a single output resolution); set deep_supervision: false"
            )
        if self.name != "deepmedic":
            return
        if not self.deepmedic_widths or any(
            not isinstance(w, int) or w < 1 for w in self.deepmedic_widths
        ):
            raise ConfigError(
                f"model config: deepmedic_widths={self.deepmedic_widths!r} must be a non-empty "
                "list of positive integers, e.g. [30, 30, 40, 40, 40, 40, 50, 50]"
            )
        if not isinstance(self.deepmedic_factor, int) or self.deepmedic_factor < 2:
            raise ConfigError(
                f"model config: deepmedic_factor={self.deepmedic_factor!r} must be an integer "
                ">= 2 (3 in Kamnitsas et al. 2017)"
            )
