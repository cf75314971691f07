"""Activation memory of a training step, measured on the CPU at small sizes and extrapolated.

A dry forward + loss + backward of the configured network (with the configured loss, under a
mixed precision mode and checkpointing on or off) runs at two small input sizes under a
``TorchDispatchMode`` (:class:`LiveBytes`) that follows every tensor storage allocated in the
step until it is freed. Its peak of live bytes covers what autograd saves for backward, the
activation gradients, the loss' intermediates and, with checkpointing, the recomputed units; the
live bytes when the forward pass ends are the "saved for backward" figure. Two sizes give the
intercept ``a`` (per-step allocations that do not grow with the volume) and the slope ``b`` in
bytes per voxel; convolutional networks on inputs divisible by their stride are exactly linear
in voxels, so the probes are the smallest inputs that reach every level (one stride per axis,
batch 2; see :func:`probe_sizes`) and the measurement takes seconds even where bf16 kernels
are slow.

This sees what tensors a step holds, not what a GPU's caching allocator reserves around them,
cuDNN's workspaces or the CUDA context: :mod:`partseg.train.planner` adds stated allowances for
those, and replaces all of it by real steps on a GPU when one is present
(:mod:`partseg.train.calibration`).

Example:
    >>> import torch
    >>> with LiveBytes() as tracker:
    ...     a = torch.ones(1000)  # 4000 bytes
    ...     b = a * 2             # 4000 more
    ...     del a
    >>> tracker.peak, tracker.live
    (8000, 4000)
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from partseg.config import ExperimentConfig
from partseg.precision import resolve_precision

Progress = Callable[[str], None]


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


def measured_mode(amp: str, device_type: str) -> str:
    """The precision whose memory ``amp`` takes on ``device_type``, as measured on a CPU.

    ``auto`` on a GPU is bf16 or fp16 (both 2 bytes a value: measured as bf16); on a CPU it is
    what :func:`~partseg.precision.resolve_precision` picks there (bf16 where native, else fp32).

    Example:
        >>> measured_mode("auto", "cuda"), measured_mode("fp16", "cuda")
        ('bf16', 'bf16')
    """
    if amp == "off":
        return "off"
    if device_type == "cpu" and amp == "auto":
        return resolve_precision("auto", "cpu").mode
    return "bf16"  # fp16 has bf16's size; CPU autocast is bf16-native


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
        amp: ``"off"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (measured as bf16 on a CPU).
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


@dataclass(frozen=True)
class Probes:
    """The two probe inputs (spatial sizes) and their batch."""

    small: tuple[int, ...]
    large: tuple[int, ...]
    batch: int


def probe_sizes(config: ExperimentConfig) -> Probes:
    """The two smallest inputs that exercise every level: one stride per axis and two strides
    along the first axis, batch 2 (BatchNorm needs two values per channel at the bottom
    level); instance norm needs two voxels per level, so its probes are twice as wide.

    Example:
        >>> from partseg.config import config_from_dict
        >>> probe_sizes(config_from_dict({"model": {"depth": 4}}))
        Probes(small=(8, 8, 8), large=(16, 8, 8), batch=2)
    """
    side = config.model.total_stride * (2 if config.model.norm == "instance" else 1)
    small = (side,) * config.model.spatial_dims
    return Probes(small, (2 * side, *small[1:]), batch=2)


def fit_activations(
    config: ExperimentConfig,
    amp: str,
    checkpointing: bool,
    device: str | torch.device = "cpu",
    *,
    model: torch.nn.Module | None = None,
    progress: Progress | None = None,
) -> ActivationModel:
    """Measure at the two :func:`probe_sizes` and fit a line through them.

    Args:
        amp: the mode to measure (``auto`` is measured as bf16 on a CPU).
        model: reuse this network (built from ``config.model`` otherwise).
        progress: called with one line per measurement.
    """
    from partseg.models import build_model

    probes = probe_sizes(config)
    model = model if model is not None else build_model(config.model)
    results = []
    for spatial in (probes.small, probes.large):
        if progress is not None:
            progress(
                f"measuring activations: amp={amp}, checkpointing="
                f"{'on' if checkpointing else 'off'}, input {'x'.join(map(str, spatial))}, "
                f"batch {probes.batch}"
            )
        core = tuple(max(1, s // 2) for s in spatial)
        results.append(
            measure_step(
                config,
                spatial,
                core,
                batch_size=probes.batch,
                amp=amp,
                checkpointing=checkpointing,
                device=device,
                model=model,
            )
        )
    # voxels of a step: batch x input voxels; the model is per sample
    v1, v2 = (probes.batch * math.prod(size) for size in (probes.small, probes.large))
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
