"""Fit a config to its training store: in/out channels from the store, every mismatch at once.

The store is known only when training (or ``partseg plan``) opens it, so the rules between a
config and its data live here rather than in :mod:`partseg.config.rules`.
:func:`fit_to_store` returns the config with ``model.in_channels`` and ``model.out_channels``
taken from the store where they are unset (None, the default):

* ``in_channels`` = the store's channels + the derived channels (``data.derived_channels``),
  times the slices a 2D model reads (``2 * partition.context_slices + 1``);
* ``out_channels`` = one per region of a region-based store (:mod:`partseg.store.regions`),
  else the classes (background included), or 1 for a 2-class store trained with
  ``loss.params.sigmoid: true``.

A value that is set and disagrees is an error naming both; every problem of the run (inputs,
outputs, loss weights, a margin wider than every volume) is reported in one
:class:`~partseg.errors.ConfigError`.

Example:
    >>> from types import SimpleNamespace
    >>> from partseg.config import config_from_dict
    >>> store = SimpleNamespace(url="s.zarr", channels=("t1", "t2"), classes=("bg", "a", "b"),
    ...                         regions=None, case_ids=())
    >>> fitted = fit_to_store(config_from_dict({}), store)
    >>> fitted.model.in_channels, fitted.model.out_channels
    (2, 3)
    >>> fit_to_store(config_from_dict({"model": {"in_channels": 4}}), store)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    partseg.errors.ConfigError: the config does not fit store s.zarr: model.in_channels=4 but ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from partseg.config.rules import CLASS_WEIGHT_PARAMS
from partseg.errors import ConfigError

if TYPE_CHECKING:
    from partseg.config.experiment import ExperimentConfig

__all__ = ["fit_to_store", "store_in_channels", "store_out_channels"]


def fit_to_store(config: ExperimentConfig, store: Any) -> ExperimentConfig:
    """``config`` with in/out channels from ``store`` where unset; see the module docstring.

    Raises:
        ConfigError: every way the config does not fit the store, in one message.
    """
    problems: list[str] = []
    n_in = _fit(config.model.in_channels, store_in_channels(config, store, problems),
                "model.in_channels", problems)  # fmt: skip
    n_out = _fit(config.model.out_channels, store_out_channels(config, store, problems),
                 "model.out_channels", problems)  # fmt: skip
    problems += _weight_problems(config, store)
    problems += _margin_problems(config.partition.margin, store)
    if problems:
        raise ConfigError(f"the config does not fit store {store.url}: " + "; ".join(problems))
    return config.replace(model=replace(config.model, in_channels=n_in, out_channels=n_out))


def store_in_channels(
    config: ExperimentConfig, store: Any, problems: list[str]
) -> tuple[int, str] | None:
    """The network input channels the store gives, and what they are; None (and a problem)
    when a derived channel reads a channel the store lacks."""
    from partseg.channels import derived_channel_names

    try:
        derived = derived_channel_names(config.data.derived_channels, store.channels)
    except ConfigError as err:
        problems.append(str(err))
        return None
    partition = config.partition.build(config.model.total_stride)
    n_in = config.partition.layout().in_channels(len(store.channels) + len(derived), partition)
    what = f"{len(store.channels)} channels {list(store.channels)}"
    if derived:
        what += f" + {len(derived)} derived {list(derived)} (data.derived_channels)"
    if config.partition.spatial_dims == 2:
        what += f" x {partition.input_size[config.partition.slice_axis]} slices"
    return n_in, what


def store_out_channels(
    config: ExperimentConfig, store: Any, problems: list[str]
) -> tuple[Sequence[int], str]:
    """The output channel counts that fit the store (the first is the default), and what
    they are."""
    regions = getattr(store, "regions", None)
    if regions is not None:
        return (len(regions),), f"{len(regions)} regions {list(regions.names)}"
    n = len(store.classes)
    what = f"{n} classes {list(store.classes)}"
    if n == 2:
        sigmoid = bool(config.loss.params.get("sigmoid"))
        return ((1, 2) if sigmoid else (2, 1)), what + " (1 output: a sigmoid foreground)"
    if config.loss.params.get("sigmoid"):
        problems.append(
            f"loss.params.sigmoid needs a 2-class store (one foreground logit); store has {what}"
        )
    return (n,), what


def _fit(
    value: int | None,
    found: tuple[int, str] | tuple[Sequence[int], str] | None,
    key: str,
    problems: list[str],
) -> int | None:
    """The value to use: the store's where ``value`` is unset; a problem where they differ."""
    if found is None:
        return value
    counts, what = found
    allowed = (counts,) if isinstance(counts, int) else tuple(counts)
    if value is None:
        return allowed[0]
    if value not in allowed:
        problems.append(
            f"{key}={value} but the store gives {what}: set {key}={allowed[0]} or leave it unset"
        )
    return value


def _weight_problems(config: ExperimentConfig, store: Any) -> list[str]:
    """Per-class loss weights do not apply to regions (each region is a sigmoid of its own)."""
    if getattr(store, "regions", None) is None:
        return []
    params = config.loss.params
    return [
        f"loss.params.{key}={list(params[key])} gives per-class weights, but the store holds "
        "regions (one sigmoid each): drop it or give a single number"
        for key in CLASS_WEIGHT_PARAMS
        if isinstance(params.get(key), Sequence) and not isinstance(params.get(key), str)
    ]


def _margin_problems(margin: Sequence[int], store: Any) -> list[str]:
    """A margin wider than every volume: past the volume it only reads zeros, and the
    oversized boxes would make each step slow for nothing."""
    shapes = [store[case_id].shape for case_id in store.case_ids]
    largest = [max((s[a] for s in shapes), default=0) for a in range(3)]
    if shapes and any(m > n for m, n in zip(margin, largest, strict=True)):
        return [
            f"partition.margin={list(margin)} is larger than the largest volume ({largest}, Z Y "
            f"X); the margin is context read around each core, so use at most "
            f"{[min(m, n) for m, n in zip(margin, largest, strict=True)]}"
        ]
    return []
