"""Typed, frozen experiment configuration loaded from ``configs/*.yaml``.

An :class:`ExperimentConfig` is composed of one frozen dataclass per YAML section:

========== =============================================================================
section    dataclass
========== =============================================================================
data       :class:`DataConfig` (store URL, validation cases or fraction, cross-validation)
model      :class:`partseg.models.ModelConfig`
partition  :class:`PartitionConfig` (2D/3D, slice axis, core, margin, 2.5D context slices)
sampler    :class:`partseg.sampling.SamplerConfig`
augment    :class:`partseg.dataset.AugmentConfig`
loss       :class:`partseg.losses.LossConfig`
optim      :class:`OptimConfig` (adamw | sgd)
schedule   :class:`ScheduleConfig` (poly | cosine | plateau | constant, warm-up)
train      :class:`TrainConfig` (epochs, batch, accumulation, AMP, checkpointing, ...)
========== =============================================================================

:func:`load_config` reads YAML with ``yaml.safe_load`` (no code runs), applies dotted
``key=value`` overrides (each value parsed by ``yaml.safe_load``, so ``train.amp=off`` is the
string ``"off"`` and ``partition.core=[64,64,64]`` a list) and validates everything before a run
starts: an unknown key names the nearest valid one, a bad value raises
:class:`~partseg.errors.ConfigError` naming the key.

Example:
    >>> cfg = config_from_dict({"train": {"epochs": 3}, "optim": {"lr": 0.01}})
    >>> cfg.train.epochs, cfg.optim.lr
    (3, 0.01)
    >>> cfg = apply_overrides(cfg, ["train.batch_size=4"])
    >>> cfg.train.batch_size
    4
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from partseg.atomic import write_text
from partseg.errors import ConfigError, PartsegError

if TYPE_CHECKING:
    from partseg.dataset import AugmentConfig, InputLayout
    from partseg.geometry import Partition
    from partseg.losses import LossConfig
    from partseg.models import ModelConfig
    from partseg.sampling import SamplerConfig

AMP_MODES = ("auto", "bf16", "fp16", "off")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("poly", "cosine", "plateau", "constant")


def _fail(key: str, value: object, problem: str) -> ConfigError:
    return ConfigError(f"config key {key}={value!r}: {problem}")


def _positive(key: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise _fail(key, value, "must be >= 0" if zero_ok else "must be > 0")


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives and how cases split into training and validation.

    Attributes:
        store: URL or path of the ingested zarr store (``partseg ingest`` output).
        train_cases: training case ids; empty means every case not used for validation.
        val_cases: validation case ids; empty means ``val_fraction`` of the cases (or the fold).
        val_fraction: share of cases held out for validation when ``val_cases`` is empty and
            ``folds`` is 0 (0 disables validation).
        folds: k of k-fold cross-validation (0: no cross-validation).
        fold: which fold (0..folds-1) this run trains; required when ``folds`` > 0.
        split_seed: seed of the case shuffle behind the validation split / folds.
        max_val_cases: validate on at most this many cases (0: all), to keep epochs short.
        derived_channels: input channels computed from each box read, appended after the
            store's channels, as ``"name:source_channel"`` (``["sobel:0"]``: the Sobel contour
            of channel 0, the aneurysm paper's dual-channel input); count them in
            ``model.in_channels``. See :mod:`partseg.channels`.
    """

    store: str = ""
    train_cases: tuple[str, ...] = ()
    val_cases: tuple[str, ...] = ()
    val_fraction: float = 0.2
    folds: int = 0
    fold: int | None = None
    split_seed: int = 0
    max_val_cases: int = 0
    derived_channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from partseg.channels import parse_derived

        parse_derived(self.derived_channels)  # ConfigError naming the valid names
        if not 0.0 <= self.val_fraction < 1.0:
            raise _fail("data.val_fraction", self.val_fraction, "must lie in [0, 1)")
        if self.folds == 1 or self.folds < 0:
            raise _fail("data.folds", self.folds, "use 0 (no cross-validation) or k >= 2")
        if self.fold is not None and not 0 <= self.fold < max(self.folds, 1):
            raise _fail(
                "data.fold", self.fold, f"must lie in 0..{self.folds - 1} (data.folds={self.folds})"
            )
        if self.folds and self.val_cases:
            raise _fail("data.val_cases", list(self.val_cases), "cannot be combined with folds")
        _positive("data.max_val_cases", self.max_val_cases, zero_ok=True)


@dataclass(frozen=True)
class PartitionConfig:
    """Minicube partition: core size and context margin, 3D or 2D (2.5D context).

    Sizes are given in (Z, Y, X). A 2D model cuts slices along ``slice_axis``: its core is 1
    voxel thick there (give 2 in-plane values or 3 values with 1 on the slice axis) and
    ``context_slices`` neighbouring slices on each side become extra input channels.

    Attributes:
        spatial_dims: 3 (volumes) or 2 (slices); must match ``model.spatial_dims``.
        slice_axis: the axis (0=Z, 1=Y, 2=X) 2D slices are cut along.
        core: core size per axis; rounded nowhere, must be multiples of the network stride.
        margin: context voxels per side and axis (grown to align with the stride).
        context_slices: 2D only: neighbouring slices on each side fed as channels.
    """

    spatial_dims: int = 3
    slice_axis: int = 0
    core: tuple[int, ...] = (80, 96, 96)
    margin: tuple[int, ...] = (10, 10, 10)
    context_slices: int = 0

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise _fail("partition.spatial_dims", self.spatial_dims, "use 2 or 3")
        if self.slice_axis not in (0, 1, 2):
            raise _fail("partition.slice_axis", self.slice_axis, "use 0 (Z), 1 (Y) or 2 (X)")
        _positive("partition.context_slices", self.context_slices, zero_ok=True)
        if self.spatial_dims == 3 and self.context_slices:
            raise _fail("partition.context_slices", self.context_slices, "is for 2D models only")
        core = self._as_3d("core", self.core, thickness=1)
        margin = self._as_3d("margin", self.margin, thickness=self.context_slices)
        if any(c < 1 for c in core):
            raise _fail("partition.core", list(self.core), "sizes must be positive")
        if any(m < 0 for m in margin):
            raise _fail("partition.margin", list(self.margin), "must not be negative")
        if self.spatial_dims == 2 and core[self.slice_axis] != 1:
            raise _fail("partition.core", list(self.core), "a 2D core is 1 voxel on the slice axis")
        object.__setattr__(self, "core", core)
        object.__setattr__(self, "margin", margin)

    def _as_3d(self, name: str, values: Sequence[int] | int, thickness: int) -> tuple[int, ...]:
        if isinstance(values, int):
            values = (values,) * (3 if self.spatial_dims == 3 else 2)
        values = tuple(int(v) for v in values)
        if len(values) == 1:
            values = values * (3 if self.spatial_dims == 3 else 2)
        if self.spatial_dims == 2 and len(values) == 2:
            values = (*values[: self.slice_axis], thickness, *values[self.slice_axis :])
        elif self.spatial_dims == 2 and len(values) == 3 and name == "margin":
            values = tuple(thickness if a == self.slice_axis else v for a, v in enumerate(values))
        if len(values) != 3:
            raise _fail(f"partition.{name}", list(values), "give 3 values (Z, Y, X)")
        return values

    def in_plane(self, values: Sequence[int]) -> tuple[int, ...]:
        """The network's spatial axes of a 3D size: all of them in 3D, the slice plane in 2D."""
        if self.spatial_dims == 3:
            return tuple(values)
        return tuple(v for a, v in enumerate(values) if a != self.slice_axis)

    def strides(self, total_stride: int) -> tuple[int, ...]:
        """Per-axis stride of a network of ``total_stride`` (1 along the slice axis in 2D)."""
        if self.spatial_dims == 3:
            return (total_stride,) * 3
        return tuple(1 if a == self.slice_axis else total_stride for a in range(3))

    def build(self, total_stride: int, core: Sequence[int] | None = None) -> Partition:
        """The aligned :class:`~partseg.geometry.Partition` for a network of that stride."""
        from partseg.geometry import make_partition

        return make_partition(tuple(core or self.core), self.margin, self.strides(total_stride))

    def layout(self) -> InputLayout:
        """The dataset's :class:`~partseg.dataset.InputLayout` for this partition."""
        from partseg.dataset import InputLayout

        return InputLayout(spatial_dims=self.spatial_dims, slice_axis=self.slice_axis)


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer: AdamW or SGD (nnU-Net: SGD, lr 0.01, momentum 0.99, Nesterov)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    momentum: float = 0.99
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise _fail("optim.name", self.name, f"use one of {list(OPTIMIZERS)}")
        _positive("optim.lr", self.lr)
        _positive("optim.weight_decay", self.weight_decay, zero_ok=True)
        if not 0.0 <= self.momentum < 1.0:
            raise _fail("optim.momentum", self.momentum, "must lie in [0, 1)")
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise _fail("optim.nesterov", True, "Nesterov needs optim.momentum > 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise _fail("optim.betas", list(self.betas), "give two values in [0, 1)")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule, stepped once per epoch.

    Attributes:
        name: ``poly`` (lr * (1 - e/E) ** power, nnU-Net), ``cosine`` (to ``min_lr``),
            ``plateau`` (multiply by ``factor`` after ``patience`` validations without
            improvement) or ``constant``.
        warmup_epochs: linear warm-up from lr / (warmup + 1) before the schedule starts.
        power: exponent of ``poly``.
        min_lr: floor of ``cosine`` and ``plateau``.
        factor: ``plateau`` decay factor.
        patience: ``plateau`` validations without improvement before decaying.
    """

    name: str = "poly"
    warmup_epochs: int = 0
    power: float = 0.9
    min_lr: float = 0.0
    factor: float = 0.5
    patience: int = 10

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise _fail("schedule.name", self.name, f"use one of {list(SCHEDULES)}")
        _positive("schedule.warmup_epochs", self.warmup_epochs, zero_ok=True)
        _positive("schedule.power", self.power)
        _positive("schedule.min_lr", self.min_lr, zero_ok=True)
        if not 0.0 < self.factor < 1.0:
            raise _fail("schedule.factor", self.factor, "must lie in (0, 1)")
        _positive("schedule.patience", self.patience, zero_ok=True)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop's knobs.

    Attributes:
        epochs: epochs to train.
        steps_per_epoch: optimizer steps per epoch (0: one pass over the sampler's epoch).
        batch_size: minicubes per forward pass (per DDP rank).
        accumulate: forward/backward passes per optimizer step (gradient accumulation).
        amp: ``auto`` (bf16 on CPUs and GPUs with native bf16, fp16 + GradScaler on older
            GPUs, fp32 on other CPUs; see :mod:`partseg.precision`), ``bf16``, ``fp16`` or
            ``off``.
        checkpointing: recompute each network stage in backward (less memory, ~25% slower).
        clip_grad: maximum gradient norm (0: no clipping).
        early_stop_patience: stop after this many validations without improvement (0: never).
        val_every: validate every this many epochs (0: never).
        val_batch_size: minicubes per forward pass during stitched validation.
        seed: seed of torch, numpy and python RNGs, of sampling and of augmentation.
        device: ``auto`` (cuda if available), ``cpu``, ``cuda`` or ``cuda:N``.
        workers: DataLoader worker processes (0: load in the main process).
        reuse: augmented samples drawn from each minicube read (see MinicubeDataset).
        deterministic: ask torch for deterministic algorithms (slower on GPU).
        progress: show a tqdm progress bar.
        memory_safety: share of a ``--gpu-mem`` budget the memory planner keeps free.
    """

    epochs: int = 100
    steps_per_epoch: int = 250
    batch_size: int = 2
    accumulate: int = 1
    amp: str = "auto"
    checkpointing: bool = False
    clip_grad: float = 12.0
    early_stop_patience: int = 0
    val_every: int = 1
    val_batch_size: int = 2
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    reuse: int = 1
    deterministic: bool = False
    progress: bool = True
    memory_safety: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.memory_safety < 1:
            raise _fail("train.memory_safety", self.memory_safety, "use a share in [0, 1)")
        for key in ("epochs", "batch_size", "accumulate", "val_batch_size", "reuse"):
            _positive(f"train.{key}", getattr(self, key))
        for key in ("steps_per_epoch", "early_stop_patience", "val_every", "workers"):
            _positive(f"train.{key}", getattr(self, key), zero_ok=True)
        _positive("train.clip_grad", self.clip_grad, zero_ok=True)
        if self.amp not in AMP_MODES:
            raise _fail("train.amp", self.amp, f"use one of {list(AMP_MODES)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise _fail("train.device", self.device, "use auto, cpu, cuda or cuda:N")


def _section_types() -> dict[str, type]:
    """Section name -> dataclass (imported lazily: the foreign sections pull in torch)."""
    from partseg.dataset import AugmentConfig
    from partseg.losses import LossConfig
    from partseg.models import ModelConfig
    from partseg.sampling import SamplerConfig

    return {
        "data": DataConfig,
        "model": ModelConfig,
        "partition": PartitionConfig,
        "sampler": SamplerConfig,
        "augment": AugmentConfig,
        "loss": LossConfig,
        "optim": OptimConfig,
        "schedule": ScheduleConfig,
        "train": TrainConfig,
    }


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: every section of a recipe, validated and frozen.

    Example:
        >>> cfg = config_from_dict({"model": {"spatial_dims": 3, "depth": 3}})
        >>> cfg.model.depth, cfg.partition.spatial_dims
        (3, 3)
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = None  # type: ignore[assignment]  # filled by config_from_dict
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    sampler: SamplerConfig = None  # type: ignore[assignment]
    augment: AugmentConfig = None  # type: ignore[assignment]
    loss: LossConfig = None  # type: ignore[assignment]
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, cls in _section_types().items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, cls())
        if self.model.spatial_dims != self.partition.spatial_dims:
            raise _fail(
                "partition.spatial_dims",
                self.partition.spatial_dims,
                f"differs from model.spatial_dims={self.model.spatial_dims}; set both alike",
            )
        if self.schedule.name == "plateau" and self.train.val_every == 0:
            raise _fail("schedule.name", "plateau", "needs validation (train.val_every > 0)")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists and scalars (YAML, JSON and checkpoint friendly)."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **sections: Any) -> ExperimentConfig:
        """A copy with whole sections replaced, re-validated."""
        return dataclasses.replace(self, **sections)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _nearest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid keys: {', '.join(options)}"


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a (simple) type hint; lists become tuples where tuples are typed.

    Handles bool/int/float/str, ``X | None``, ``tuple[T, ...]``, ``tuple[A, B]``, Mapping and
    Any; other hints pass through unchecked (the section's own ``__post_init__`` validates).
    """
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _check_type(key, value, option)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is tuple:
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise _fail(key, value, "expected a list")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(key, v, args[0]) for v in value)
        if args and len(args) != len(value):
            raise _fail(key, list(value), f"expected {len(args)} values")
        return tuple(_check_type(key, v, a) for v, a in zip(value, args or value, strict=False))
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise _fail(key, value, "expected a mapping of key: value")
        return dict(value)
    return _check_scalar(key, value, hint)


def _check_scalar(key: str, value: Any, hint: Any) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(key, value, "expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, value, "expected an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise _fail(key, value, "expected a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, value, "expected a number")
        return float(value)
    if hint is str:
        if key == "train.amp" and isinstance(value, bool):  # YAML 1.1 reads off/on as booleans
            return "auto" if value else "off"
        if not isinstance(value, str):
            raise _fail(key, value, "expected a string")
        return value
    return value


def build_section(name: str, cls: type, values: Mapping[str, Any] | None) -> Any:
    """Build one section dataclass from a mapping, checking keys and value types.

    Raises:
        ConfigError: unknown key (naming the nearest valid one), wrong type or bad value.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise _fail(name, values, "a section must be a mapping of key: value")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(f"unknown config key {name}.{key}; {_nearest(str(key), valid)}")
        kwargs[key] = _check_type(f"{name}.{key}", value, hints.get(key, Any))
    try:
        return cls(**kwargs)
    except PartsegError as err:
        if name in str(err):
            raise
        raise ConfigError(f"section {name!r}: {err}") from err
    except (TypeError, ValueError) as err:
        raise ConfigError(f"section {name!r}: {err}") from err


def config_from_dict(raw: Mapping[str, Any] | None) -> ExperimentConfig:
    """Validate a nested mapping (a parsed YAML recipe) into an :class:`ExperimentConfig`.

    Raises:
        ConfigError: unknown section or key, or a bad value; the message names the key.
    """
    raw = dict(raw or {})
    sections = _section_types()
    for name in raw:
        if name not in sections:
            raise ConfigError(f"unknown config section {name!r}; {_nearest(str(name), sections)}")
    built = {name: build_section(name, cls, raw.get(name)) for name, cls in sections.items()}
    return ExperimentConfig(**built)


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """Read a YAML file (``yaml.safe_load``) that must hold a mapping; ConfigError otherwise."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must be a mapping of sections, got {type(raw).__name__}")
    return raw


def set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` in a nested dict, creating sections on the way.

    A part made of digits indexes a list (``cascades.0.voi``).

    Example:
        >>> raw = {"a": {"b": 1}, "l": [{"x": 1}]}
        >>> set_path(raw, "a.c.d", 2)
        >>> set_path(raw, "l.0.x", 3)
        >>> raw
        {'a': {'b': 1, 'c': {'d': 2}}, 'l': [{'x': 3}]}
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override key {key!r} has an empty part; write e.g. train.epochs")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key}: {part} is not an index of a {len(node)}-list")
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
            if not last and node.get(part) is None:
                node[part] = {}
        else:
            raise ConfigError(f"override {key}: {parts[i - 1]} is a value, not a section")
        if last:
            node[index] = copy.deepcopy(value)
        else:
            node = node[index]


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` with the value parsed as YAML (``1`` int, ``[1, 2]`` list, ``off`` str)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({err})") from err


def set_dotted(raw: dict[str, Any], override: str) -> None:
    """Apply one ``section.key=value`` override to a nested dict (value parsed as YAML).

    Example:
        >>> raw = {}
        >>> set_dotted(raw, "partition.core=[32, 32, 32]")
        >>> raw
        {'partition': {'core': [32, 32, 32]}}
    """
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    key, value = parse_override(override)
    if len(key.split(".")) < 2:
        raise ConfigError(f"override {override!r}: the key must be section.key, e.g. train.epochs")
    set_path(raw, key, value)


def apply_overrides(config: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """A new config with dotted ``key=value`` overrides applied and re-validated."""
    raw = config.to_dict()
    for override in overrides:
        set_dotted(raw, override)
    return config_from_dict(raw)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML recipe, apply ``key=value`` overrides and validate.

    Raises:
        ConfigError: missing or unparsable file, unknown key, bad value.

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
