"""Typed, frozen experiment configuration loaded from ``configs/*.yaml``.

An :class:`ExperimentConfig` is composed of one frozen dataclass per YAML section:

========== =============================================================================
section    dataclass
========== =============================================================================
data       :class:`DataConfig` (store URL, validation cases or fraction, cross-validation)
model      :class:`partseg.models.ModelConfig`
partition  :class:`PartitionConfig` (2D/3D, slice axis, core, margin, 2.5D context slices)
sampler    :class:`partseg.sampling.SamplerConfig`
augment    :class:`partseg.augment.AugmentConfig`
loss       :class:`partseg.losses.LossConfig`
optim      :class:`OptimConfig` (adamw | sgd)
schedule   :class:`ScheduleConfig` (poly | cosine | plateau | constant, warm-up)
train      :class:`TrainConfig` (epochs, batch, accumulation, AMP, checkpointing, ...)
========== =============================================================================

:func:`load_config` reads YAML with ``yaml.safe_load`` (no code runs), applies dotted
``key=value`` overrides (each value parsed by ``yaml.safe_load``, so ``train.amp=off`` is the
string ``"off"`` and ``partition.core=[64,64,64]`` a list) and validates everything before a run
starts: an unknown key names the nearest valid one, a bad value or a broken rule between
sections raises :class:`~partseg.errors.ConfigError` naming the key. Reading and validating a
recipe imports no torch.

Modules: :mod:`~partseg.config.schema` (the generic typed validator),
:mod:`~partseg.config.overrides` (YAML reading, dotted overrides),
:mod:`~partseg.config.sections` (the section dataclasses), :mod:`~partseg.config.rules` (rules
between sections), :mod:`~partseg.config.experiment` (:class:`ExperimentConfig`, loading and
saving) and :mod:`~partseg.config.storefit` (in/out channels from the training store, the
rules between a config and its data). Every public name is re-exported here.

Example:
    >>> cfg = config_from_dict({"train": {"epochs": 3}, "optim": {"lr": 0.01}})
    >>> cfg.train.epochs, cfg.optim.lr
    (3, 0.01)
    >>> cfg = apply_overrides(cfg, ["train.batch_size=4"])
    >>> cfg.train.batch_size
    4
"""

from partseg.config.experiment import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
)
from partseg.config.overrides import (
    dotted_items,
    parse_override,
    read_yaml_mapping,
    set_dotted,
    set_path,
)
from partseg.config.rules import RULES, check_rules
from partseg.config.schema import build_section
from partseg.config.sections import (
    OPTIMIZERS,
    SCHEDULES,
    SECTIONS,
    DataConfig,
    OptimConfig,
    PartitionConfig,
    ScheduleConfig,
    TrainConfig,
)
from partseg.config.storefit import fit_to_store
from partseg.precision_modes import PRECISION_MODES

#: The ``train.amp`` modes (the one list, :data:`partseg.precision_modes.PRECISION_MODES`).
AMP_MODES = PRECISION_MODES

__all__ = [
    "AMP_MODES",
    "OPTIMIZERS",
    "RULES",
    "SCHEDULES",
    "SECTIONS",
    "DataConfig",
    "ExperimentConfig",
    "OptimConfig",
    "PartitionConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "build_section",
    "check_rules",
    "config_from_dict",
    "dotted_items",
    "fit_to_store",
    "load_config",
    "parse_override",
    "read_yaml_mapping",
    "save_config",
    "set_dotted",
    "set_path",
]
