"""The section dataclasses of a training config, and the table of every section.

Each section is a frozen dataclass whose ``__post_init__`` checks its own values; the sections
that belong to a subsystem live with it (:class:`~partseg.models.ModelConfig`,
:class:`~partseg.sampling.SamplerConfig`, :class:`~partseg.augment.AugmentConfig`,
:class:`~partseg.losses.LossConfig`) and are listed in :data:`SECTIONS`. None of them imports
torch, so a recipe is read and validated without it. Rules between sections are in
:mod:`partseg.config.rules`.

Example:
    >>> PartitionConfig(spatial_dims=2, core=(64, 64)).core
    (1, 64, 64)
    >>> list(SECTIONS)[:3]
    ['data', 'model', 'partition']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from partseg.augment import AugmentConfig
from partseg.config.schema import fail, positive
from partseg.errors import PartsegError
from partseg.losses.registry import LossConfig
from partseg.models.config import ModelConfig
from partseg.precision_modes import PRECISION_MODES
from partseg.sampling import SamplerConfig

if TYPE_CHECKING:
    from partseg.dataset import InputLayout
    from partseg.geometry import Partition

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SECTIONS",
    "DataConfig",
    "OptimConfig",
    "PartitionConfig",
    "ScheduleConfig",
    "TrainConfig",
]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("poly", "cosine", "plateau", "constant")


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
        max_val_cases: validate on at most this many cases (0: all), to keep epochs short; a
            drawn split (``val_fraction``) then draws at most this many and the rest train.
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
            raise fail("data.val_fraction", self.val_fraction, "must lie in [0, 1)")
        if self.folds == 1 or self.folds < 0:
            raise fail("data.folds", self.folds, "use 0 (no cross-validation) or k >= 2")
        if self.fold is not None and not 0 <= self.fold < max(self.folds, 1):
            raise fail(
                "data.fold", self.fold, f"must lie in 0..{self.folds - 1} (data.folds={self.folds})"
            )
        if self.folds and self.val_cases:
            raise fail("data.val_cases", list(self.val_cases), "cannot be combined with folds")
        positive("data.max_val_cases", self.max_val_cases, zero_ok=True)


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
            raise fail("partition.spatial_dims", self.spatial_dims, "use 2 or 3")
        if self.slice_axis not in (0, 1, 2):
            raise fail("partition.slice_axis", self.slice_axis, "use 0 (Z), 1 (Y) or 2 (X)")
        positive("partition.context_slices", self.context_slices, zero_ok=True)
        if self.spatial_dims == 3 and self.context_slices:
            raise fail("partition.context_slices", self.context_slices, "is for 2D models only")
        core = self._as_3d("core", self.core, thickness=1)
        margin = self._as_3d("margin", self.margin, thickness=self.context_slices)
        if any(c < 1 for c in core):
            raise fail("partition.core", list(self.core), "sizes must be positive")
        if any(m < 0 for m in margin):
            raise fail("partition.margin", list(self.margin), "must not be negative")
        if self.spatial_dims == 2 and core[self.slice_axis] != 1:
            raise fail("partition.core", list(self.core), "a 2D core is 1 voxel on the slice axis")
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
            raise fail(f"partition.{name}", list(values), "give 3 values (Z, Y, X)")
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
            raise fail("optim.name", self.name, f"use one of {list(OPTIMIZERS)}")
        positive("optim.lr", self.lr)
        positive("optim.weight_decay", self.weight_decay, zero_ok=True)
        if not 0.0 <= self.momentum < 1.0:
            raise fail("optim.momentum", self.momentum, "must lie in [0, 1)")
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise fail("optim.nesterov", True, "Nesterov needs optim.momentum > 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise fail("optim.betas", list(self.betas), "give two values in [0, 1)")


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
            raise fail("schedule.name", self.name, f"use one of {list(SCHEDULES)}")
        positive("schedule.warmup_epochs", self.warmup_epochs, zero_ok=True)
        positive("schedule.power", self.power)
        positive("schedule.min_lr", self.min_lr, zero_ok=True)
        if not 0.0 < self.factor < 1.0:
            raise fail("schedule.factor", self.factor, "must lie in (0, 1)")
        positive("schedule.patience", self.patience, zero_ok=True)


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
        sync_batchnorm: under torchrun / ``--nproc`` with several processes, compute BatchNorm
            statistics over the global batch (``N x batch_size``) instead of per process.
        progress: show progress on stderr (a bar on a terminal, else a line every 30 s).
        memory_safety: share of a ``--gpu-mem`` budget the memory planner keeps free.
        budget: wall time of training steps (``90s``, ``60m``, ``1.5h``; empty: off): the run
            measures its step time and replaces ``epochs``, ``steps_per_epoch`` and
            ``val_every`` by a plan that fills it (see :mod:`partseg.train.budget`).
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
    sync_batchnorm: bool = True
    progress: bool = True
    memory_safety: float = 0.1
    budget: str | float = ""

    def __post_init__(self) -> None:
        if self.budget not in ("", None):
            from partseg.durations import parse_duration

            try:
                parse_duration(self.budget)
            except PartsegError as err:
                raise fail("train.budget", self.budget, str(err)) from None
        if not 0 <= self.memory_safety < 1:
            raise fail("train.memory_safety", self.memory_safety, "use a share in [0, 1)")
        for key in ("epochs", "batch_size", "accumulate", "val_batch_size", "reuse"):
            positive(f"train.{key}", getattr(self, key))
        for key in ("steps_per_epoch", "early_stop_patience", "val_every", "workers"):
            positive(f"train.{key}", getattr(self, key), zero_ok=True)
        positive("train.clip_grad", self.clip_grad, zero_ok=True)
        if self.amp not in PRECISION_MODES:
            raise fail("train.amp", self.amp, f"use one of {list(PRECISION_MODES)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise fail("train.device", self.device, "use auto, cpu, cuda or cuda:N")


#: Section name -> dataclass, in the order of a recipe and of :class:`ExperimentConfig`.
SECTIONS: dict[str, type] = {
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
