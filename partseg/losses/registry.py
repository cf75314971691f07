"""Loss registry: the loss names, :func:`build_loss` and the :class:`LossConfig` section.

:data:`LOSSES` is the one list of loss names: ``loss.name`` in a recipe, :func:`build_loss`,
the docs' loss table and its test all read it. Entries are lazy ``"module:Class"`` paths, and a
loss's parameter names are read from the source of its ``__init__`` (:func:`loss_parameters`),
so validating a recipe's ``loss`` section imports neither torch nor the loss modules. A new loss
is one class in ``overlap``/``voxelwise``/``compound`` plus one ``LOSSES.add`` line here.

Unknown loss or parameter names raise :class:`~partseg.errors.ConfigError` naming the nearest
valid one.

Example:
    >>> LossConfig("focal_tversky", {"gamma": 1.5}).name
    'focal_tversky'
    >>> loss_parameters("topk")
    ('k', 'sigmoid')
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import inspect
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from partseg.errors import ConfigError
from partseg.registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LOSSES", "LossConfig", "build_loss", "loss_parameters", "source_parameters"]

#: Loss names accepted by :func:`build_loss` and :class:`LossConfig`.
LOSSES: Registry[type] = Registry("loss")
LOSSES.add("ce", "partseg.losses.voxelwise:CrossEntropyLoss", help="cross-entropy")
LOSSES.add("topk", "partseg.losses.voxelwise:TopKLoss", help="CE of the k% hardest voxels")
LOSSES.add("focal", "partseg.losses.voxelwise:FocalLoss", help="focal loss (Lin et al.)")
LOSSES.add("dice", "partseg.losses.overlap:DiceLoss", help="soft Dice")
LOSSES.add("tversky", "partseg.losses.overlap:TverskyLoss", help="Tversky (alpha FP, beta FN)")
LOSSES.add(
    "focal_tversky", "partseg.losses.overlap:FocalTverskyLoss", help="Tversky ** (1 / gamma)"
)
LOSSES.add(
    "weighted_dice", "partseg.losses.overlap:WeightedDiceLoss", help="(1 - dsc) ** beta weighted"
)
LOSSES.add("dice_ce", "partseg.losses.compound:DiceCELoss", help="Dice + cross-entropy")
LOSSES.add("dice_topk", "partseg.losses.compound:DiceTopKLoss", help="Dice + TopK")
LOSSES.add(
    "adaptive_tversky_ce",
    "partseg.losses.compound:AdaptiveTverskyCELoss",
    help="Tversky + CE, weights from the previous epoch's loss shares",
)


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.0)
    return f"did you mean {close[0]!r}? " if close else ""


@functools.cache
def loss_parameters(name: str) -> tuple[str, ...]:
    """The keyword parameters of loss ``name``'s constructor, without importing it.

    Read by :func:`source_parameters` from the loss module's source; once that module is
    imported anyway, ``inspect`` reads the class itself.

    Raises:
        ConfigError: unknown loss name.
    """
    checked = LOSSES.check(name, key="loss.name")
    target = next(e.target for e in LOSSES.entries() if e.name == checked)
    module, _, attribute = target.partition(":")
    if module in sys.modules:
        cls = getattr(sys.modules[module], attribute)
        return tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")
    return source_parameters(target)


def source_parameters(target: str) -> tuple[str, ...]:
    """Argument names of the ``__init__`` of ``"module:Class"``, read from the module's source.

    The class's own ``__init__``, or that of the first base class defined in the same module
    that has one; the module is parsed, not imported.
    """
    module, _, attribute = target.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ConfigError(f"cannot find the source of {target}")
    with open(spec.origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    return _init_arguments(classes, attribute)


def _init_arguments(classes: Mapping[str, ast.ClassDef], name: str) -> tuple[str, ...]:
    """Argument names of ``classes[name].__init__``, inherited from a same-module base."""
    node = classes[name]
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            args = item.args
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            return tuple(n for n in names if n != "self")
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            return _init_arguments(classes, base.id)
    return ()


def _check_params(name: str, params: Mapping[str, Any]) -> None:
    """ConfigError naming the nearest valid parameter of loss ``name`` for an unknown one."""
    valid = list(loss_parameters(name))
    for key in params:
        if key not in valid:
            raise ConfigError(
                f"loss {name!r} has no parameter {key!r}; {_suggest(str(key), valid)}"
                f"valid parameters: {', '.join(valid)}"
            )


def build_loss(name: str, **params: Any) -> nn.Module:
    """Build a loss by name with keyword parameters.

    Args:
        name: one of :data:`LOSSES` (``"ce"``, ``"topk"``, ``"focal"``, ``"dice"``,
            ``"tversky"``, ``"focal_tversky"``, ``"weighted_dice"``, ``"dice_ce"``,
            ``"dice_topk"``, ``"adaptive_tversky_ce"``).
        **params: constructor arguments of that loss.

    Raises:
        ConfigError: unknown name or parameter (the message names the nearest valid one).

    Example:
        >>> build_loss("tversky", alpha=0.7, beta=0.3).beta
        0.3
    """
    _check_params(name, params)
    cls = LOSSES.get(name, key="loss.name")
    try:
        return cls(**params)
    except TypeError as err:  # e.g. a list where a number is expected
        raise ConfigError(f"loss {name!r}: bad parameters {dict(params)}: {err}") from err


@dataclass(frozen=True)
class LossConfig:
    """The ``loss`` section of a training config: a loss name and its parameters.

    The name and parameter names are checked on construction (without importing torch).
    ``params`` is copied into a plain dict so the config stays YAML/``dataclasses.asdict``
    friendly.

    Example:
        >>> LossConfig("focal_tversky", {"gamma": 1.5}).params
        {'gamma': 1.5}
    """

    name: str = "dice_ce"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))
        _check_params(self.name, self.params)

    def build(self, regions: Sequence[Sequence[int]] | None = None) -> nn.Module:
        """Instantiate the loss; with ``regions`` (class ids per output channel) one sigmoid
        per region (:class:`~partseg.losses.regions.RegionLoss`)."""
        loss = build_loss(self.name, **self.params)
        if not regions:
            return loss
        from partseg.losses.regions import RegionLoss

        return RegionLoss(loss, regions)
