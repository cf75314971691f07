"""Rules between config sections, checked when a config is loaded, before anything trains.

Each rule is a small function of the whole :class:`~partseg.config.ExperimentConfig` that raises
:class:`~partseg.errors.ConfigError` naming the key to change; :func:`check_rules` runs them all.
They need no torch and no store: the network's total stride comes from the model config
(:attr:`~partseg.models.ModelConfig.total_stride`). Rules that need the data (in/out channels
from or against the store, the margin against the volume) are in
:mod:`partseg.config.storefit`, applied where the store is opened. Unset in/out channels
skip the rules about them here.

Rules:

* ``model.spatial_dims`` equals ``partition.spatial_dims``.
* ``partition.core`` is a multiple of the network's total stride on every network axis (the
  partition is built with :func:`partseg.geometry.make_partition`, which names the next fit).
* 2D with ``partition.context_slices`` c: ``model.in_channels`` is a multiple of 2c + 1 (each
  store channel becomes 2c + 1 slice channels).
* ``loss.params.sigmoid: true`` needs ``model.out_channels: 1``; per-class loss weights
  (``weight``, ``class_weight``, a list ``alpha``) give one value per class.
* ``schedule.name: plateau`` and ``train.early_stop_patience`` count validations: they need
  ``train.val_every > 0``.

Example:
    >>> from partseg.config import config_from_dict
    >>> config_from_dict({"partition": {"core": [80, 96, 100]}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    partseg.errors.ConfigError: config key partition.core=[80, 96, 100]: core size ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from partseg.config.schema import fail
from partseg.errors import GeometryError

if TYPE_CHECKING:
    from partseg.config.experiment import ExperimentConfig

__all__ = ["RULES", "check_rules"]

#: Per-class weight parameters of the losses (a list gives one value per class).
CLASS_WEIGHT_PARAMS = ("weight", "class_weight", "alpha")


def spatial_dims_agree(config: ExperimentConfig) -> None:
    """The model and the partition are both 2D or both 3D."""
    if config.model.spatial_dims != config.partition.spatial_dims:
        raise fail(
            "partition.spatial_dims",
            config.partition.spatial_dims,
            f"differs from model.spatial_dims={config.model.spatial_dims}; set both alike",
        )


def core_fits_stride(config: ExperimentConfig) -> None:
    """The core is a multiple of the network's total stride (2D: in the slice plane)."""
    model = config.model
    try:
        config.partition.build(model.total_stride)
    except GeometryError as err:
        raise fail(
            "partition.core",
            list(config.partition.core),
            f"{err} (model {model.name!r}, depth {model.depth}: total stride {model.total_stride})",
        ) from None


def context_fits_channels(config: ExperimentConfig) -> None:
    """2.5D: every store channel becomes 2c + 1 slice channels of the network input."""
    context = config.partition.context_slices
    slices = 2 * context + 1
    in_channels = config.model.in_channels
    if config.partition.spatial_dims == 2 and in_channels is not None and in_channels % slices:
        raise fail(
            "model.in_channels",
            config.model.in_channels,
            f"a 2D model with partition.context_slices={context} reads {slices} slices per "
            f"store channel: use (store channels) x {slices}",
        )


def loss_fits_outputs(config: ExperimentConfig) -> None:
    """Sigmoid losses need one logit channel; class weights one value per class."""
    params, out = config.loss.params, config.model.out_channels
    if out is None:  # taken from the store: checked against it at training setup
        return
    if params.get("sigmoid") and out != 1:
        raise fail(
            "loss.params.sigmoid",
            True,
            f"a sigmoid loss needs model.out_channels=1 (one foreground logit), got {out}; "
            "drop sigmoid to use a softmax over the channels",
        )
    classes = out if out > 1 else 2  # one logit: background and foreground
    for key in CLASS_WEIGHT_PARAMS:
        value = params.get(key)
        if isinstance(value, Sequence) and not isinstance(value, str) and len(value) != classes:
            raise fail(
                f"loss.params.{key}",
                list(value),
                f"give one value per class: {classes} for model.out_channels={out}",
            )


def validation_when_needed(config: ExperimentConfig) -> None:
    """Settings that count validations need validation to run."""
    if config.train.val_every > 0:
        return
    if config.schedule.name == "plateau":
        raise fail("schedule.name", "plateau", "needs validation (train.val_every > 0)")
    if config.train.early_stop_patience > 0:
        raise fail(
            "train.early_stop_patience",
            config.train.early_stop_patience,
            "counts validations: set train.val_every > 0 or early_stop_patience: 0",
        )


#: Every rule, in the order they are checked.
RULES: tuple[Callable[[ExperimentConfig], None], ...] = (
    spatial_dims_agree,
    core_fits_stride,
    context_fits_channels,
    loss_fits_outputs,
    validation_when_needed,
)


def check_rules(config: ExperimentConfig) -> None:
    """Run every rule of :data:`RULES`; the first broken one raises its ConfigError."""
    for rule in RULES:
        rule(config)
