"""Memory planner: estimate what a training step holds on the device, fit core / batch to it.

Peak device memory of one training step is modelled as::

    allocated = parameters + gradients + optimizer state   4 bytes per parameter each (AdamW
                                                            keeps 2 moments, SGD + momentum 1)
              + activations (peak)                          measured (below) + autocast copies
                                                            of the weights
              + batch tensors (input, target, mask)
              + workspace = 5% of the activations           cuDNN / oneDNN workspaces
    reserved  = allocated x 1.10                            the CUDA caching allocator's block
                                                            rounding and fragmentation
    total     = reserved + device context                   CUDA: 400 MiB for the context and
                                                            the cuDNN / cuBLAS handles; CPU: 0

``total`` is what the device holds (``torch.cuda.mem_get_info``), the figure a budget limits.
Activations are measured on the CPU with the CPU's kernels (:mod:`partseg.train.activations`);
the workspace, allocator and context shares are stated defaults a CPU cannot see. With a GPU
present, the planner measures them instead (:mod:`partseg.train.calibration`): real steps of the
trainer's code at two small cores give ``max_memory_allocated`` and ``max_memory_reserved`` as
lines in the step's voxels, and the context is read from ``mem_get_info``.

**Safety margin.** The plan prefers configurations whose total leaves ``safety`` (default 10%,
``train.memory_safety``, ``partseg plan --safety``) of the budget free; only when none does, it
takes the best that fits the budget at all, and says so. Every estimate reports its headroom.

Example:
    >>> parse_size("4GiB"), parse_size("4GB"), parse_size("4096MiB"), parse_size("6g")
    (4294967296, 4000000000, 4294967296, 6442450944)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from partseg.config import ExperimentConfig
from partseg.errors import ConfigError
from partseg.train.activations import (
    ActivationModel,
    LiveBytes,
    StepMemory,
    fit_activations,
    measure_step,
    measured_mode,
)
from partseg.train.calibration import (
    CudaProbe,
    DeviceLaw,
    DeviceProbe,
    calibrate_mode,
    probe_cores,
)

WORKSPACE_SHARE = 0.05
ALLOCATOR_SHARE = 0.10
CUDA_CONTEXT_BYTES = 400 * 2**20
DEFAULT_SAFETY = 0.10

Progress = Callable[[str], None]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 10**3,
    "kib": 2**10,
    "m": 2**20,
    "mb": 10**6,
    "mib": 2**20,
    "g": 2**30,
    "gb": 10**9,
    "gib": 2**30,
    "t": 2**40,
    "tb": 10**12,
    "tib": 2**40,
}


def parse_size(text: str | int) -> int:
    """Bytes of a size such as ``"4GiB"``, ``"4GB"``, ``"4096MiB"``, ``"6g"`` (g = GiB).

    Raises:
        ConfigError: not a size.
    """
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise ConfigError(
            f"memory size {text!r} is not understood; write e.g. 4GiB, 4GB, 4096MiB or 6g"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: float) -> str:
    """``1536 * 2**20`` -> ``"1.50 GiB"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak device memory of one configuration, by component (bytes).

    ``source`` says where the activations (and overheads) come from: ``"cpu"`` (measured with
    CPU kernels, stated workspace and allocator shares) or ``"calibrated on <GPU>"``.
    """

    core: tuple[int, ...]
    input_size: tuple[int, ...]
    batch_size: int
    amp: str
    checkpointing: bool
    parameters: int
    gradients: int
    optimizer: int
    activations: int
    saved_for_backward: int | None
    batch_tensors: int
    workspace: int
    allocator: int
    context: int
    source: str = "cpu"

    @property
    def allocated(self) -> int:
        """What ``torch.cuda.max_memory_allocated`` should show."""
        return (
            self.parameters
            + self.gradients
            + self.optimizer
            + self.activations
            + self.batch_tensors
            + self.workspace
        )

    @property
    def reserved(self) -> int:
        """What ``torch.cuda.max_memory_reserved`` should show."""
        return self.allocated + self.allocator

    @property
    def total(self) -> int:
        """What the device holds: reserved memory plus the context."""
        return self.reserved + self.context

    @property
    def voxels_per_step(self) -> int:
        return self.batch_size * math.prod(self.core)

    def headroom(self, budget: int) -> int:
        """Bytes of ``budget`` this configuration leaves free (negative: over budget)."""
        return budget - self.total

    def as_dict(self, budget: int | None = None) -> dict[str, Any]:
        data = asdict(self)
        data.update(allocated=self.allocated, reserved=self.reserved, total=self.total)
        data["core"], data["input_size"] = list(self.core), list(self.input_size)
        if budget is not None:
            data["headroom"] = self.headroom(budget)
            data["headroom_share"] = round(self.headroom(budget) / budget, 4)
        return data

    def describe(self, budget: int | None = None) -> str:
        """A multi-line breakdown for the terminal."""
        mode = f"amp={self.amp}, checkpointing={'on' if self.checkpointing else 'off'}"
        rows = [
            f"core {'x'.join(map(str, self.core))} (input "
            f"{'x'.join(map(str, self.input_size))}), batch {self.batch_size}, {mode}",
            f"  parameters         {format_size(self.parameters)}",
            f"  gradients          {format_size(self.gradients)}",
            f"  optimizer state    {format_size(self.optimizer)}",
            f"  activations (peak) {format_size(self.activations)}"
            + (
                f"  (saved for backward {format_size(self.saved_for_backward)})"
                if self.saved_for_backward is not None
                else ""
            ),
            f"  batch tensors      {format_size(self.batch_tensors)}",
            f"  workspace          {format_size(self.workspace)}",
            f"  allocator          {format_size(self.allocator)}  (reserved "
            f"{format_size(self.reserved)}, allocated {format_size(self.allocated)})",
            f"  device context     {format_size(self.context)}",
            f"  total              {format_size(self.total)}  ({self.source})",
        ]
        if budget is not None:
            share = self.headroom(budget) / budget
            rows.append(f"  headroom           {format_size(self.headroom(budget))} ({share:.1%})")
        return "\n".join(rows)


def optimizer_slots(config: ExperimentConfig) -> int:
    """fp32 copies of the parameters the optimizer keeps (AdamW 2, SGD+momentum 1, SGD 0)."""
    if config.optim.name == "adamw":
        return 2
    return 1 if config.optim.momentum > 0 else 0


@dataclass(frozen=True)
class ModelSize:
    """What the estimate needs to know of the network: parameter count, largest tensor."""

    parameters: int
    largest: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelSize:
        counts = [p.numel() for p in model.parameters()]
        return cls(sum(counts), max(counts, default=0))


def estimate(
    config: ExperimentConfig,
    law: ActivationModel | DeviceLaw,
    size: ModelSize,
    core: tuple[int, ...],
    batch_size: int,
    context: int,
) -> MemoryEstimate:
    """The :class:`MemoryEstimate` of ``core`` (3D, Z Y X) and ``batch_size`` in one mode.

    With a CPU-measured ``law`` the activations also include what scales with the parameters:
    the autocast copies of the weights (2 bytes per parameter, cached for the whole forward)
    and two weight-gradient temporaries of the largest parameter tensor, which the measurement
    leaves out; workspace and allocator are the stated shares. A GPU-calibrated ``law`` holds
    them all: the activations are what its allocated line leaves after the known terms.
    """
    partition = config.partition.build(config.model.total_stride, core)
    layout = config.partition.layout()
    voxels = math.prod(layout.spatial_size(partition))
    core_voxels = math.prod(layout.core_size(partition))
    param_bytes = 4 * size.parameters
    fixed = param_bytes * (2 + optimizer_slots(config))
    batch_tensors = batch_size * (4 * config.model.in_channels * voxels + 9 * core_voxels)
    if isinstance(law, DeviceLaw):
        allocated = law.allocated(batch_size * voxels)
        act = max(0, allocated - fixed - batch_tensors)
        saved, workspace, source = None, 0, f"calibrated on {law.device}"
        allocator = law.reserved(batch_size * voxels) - (fixed + act + batch_tensors)
    else:
        weight_copies = 2 * size.parameters if law.amp != "off" else 0
        act = law.peak(voxels, batch_size) + weight_copies + 8 * size.largest
        saved: int | None = law.saved(voxels, batch_size)
        source = "cpu"
        workspace = int(WORKSPACE_SHARE * act)
        allocator = int(ALLOCATOR_SHARE * (fixed + act + batch_tensors + workspace))
    return MemoryEstimate(
        core=tuple(core),
        input_size=tuple(layout.spatial_size(partition)),
        batch_size=batch_size,
        amp=law.amp,
        checkpointing=law.checkpointing,
        parameters=param_bytes,
        gradients=param_bytes,
        optimizer=param_bytes * optimizer_slots(config),
        activations=act,
        saved_for_backward=saved,
        batch_tensors=batch_tensors,
        workspace=workspace,
        allocator=allocator,
        context=context,
        source=source,
    )


def candidate_cores(config: ExperimentConfig) -> list[tuple[int, ...]]:
    """The config's core and ever smaller ones: the largest axis (relative to the config's
    proportions) shrinks by one stride at a time, down to one stride per axis."""
    strides = config.partition.strides(config.model.total_stride)
    core = list(config.partition.core)
    cores = [tuple(core)]
    original = tuple(config.partition.core)
    while True:
        shrinkable = [a for a in range(3) if core[a] - strides[a] >= strides[a] and strides[a] > 1]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: (core[a] / original[a], core[a]))
        core[axis] -= strides[axis]
        cores.append(tuple(core))
    return cores


def amp_modes(config: ExperimentConfig, device_type: str = "cuda") -> list[str]:
    """Mixed-precision modes to consider: the configured one, or ``auto`` and ``off``.

    ``auto`` stays ``auto`` in the plan (bf16 or fp16 is decided by the GPU that trains; both
    take 2 bytes per value, so the estimate is the same). Planning for a CPU without native
    bf16, ``auto`` is fp32 and only ``off`` is considered.
    """
    if config.train.amp != "auto":
        return [config.train.amp]
    if measured_mode("auto", device_type) == "off":
        return ["off"]
    return ["auto", "off"]


@dataclass(frozen=True)
class Plan:
    """The planner's answer: the chosen configuration and the best of every mode.

    ``chosen`` leaves ``safety`` of the budget free when any candidate does
    (``within_margin``); otherwise it is the best that fits the budget, or None.
    """

    budget: int
    safety: float
    device_type: str
    chosen: MemoryEstimate | None
    within_margin: bool
    best_per_mode: tuple[MemoryEstimate, ...]
    smallest: MemoryEstimate
    n_parameters: int
    context: int
    context_source: str

    @property
    def limit(self) -> int:
        """The total a configuration may reach and keep the safety margin."""
        return int(self.budget * (1 - self.safety))

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "safety": self.safety,
            "limit": self.limit,
            "device_type": self.device_type,
            "n_parameters": self.n_parameters,
            "workspace_share": WORKSPACE_SHARE,
            "allocator_share": ALLOCATOR_SHARE,
            "context_bytes": self.context,
            "context_source": self.context_source,
            "within_margin": self.within_margin,
            "chosen": self.chosen.as_dict(self.budget) if self.chosen else None,
            "best_per_mode": [e.as_dict(self.budget) for e in self.best_per_mode],
            "smallest": self.smallest.as_dict(self.budget),
        }


def _rank(e: MemoryEstimate) -> tuple:
    # most voxels per step, then the largest core (fewer seams), then speed: no recomputation,
    # mixed precision on
    return (e.voxels_per_step, math.prod(e.core), not e.checkpointing, e.amp != "off")


def default_probe(device_type: str) -> DeviceProbe | None:
    """A :class:`CudaProbe` when planning for CUDA on a machine with a GPU, else None."""
    if device_type == "cuda" and torch.cuda.is_available():
        return CudaProbe()
    return None


def plan_memory(
    config: ExperimentConfig,
    budget: int,
    *,
    device_type: str = "cuda",
    safety: float | None = None,
    measure_device: str | torch.device = "cpu",
    modes: Iterable[tuple[str, bool]] | None = None,
    probe: DeviceProbe | str | None = "auto",
    progress: Progress | None = None,
) -> Plan:
    """Propose the largest core / batch (and AMP / checkpointing) that fits ``budget``.

    Batches from ``train.batch_size`` down to 1 and cores from ``partition.core`` down to one
    stride per axis are tried in every mode. :func:`require_fit` turns a plan without a choice
    into an error that says what would fit.

    Args:
        safety: share of the budget to keep free (default ``train.memory_safety``).
        measure_device: where CPU-style activation measurements run.
        modes: ``(amp, checkpointing)`` pairs (default: :func:`amp_modes` x on/off).
        probe: a GPU to calibrate on; ``"auto"``: :func:`default_probe`; None: measure
            activations on ``measure_device`` and use the stated shares.
        progress: called with one line per measurement.
    """
    from partseg.models import build_model

    safety = config.train.memory_safety if safety is None else safety
    if probe == "auto":
        probe = default_probe(device_type)
    assert probe is None or not isinstance(probe, str)
    model = build_model(config.model)
    size = ModelSize.of(model)
    if probe is not None:
        context, context_source = probe.context_bytes(), f"measured on {probe.name}"
    elif device_type == "cuda":
        context, context_source = CUDA_CONTEXT_BYTES, "default (no GPU to measure)"
    else:
        context, context_source = 0, "cpu"
    if modes is None:
        modes = [(a, c) for a in amp_modes(config, device_type) for c in (False, True)]
    cores = candidate_cores(config)
    estimates: list[MemoryEstimate] = []
    best_per_mode: list[MemoryEstimate] = []
    limit = int(budget * (1 - safety))
    for amp, checkpointing in modes:
        law: ActivationModel | DeviceLaw
        if probe is not None:
            law = calibrate_mode(
                config, amp, checkpointing, probe, probe_cores(config, cores), progress=progress
            )
        else:
            measured = measured_mode(amp, device_type)
            law = fit_activations(
                config, measured, checkpointing, measure_device, model=model, progress=progress
            )
            law = replace(law, amp=amp)
        mode_estimates = [
            estimate(config, law, size, core, batch, context)
            for core in cores
            for batch in range(config.train.batch_size, 0, -1)
        ]
        estimates.extend(mode_estimates)
        best = _best(mode_estimates, limit) or _best(mode_estimates, budget)
        if best is not None:
            best_per_mode.append(best)
    safe = _best(estimates, limit)
    chosen = safe or _best(estimates, budget)
    smallest = min(estimates, key=lambda e: e.total)
    return Plan(budget, safety, device_type, chosen, safe is not None, tuple(best_per_mode),
                smallest, size.parameters, context, context_source)  # fmt: skip


def _best(estimates: list[MemoryEstimate], limit: int) -> MemoryEstimate | None:
    fitting = [e for e in estimates if e.total <= limit]
    return max(fitting, key=_rank) if fitting else None


def require_fit(plan: Plan) -> MemoryEstimate:
    """The chosen estimate, or a ConfigError that names what would fit."""
    if plan.chosen is not None:
        return plan.chosen
    low = plan.smallest
    fixed = low.parameters + low.gradients + low.optimizer + low.context
    raise ConfigError(
        f"nothing fits a budget of {format_size(plan.budget)}: the smallest configuration "
        f"(core {'x'.join(map(str, low.core))}, batch 1, amp={low.amp}, checkpointing="
        f"{'on' if low.checkpointing else 'off'}) needs {format_size(low.total)}, of which "
        f"{format_size(fixed)} are parameters, gradients, optimizer state and device context. "
        f"Give at least --gpu-mem {math.ceil(low.total / 2**20)}MiB, or shrink the model "
        "(model.base_width, model.depth) or use optim.name=sgd"
    )


def apply_mode(
    config: ExperimentConfig, core: tuple[int, ...], batch: int, amp: str, checkpointing: bool
) -> ExperimentConfig:
    """The config with this core, batch, AMP and checkpointing."""
    return config.replace(
        partition=replace(config.partition, core=tuple(core)),
        train=replace(config.train, batch_size=batch, amp=amp, checkpointing=checkpointing),
    )


def apply_estimate(config: ExperimentConfig, chosen: MemoryEstimate) -> ExperimentConfig:
    """The config with the planner's core, batch, AMP and checkpointing applied."""
    return apply_mode(config, chosen.core, chosen.batch_size, chosen.amp, chosen.checkpointing)


def fit_core_to_extent(
    config: ExperimentConfig, extent: tuple[int, ...], log: Progress | None = None
) -> ExperimentConfig:
    """Shrink ``partition.core`` to the data: per axis, at most ``extent`` (the largest
    training volume) rounded up to the network stride. Warns through ``log`` when it shrinks.

    Example:
        >>> from partseg.config import config_from_dict
        >>> config = config_from_dict({"partition": {"core": [80, 96, 96]}})
        >>> fit_core_to_extent(config, (24, 40, 30)).partition.core
        (24, 40, 32)
    """
    strides = config.partition.strides(config.model.total_stride)
    core = tuple(
        min(c, -(-e // s) * s)
        for c, e, s in zip(config.partition.core, extent, strides, strict=True)
    )
    if core == tuple(config.partition.core):
        return config
    if log is not None:
        log(
            f"warning: partition.core {list(config.partition.core)} is larger than the training "
            f"volumes (largest {list(extent)}); using core {list(core)} (the volumes rounded up "
            f"to the network stride {config.model.total_stride})"
        )
    return config.replace(partition=replace(config.partition, core=core))


def shrink_core_to_data(
    config: ExperimentConfig, store: Any, log: Progress | None = None
) -> ExperimentConfig:
    """:func:`fit_core_to_extent` with the largest extent per axis of the store's cases."""
    shapes = [store[case_id].shape for case_id in store.case_ids]
    if not shapes:
        return config
    extent = tuple(max(shape[a] for shape in shapes) for a in range(3))
    return fit_core_to_extent(config, extent, log)


__all__ = [
    "ActivationModel",
    "LiveBytes",
    "MemoryEstimate",
    "Plan",
    "StepMemory",
    "apply_estimate",
    "candidate_cores",
    "estimate",
    "fit_activations",
    "format_size",
    "measure_step",
    "parse_size",
    "plan_memory",
    "require_fit",
]
