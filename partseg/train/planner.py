"""Memory planner: fit core, batch, mixed precision and checkpointing to a device budget.

For every mode (mixed precision on/off x gradient checkpointing on/off) the planner measures a
memory law once (activations with CPU kernels, :mod:`partseg.train.activations`, or real steps
on a GPU when one is present, :mod:`partseg.train.calibration`), then estimates every candidate:
the configured core and ever smaller ones, batches from ``train.batch_size`` down to 1
(:mod:`partseg.train.estimate` holds the model of what a step holds). It ranks the candidates by
voxels per step, then core size, then speed (no recomputation, mixed precision).

**Safety margin.** The plan prefers configurations whose total leaves ``safety`` (default 10%,
``train.memory_safety``, ``partseg plan --safety``) of the budget free; only when none does, it
takes the best that fits the budget at all, and says so. Every estimate reports its headroom.

Example:
    >>> from partseg.config import config_from_dict
    >>> config = config_from_dict({"model": {"depth": 2, "base_width": 4},
    ...     "partition": {"core": [16, 16, 16], "margin": 0}, "train": {"amp": "off"}})
    >>> plan = plan_memory(config, parse_size("256MiB"), device_type="cpu", probe=None)
    >>> plan.chosen.core, plan.chosen.batch_size, plan.within_margin
    ((16, 16, 16), 2, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
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
from partseg.train.estimate import (
    ALLOCATOR_SHARE,
    CUDA_CONTEXT_BYTES,
    WORKSPACE_SHARE,
    MemoryEstimate,
    ModelSize,
    estimate,
    format_size,
    parse_size,
)

Progress = Callable[[str], None]


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


@dataclass(frozen=True)
class MemoryLaws:
    """What the planner measured once per config: a law per mode, the model's size and the
    device context. Plans for any budget follow from it (:func:`plan_from_laws`)."""

    device_type: str
    laws: tuple[ActivationModel | DeviceLaw, ...]
    size: ModelSize
    context: int
    context_source: str


def measure_laws(
    config: ExperimentConfig,
    *,
    device_type: str = "cuda",
    measure_device: str | torch.device = "cpu",
    modes: Iterable[tuple[str, bool]] | None = None,
    probe: DeviceProbe | str | None = "auto",
    progress: Progress | None = None,
) -> MemoryLaws:
    """Measure the memory law of every mode (see :func:`plan_memory` for the arguments)."""
    from partseg.models import build_model

    if probe == "auto":
        probe = default_probe(device_type)
    assert probe is None or not isinstance(probe, str)
    config = planning_channels(config)
    model = build_model(config.model)
    if probe is not None:
        context, context_source = probe.context_bytes(), f"measured on {probe.name}"
    elif device_type == "cuda":
        context, context_source = CUDA_CONTEXT_BYTES, "default (no GPU to measure)"
    else:
        context, context_source = 0, "cpu"
    if modes is None:
        modes = [(a, c) for a in amp_modes(config, device_type) for c in (False, True)]
    cores = probe_cores(config, candidate_cores(config)) if probe is not None else []
    laws: list[ActivationModel | DeviceLaw] = []
    for amp, checkpointing in modes:
        if probe is not None:
            try:
                law = calibrate_mode(config, amp, checkpointing, probe, cores, progress=progress)
            except torch.OutOfMemoryError:
                # a GPU too small even for the probes: measure this mode on the CPU instead
                if progress is not None:
                    progress(f"{probe.name} ran out of memory calibrating; measuring on the CPU")
                law = _cpu_law(config, amp, checkpointing, device_type, measure_device, model,
                               progress)  # fmt: skip
            laws.append(law)
            continue
        laws.append(
            _cpu_law(config, amp, checkpointing, device_type, measure_device, model, progress)
        )
    return MemoryLaws(device_type, tuple(laws), ModelSize.of(model), context, context_source)


def _cpu_law(
    config: ExperimentConfig,
    amp: str,
    checkpointing: bool,
    device_type: str,
    measure_device: str | torch.device,
    model: torch.nn.Module,
    progress: Progress | None,
) -> ActivationModel:
    """The activation law of one mode measured with CPU kernels, labelled with ``amp``."""
    measured = measured_mode(amp, device_type)
    law = fit_activations(
        config, measured, checkpointing, measure_device, model=model, progress=progress
    )
    return replace(law, amp=amp)


def plan_from_laws(
    config: ExperimentConfig, laws: MemoryLaws, budget: int, *, safety: float | None = None
) -> Plan:
    """Estimate every candidate core / batch in every measured mode and choose for ``budget``."""
    config = planning_channels(config)
    safety = config.train.memory_safety if safety is None else safety
    limit = int(budget * (1 - safety))
    estimates: list[MemoryEstimate] = []
    best_per_mode: list[MemoryEstimate] = []
    for law in laws.laws:
        mode_estimates = [
            estimate(config, law, laws.size, core, batch, laws.context)
            for core in candidate_cores(config)
            for batch in range(config.train.batch_size, 0, -1)
        ]
        estimates.extend(mode_estimates)
        best = _best(mode_estimates, limit) or _best(mode_estimates, budget)
        if best is not None:
            best_per_mode.append(best)
    safe = _best(estimates, limit)
    chosen = safe or _best(estimates, budget)
    smallest = min(estimates, key=lambda e: e.total)
    return Plan(budget, safety, laws.device_type, chosen, safe is not None, tuple(best_per_mode),
                smallest, laws.size.parameters, laws.context, laws.context_source)  # fmt: skip


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
    laws = measure_laws(
        config,
        device_type=device_type,
        measure_device=measure_device,
        modes=modes,
        probe=probe,
        progress=progress,
    )
    return plan_from_laws(config, laws, budget, safety=safety)


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


#: In/out channels the planner assumes when they are unset and no store is named (BraTS: four
#: modalities, four classes); they change only the first and the last layer's memory.
PLANNING_CHANNELS = (4, 4)


def planning_channels(config: ExperimentConfig, log: Progress | None = None) -> ExperimentConfig:
    """``config`` with unset ``model.in_channels`` / ``out_channels`` set to
    :data:`PLANNING_CHANNELS` (training takes them from its store), saying so through ``log``.

    Example:
        >>> from partseg.config import config_from_dict
        >>> planning_channels(config_from_dict({})).model.in_channels
        4
    """
    model = config.model
    if model.in_channels is not None and model.out_channels is not None:
        return config
    n_in = PLANNING_CHANNELS[0] if model.in_channels is None else model.in_channels
    n_out = PLANNING_CHANNELS[1] if model.out_channels is None else model.out_channels
    if log is not None:
        log(
            f"note: model.in_channels / out_channels are taken from the store when training; "
            f"without data.store the plan assumes {n_in} / {n_out} (they change only the first "
            "and last layers; pass data.store=STORE to plan with the store's)"
        )
    return config.replace(model=replace(model, in_channels=n_in, out_channels=n_out))


def fit_to_data(config: ExperimentConfig, log: Progress | None = None) -> ExperimentConfig:
    """The config the planner measures: fitted to ``data.store`` when one is named (in/out
    channels from the store, :func:`~partseg.config.storefit.fit_to_store`; core shrunk to
    its volumes), else with :func:`planning_channels`."""
    if not config.data.store:
        return planning_channels(config, log)
    from partseg.config import fit_to_store
    from partseg.store.zarrstore import open_store

    store = open_store(config.data.store)
    return shrink_core_to_data(fit_to_store(config, store), store, log)


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
    "fit_to_data",
    "format_size",
    "measure_step",
    "parse_size",
    "plan_memory",
    "planning_channels",
    "require_fit",
]
