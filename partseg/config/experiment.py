"""The whole experiment config: its sections, validation, YAML loading and saving.

:func:`load_config` reads a YAML recipe, applies ``key=value`` overrides, builds every section
(:mod:`partseg.config.schema` checks keys and types) and checks the rules between sections
(:mod:`partseg.config.rules`): everything a run needs to know is validated before it starts,
and without importing torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from partseg.atomic import write_text
from partseg.augment import AugmentConfig
from partseg.config.overrides import read_yaml_mapping, set_dotted
from partseg.config.rules import check_rules
from partseg.config.schema import build_section, nearest, plain
from partseg.config.sections import (
    SECTIONS,
    DataConfig,
    OptimConfig,
    PartitionConfig,
    ScheduleConfig,
    TrainConfig,
)
from partseg.errors import ConfigError
from partseg.losses.registry import LossConfig
from partseg.models.config import ModelConfig
from partseg.sampling import SamplerConfig

__all__ = [
    "ExperimentConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "save_config",
]


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: every section of a recipe, validated and frozen.

    Example:
        >>> cfg = config_from_dict({"model": {"spatial_dims": 3, "depth": 3}})
        >>> cfg.model.depth, cfg.partition.spatial_dims
        (3, 3)
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_rules(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists and scalars (YAML, JSON and checkpoint friendly)."""
        return plain(dataclasses.asdict(self))

    def replace(self, **sections: Any) -> ExperimentConfig:
        """A copy with whole sections replaced, re-validated."""
        return dataclasses.replace(self, **sections)


def config_from_dict(raw: Mapping[str, Any] | None) -> ExperimentConfig:
    """Validate a nested mapping (a parsed YAML recipe) into an :class:`ExperimentConfig`.

    Raises:
        ConfigError: unknown section or key, a bad value, or a broken rule between sections;
            the message names the key.
    """
    raw = dict(raw or {})
    for name in raw:
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section {name!r}; {nearest(str(name), SECTIONS)}")
    built = {name: build_section(name, cls, raw.get(name)) for name, cls in SECTIONS.items()}
    return ExperimentConfig(**built)


def apply_overrides(config: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """A new config with dotted ``key=value`` overrides applied and re-validated.

    Example:
        >>> apply_overrides(ExperimentConfig(), ["train.batch_size=4"]).train.batch_size
        4
    """
    raw = config.to_dict()
    for override in overrides:
        set_dotted(raw, override)
    return config_from_dict(raw)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML recipe, apply ``key=value`` overrides and validate.

    Raises:
        ConfigError: missing or unparsable file, unknown key, bad value, broken rule.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.yaml"
        >>> _ = path.write_text("train:\\n  epochs: 5\\n")
        >>> load_config(path, ["train.epochs=7"]).train.epochs
        7
    """
    path = Path(path)
    raw = read_yaml_mapping(path)
    for override in overrides:
        set_dotted(raw, override)
    try:
        return config_from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def save_config(config: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
