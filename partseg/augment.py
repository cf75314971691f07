"""Augmentation settings: the ``augment`` section of a recipe (torch-free).

:class:`AugmentConfig` says which torchio augmentations run and how often;
:func:`partseg.dataset.build_transform` turns it into a torchio transform. It lives apart from
the dataset so that validating a recipe imports neither torch nor torchio.

Example:
    >>> AugmentConfig(enabled=False).enabled
    False
"""

from __future__ import annotations

from dataclasses import dataclass

from partseg.errors import ConfigError

__all__ = ["INTERPOLATIONS", "AugmentConfig"]

INTERPOLATIONS = ("linear", "nearest", "bspline")


@dataclass(frozen=True)
class AugmentConfig:
    """Which torchio augmentations run, with their per-item probabilities.

    Attributes:
        enabled: master switch (False for validation).
        flip: random flip of every in-plane (2D) or spatial (3D) axis, each with probability 0.5.
        affine: probability of a random scaling (+-10 %) and rotation (+-10 degrees).
        elastic: probability of a random elastic deformation.
        gamma: probability of a random gamma (log gamma in +-0.3; sign(I) |I|^gamma).
        noise: probability of Gaussian noise (std up to 0.1 of the z-scored intensity).
        blur: probability of a Gaussian blur (std up to 1 voxel).
        bias_field: probability of a smooth multiplicative bias field.
        interpolation: image interpolation of affine and elastic transforms (``"linear"``,
            ``"nearest"`` or ``"bspline"``); labels and the valid mask always use nearest.

    Example:
        >>> AugmentConfig(enabled=False).enabled
        False
    """

    enabled: bool = True
    flip: bool = True
    affine: float = 0.2
    elastic: float = 0.0
    gamma: float = 0.2
    noise: float = 0.1
    blur: float = 0.1
    bias_field: float = 0.1
    interpolation: str = "linear"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"augment interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        for name in ("affine", "elastic", "gamma", "noise", "blur", "bias_field"):
            value = getattr(self, name)
            if isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"augment {name} is a probability in [0, 1], got {value!r}")
