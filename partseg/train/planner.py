"""Memory planner: estimate peak training memory and fit core / batch to a budget.

Peak memory of one training step is modelled as::

    total = parameters + gradients + optimizer state          (fixed: 4 bytes per parameter
                                                                each; AdamW keeps 2 moments,
                                                                SGD with momentum 1)
          + batch * (a + b * input voxels)                      (activations: measured)
          + batch tensors (input, target, mask)
          + workspace = 15% of the above                       (allocator rounding and
                                                                fragmentation, cuDNN/oneDNN
                                                                workspaces, not measured)
          + device context (CUDA: 400 MiB for the CUDA context and cuDNN/cuBLAS handles, which
                            ``torch.cuda.max_memory_allocated`` never shows; CPU: 0)

**Activations** are measured, not guessed: a dry forward + loss + backward of the configured
network (with the configured loss, under the candidate's mixed precision and checkpointing) runs
at two small input sizes under a ``TorchDispatchMode`` that follows every tensor storage
allocated in the step until it is freed. Its peak of live bytes covers what autograd saves for
backward, the activation gradients, the loss' intermediates and, with checkpointing, the
recomputed stage; the live bytes when the forward pass ends are the "saved for backward" figure.
Two sizes give the intercept ``a`` (per-step allocations that do not grow with the volume, e.g.
bf16 copies of the weights under autocast) and the slope ``b`` in bytes per voxel; convolutional
networks on inputs divisible by their stride are exactly linear in voxels.

Example:
    >>> parse_size("4GiB"), parse_size("4GB"), parse_size("4096MiB"), parse_size("6g")
    (4294967296, 4000000000, 4294967296, 6442450944)
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from partseg.config import ExperimentConfig
from partseg.errors import ConfigError
from partseg.precision import resolve_precision

WORKSPACE_SHARE = 0.15
CUDA_CONTEXT_BYTES = 400 * 2**20

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


class LiveBytes(TorchDispatchMode):
    """Follows every storage allocated by an op inside the context until it is freed.

    ``live`` is the number of bytes currently held by such storages, ``peak`` its maximum;
    storages that existed before entering (parameters, inputs) are not counted, nor are
    tensors shaped like a parameter (``ignore_shapes``: weight-gradient temporaries and autocast
    weight copies, which the planner accounts for per parameter, not per voxel).
    """

    def __init__(self, ignore_shapes: Iterable[tuple[int, ...]] = ()) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.ignore_shapes = frozenset(tuple(s) for s in ignore_shapes)
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor) and tuple(value.shape) not in self.ignore_shapes:
                self._track(value)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = id(storage), storage.nbytes()
        if key in self._seen or size == 0:
            return
        self._seen.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size


@dataclass(frozen=True)
class StepMemory:
    """Measured bytes of one forward + backward: held after forward, and peak."""

    saved: int
    peak: int


def measure_step(
    config: ExperimentConfig,
    spatial: tuple[int, ...],
    core: tuple[int, ...],
    *,
    batch_size: int = 1,
    amp: str = "off",
    checkpointing: bool = False,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
) -> StepMemory:
    """Run one training forward/backward on random data and measure its tensor memory.

    Args:
        config: the experiment (model, loss).
        spatial: network input spatial size (divisible by the network stride).
        core: target spatial size (the loss covers the centre of the output).
        amp: ``"off"``, ``"bf16"`` or ``"fp16"``.
        model: reuse this model (built from ``config.model`` otherwise).
    """
    from partseg.losses import DeepSupervisionLoss
    from partseg.models import build_model
    from partseg.train.trainer import compute_loss

    device = torch.device(device)
    model = model if model is not None else build_model(config.model)
    model.to(device).train()
    model.set_grad_checkpointing(checkpointing)
    loss_fn = config.loss.build().to(device)
    if config.model.deep_supervision:
        loss_fn = DeepSupervisionLoss(loss_fn)
    x = torch.randn(batch_size, config.model.in_channels, *spatial, device=device)
    target = torch.randint(0, config.model.out_channels, (batch_size, *core), device=device)
    mask = torch.ones(batch_size, *core, dtype=torch.bool, device=device)
    offset = tuple((s - c) // 2 for s, c in zip(spatial, core, strict=True))
    core_slices = tuple(slice(o, o + c) for o, c in zip(offset, core, strict=True))
    # memory, not speed: "auto" is measured in bf16 on a CPU, the 2 bytes a GPU's auto takes
    mode = "bf16" if amp == "auto" and device.type == "cpu" else amp
    precision = resolve_precision(mode, device)
    for p in model.parameters():  # gradients exist before the step, as in training
        p.grad = torch.zeros_like(p)
    tracker = LiveBytes(p.shape for p in model.parameters())
    with tracker:
        with precision.autocast():
            out = model(x)
        loss = compute_loss(loss_fn, out, target, mask, core_slices)
        saved = tracker.live
        loss.backward()
        del out, loss
    model.set_grad_checkpointing(False)
    model.zero_grad(set_to_none=True)
    return StepMemory(saved=saved, peak=tracker.peak)


@dataclass(frozen=True)
class ActivationModel:
    """Per-sample activation bytes ``a + b * voxels`` of one precision/checkpointing mode."""

    amp: str
    checkpointing: bool
    peak_a: float
    peak_b: float
    saved_a: float
    saved_b: float

    def peak(self, voxels: int, batch: int) -> int:
        return int(batch * (self.peak_b * voxels) + self.peak_a)

    def saved(self, voxels: int, batch: int) -> int:
        return int(batch * (self.saved_b * voxels) + self.saved_a)


def fit_activations(
    config: ExperimentConfig, amp: str, checkpointing: bool, device: str | torch.device = "cpu"
) -> ActivationModel:
    """Measure at two probe sizes (2 and 4 strides along the first axis) and fit a line."""
    from partseg.models import build_model

    stride = config.model.total_stride
    ndim = config.model.spatial_dims
    small = (2 * stride,) * ndim
    large = (4 * stride, *small[1:])
    model = build_model(config.model)
    results = []
    for spatial in (small, large):
        core = tuple(max(1, s // 2) for s in spatial)
        results.append(
            measure_step(
                config,
                spatial,
                core,
                amp=amp,
                checkpointing=checkpointing,
                device=device,
                model=model,
            )
        )
    v1, v2 = math.prod(small), math.prod(large)
    peak_b = (results[1].peak - results[0].peak) / (v2 - v1)
    saved_b = (results[1].saved - results[0].saved) / (v2 - v1)
    return ActivationModel(
        amp,
        checkpointing,
        peak_a=max(0.0, results[0].peak - peak_b * v1),
        peak_b=peak_b,
        saved_a=max(0.0, results[0].saved - saved_b * v1),
        saved_b=saved_b,
    )


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak training memory of one configuration, by component (bytes)."""

    core: tuple[int, ...]
    input_size: tuple[int, ...]
    batch_size: int
    amp: str
    checkpointing: bool
    parameters: int
    gradients: int
    optimizer: int
    activations: int
    saved_for_backward: int
    batch_tensors: int
    workspace: int
    context: int

    @property
    def total(self) -> int:
        return (
            self.parameters
            + self.gradients
            + self.optimizer
            + self.activations
            + self.batch_tensors
            + self.workspace
            + self.context
        )

    @property
    def allocated(self) -> int:
        """What ``torch.cuda.max_memory_allocated`` should show (no context, no workspace)."""
        return self.total - self.context - self.workspace

    @property
    def voxels_per_step(self) -> int:
        return self.batch_size * math.prod(self.core)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total"] = self.total
        data["core"], data["input_size"] = list(self.core), list(self.input_size)
        return data

    def describe(self) -> str:
        """A multi-line breakdown for the terminal."""
        mode = f"amp={self.amp}, checkpointing={'on' if self.checkpointing else 'off'}"
        rows = [
            f"core {'x'.join(map(str, self.core))} (input "
            f"{'x'.join(map(str, self.input_size))}), batch {self.batch_size}, {mode}",
            f"  parameters         {format_size(self.parameters)}",
            f"  gradients          {format_size(self.gradients)}",
            f"  optimizer state    {format_size(self.optimizer)}",
            f"  activations (peak) {format_size(self.activations)}"
            f"  (saved for backward {format_size(self.saved_for_backward)})",
            f"  batch tensors      {format_size(self.batch_tensors)}",
            f"  workspace +{WORKSPACE_SHARE:.0%}    {format_size(self.workspace)}",
            f"  device context     {format_size(self.context)}",
            f"  total              {format_size(self.total)}",
        ]
        return "\n".join(rows)


def optimizer_slots(config: ExperimentConfig) -> int:
    """fp32 copies of the parameters the optimizer keeps (AdamW 2, SGD+momentum 1, SGD 0)."""
    if config.optim.name == "adamw":
        return 2
    return 1 if config.optim.momentum > 0 else 0


def estimate(
    config: ExperimentConfig,
    activations: ActivationModel,
    n_parameters: int,
    core: tuple[int, ...],
    batch_size: int,
    device_type: str = "cuda",
    largest_parameter: int = 0,
) -> MemoryEstimate:
    """The :class:`MemoryEstimate` of ``core`` (3D, Z Y X) and ``batch_size`` in one mode.

    Besides the measured per-voxel activations, ``activations`` includes what scales with the
    parameters instead: the autocast copies of the weights (2 bytes per parameter, cached for
    the whole forward pass) and two weight-gradient temporaries of the largest parameter
    tensor (``largest_parameter`` elements), which the measurement leaves out.
    """
    from partseg.geometry import Partition

    partition = config.partition.build(config.model.total_stride, core)
    layout = config.partition.layout()
    spatial = layout.spatial_size(partition)
    voxels = math.prod(spatial)
    core_voxels = math.prod(layout.core_size(partition))
    assert isinstance(partition, Partition)
    param_bytes = 4 * n_parameters
    weight_copies = 2 * n_parameters if activations.amp != "off" else 0
    act = activations.peak(voxels, batch_size) + weight_copies + 8 * largest_parameter
    batch_tensors = batch_size * (4 * config.model.in_channels * voxels + 9 * core_voxels)
    fixed = param_bytes * (2 + optimizer_slots(config))
    workspace = int(WORKSPACE_SHARE * (fixed + act + batch_tensors))
    return MemoryEstimate(
        core=tuple(core),
        input_size=tuple(spatial),
        batch_size=batch_size,
        amp=activations.amp,
        checkpointing=activations.checkpointing,
        parameters=param_bytes,
        gradients=param_bytes,
        optimizer=param_bytes * optimizer_slots(config),
        activations=act,
        saved_for_backward=activations.saved(voxels, batch_size),
        batch_tensors=batch_tensors,
        workspace=workspace,
        context=CUDA_CONTEXT_BYTES if device_type == "cuda" else 0,
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


def amp_modes(config: ExperimentConfig) -> list[str]:
    """Mixed-precision modes to consider: the configured one, or ``auto`` and ``off``.

    ``auto`` stays ``auto`` in the plan (bf16 or fp16 is decided by the GPU that trains; both
    take 2 bytes per value, so the estimate is the same).
    """
    if config.train.amp != "auto":
        return [config.train.amp]
    return ["auto", "off"]


@dataclass(frozen=True)
class Plan:
    """The planner's answer: the chosen configuration and the best of every mode."""

    budget: int
    device_type: str
    chosen: MemoryEstimate | None
    best_per_mode: tuple[MemoryEstimate, ...]
    smallest: MemoryEstimate
    n_parameters: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "device_type": self.device_type,
            "n_parameters": self.n_parameters,
            "workspace_share": WORKSPACE_SHARE,
            "context_bytes": CUDA_CONTEXT_BYTES if self.device_type == "cuda" else 0,
            "chosen": self.chosen.as_dict() if self.chosen else None,
            "best_per_mode": [e.as_dict() for e in self.best_per_mode],
            "smallest": self.smallest.as_dict(),
        }


def _rank(e: MemoryEstimate) -> tuple:
    # most voxels per step, then the largest core (fewer seams), then speed: no recomputation,
    # mixed precision on
    return (e.voxels_per_step, math.prod(e.core), not e.checkpointing, e.amp != "off")


def plan_memory(
    config: ExperimentConfig,
    budget: int,
    *,
    device_type: str = "cuda",
    measure_device: str | torch.device = "cpu",
    modes: Iterable[tuple[str, bool]] | None = None,
) -> Plan:
    """Propose the largest core / batch (and AMP / checkpointing) that fits ``budget``.

    Batches from ``train.batch_size`` down to 1 and cores from ``partition.core`` down to one
    stride per axis are tried in every mode. The plan's ``chosen`` is None when nothing fits;
    :func:`require_fit` turns that into an error that says what would fit.
    """
    from partseg.models import build_model

    model = build_model(config.model)
    n_parameters = model.num_parameters()
    largest = max((p.numel() for p in model.parameters()), default=0)
    if modes is None:
        modes = [(a, c) for a in amp_modes(config) for c in (False, True)]
    estimates: list[MemoryEstimate] = []
    best_per_mode: list[MemoryEstimate] = []
    smallest: MemoryEstimate | None = None
    for amp, checkpointing in modes:
        act = fit_activations(config, amp, checkpointing, measure_device)
        mode_estimates = [
            estimate(config, act, n_parameters, core, batch, device_type, largest)
            for core in candidate_cores(config)
            for batch in range(config.train.batch_size, 0, -1)
        ]
        estimates.extend(mode_estimates)
        fitting = [e for e in mode_estimates if e.total <= budget]
        if fitting:
            best_per_mode.append(max(fitting, key=_rank))
        low = min(mode_estimates, key=lambda e: e.total)
        smallest = low if smallest is None or low.total < smallest.total else smallest
    fitting = [e for e in estimates if e.total <= budget]
    chosen = max(fitting, key=_rank) if fitting else None
    assert smallest is not None
    return Plan(budget, device_type, chosen, tuple(best_per_mode), smallest, n_parameters)


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


def apply_estimate(config: ExperimentConfig, chosen: MemoryEstimate) -> ExperimentConfig:
    """The config with the planner's core, batch, AMP and checkpointing applied."""
    return config.replace(
        partition=replace(config.partition, core=tuple(chosen.core)),
        train=replace(
            config.train,
            batch_size=chosen.batch_size,
            amp=chosen.amp,
            checkpointing=chosen.checkpointing,
        ),
    )


def measure_cuda_peak(config: ExperimentConfig, chosen: MemoryEstimate) -> int:
    """Run one real step of ``chosen`` on the GPU; ``torch.cuda.max_memory_allocated`` bytes.

    Parameters, gradients and AdamW/SGD state are allocated first, as in training.
    """
    from partseg.models import build_model
    from partseg.train.trainer import build_optimizer

    device = torch.device("cuda")
    torch.cuda.empty_cache()
    model = build_model(config.model).to(device)
    optimizer = build_optimizer(model, config.optim)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # allocates the optimizer state
    torch.cuda.reset_peak_memory_stats(device)
    spatial = chosen.input_size
    layout = config.partition.layout()
    partition = config.partition.build(config.model.total_stride, chosen.core)
    core = layout.core_size(partition)
    measure_step(
        config,
        spatial,
        core,
        batch_size=chosen.batch_size,
        amp=chosen.amp,
        checkpointing=chosen.checkpointing,
        device=device,
        model=model,
    )
    optimizer.step()
    return int(torch.cuda.max_memory_allocated(device))
