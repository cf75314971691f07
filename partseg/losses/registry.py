"""Loss registry: names of the losses, :func:`build_loss` and the :class:`LossConfig` section.

Unknown loss or parameter names raise :class:`~partseg.errors.ConfigError` naming the nearest
valid one.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from partseg.errors import ConfigError
from partseg.losses.compound import AdaptiveTverskyCELoss, DiceCELoss, DiceTopKLoss
from partseg.losses.overlap import DiceLoss, FocalTverskyLoss, TverskyLoss, WeightedDiceLoss
from partseg.losses.voxelwise import CrossEntropyLoss, FocalLoss

__all__ = ["LOSSES", "LossConfig", "build_loss"]

#: Loss names accepted by :func:`build_loss` and :class:`LossConfig`.
LOSSES: Mapping[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "dice": DiceLoss,
    "dice_ce": DiceCELoss,
    "dice_topk": DiceTopKLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
    "focal": FocalLoss,
    "weighted_dice": WeightedDiceLoss,
    "adaptive_tversky_ce": AdaptiveTverskyCELoss,
}


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.0)
    return f"did you mean {close[0]!r}? " if close else ""


def _check_loss(name: str, params: Mapping[str, Any]) -> type[nn.Module]:
    """Return the loss class of ``name`` after checking ``params`` against its signature."""
    if name not in LOSSES:
        raise ConfigError(
            f"unknown loss {name!r}; {_suggest(name, list(LOSSES))}"
            f"valid losses: {', '.join(LOSSES)}"
        )
    cls = LOSSES[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"loss {name!r} has no parameter {key!r}; {_suggest(key, valid)}"
                f"valid parameters: {', '.join(valid)}"
            )
    return cls


def build_loss(name: str, **params: Any) -> nn.Module:
    """Build a loss by name with keyword parameters.

    Args:
        name: one of :data:`LOSSES` (``"ce"``, ``"dice"``, ``"dice_ce"``, ``"dice_topk"``,
            ``"tversky"``, ``"focal_tversky"``, ``"focal"``, ``"weighted_dice"``,
            ``"adaptive_tversky_ce"``).
        **params: constructor arguments of that loss.

    Raises:
        ConfigError: unknown name or parameter (the message names the nearest valid one).

    Example:
        >>> build_loss("tversky", alpha=0.7, beta=0.3).beta
        0.3
    """
    cls = _check_loss(name, params)
    try:
        return cls(**params)
    except TypeError as err:  # e.g. a list where a number is expected
        raise ConfigError(f"loss {name!r}: bad parameters {dict(params)}: {err}") from err


@dataclass(frozen=True)
class LossConfig:
    """The ``loss`` section of a training config: a loss name and its parameters.

    The name and parameter names are checked on construction. ``params`` is copied into a plain
    dict so the config stays YAML/``dataclasses.asdict`` friendly.

    Example:
        >>> LossConfig("focal_tversky", {"gamma": 1.5}).build().gamma
        1.5
    """

    name: str = "dice_ce"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))
        _check_loss(self.name, self.params)

    def build(self) -> nn.Module:
        """Instantiate the loss."""
        return build_loss(self.name, **self.params)
