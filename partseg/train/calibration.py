"""Calibrating the memory planner on a GPU: real training steps at small sizes.

CPU measurements (:mod:`partseg.train.activations`) see the tensors a step allocates, not what
the CUDA caching allocator reserves around them (block rounding, fragmentation), the workspaces
cuDNN's autotuning picks, or the CUDA context. With a GPU at hand the planner measures all of
it: a :class:`DeviceProbe` runs a few training steps of the trainer's own code
(:func:`partseg.train.steps.run_steps`: same ``cudnn.benchmark``, precision, GradScaler,
checkpointing) at two small cores with batch 1, and :func:`calibrate_mode` fits the peaks of
``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` as lines ``a + b * voxels`` in
the voxels of a step (batch x input voxels): the intercepts hold the parameters, gradients and
optimizer state, the slopes everything that grows with the minicube. The context (what the
device holds beyond the allocator's reserve: CUDA context, cuDNN and cuBLAS handles) is
measured once with ``torch.cuda.mem_get_info``.

The probe is a protocol so that the calibration and margin logic are tested on a CPU against a
fake device (``tests/train/test_planner.py``).

Example:
    >>> law = DeviceLaw("auto", False, "fake", 100.0, 2.0, 120.0, 2.5, ())
    >>> law.allocated(1000), law.reserved(1000)
    (2100, 2620)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from partseg.config import ExperimentConfig

if TYPE_CHECKING:
    from partseg.train.estimate import MemoryEstimate


@dataclass(frozen=True)
class DevicePeak:
    """Peak device memory of a few training steps (bytes)."""

    allocated: int
    reserved: int


class DeviceProbe(Protocol):
    """Where calibration steps run: a GPU (:class:`CudaProbe`) or a fake one in tests."""

    name: str

    def context_bytes(self) -> int:
        """Device memory in use beyond the allocator's reserve (CUDA context, handles)."""
        ...

    def peak(self, config: ExperimentConfig, steps: int) -> DevicePeak:
        """Run ``steps`` training steps of ``config`` and return their memory peaks."""
        ...


class CudaProbe:
    """Calibration steps on a CUDA GPU.

    Args:
        device: the GPU (default the current one).
    """

    def __init__(self, device: str | torch.device = "cuda") -> None:
        self.device = torch.device(device)
        self.name = torch.cuda.get_device_name(self.device)

    def context_bytes(self) -> int:
        """``total - free - reserved`` after cuDNN and cuBLAS have been loaded."""
        self._load_libraries()
        torch.cuda.synchronize(self.device)
        free, total = torch.cuda.mem_get_info(self.device)
        return int(total - free - torch.cuda.memory_reserved(self.device))

    def peak(self, config: ExperimentConfig, steps: int) -> DevicePeak:
        from partseg.train.steps import run_steps

        stats = run_steps(config, steps, self.device)
        assert stats.max_allocated is not None and stats.max_reserved is not None
        return DevicePeak(stats.max_allocated, stats.max_reserved)

    def _load_libraries(self) -> None:
        """A conv forward/backward and a matmul: cuDNN and cuBLAS hold their handles and
        workspaces from then on, as they will during training."""
        x = torch.randn(1, 2, 8, 8, 8, device=self.device, requires_grad=True)
        conv = torch.nn.Conv3d(2, 2, 3, padding=1).to(self.device)
        conv(x).sum().backward()
        (x.flatten(1) @ x.flatten(1).T).sum().item()


@dataclass(frozen=True)
class DeviceLaw:
    """Measured device memory of one mode: ``a + b * voxels`` bytes, voxels = batch x input.

    Attributes:
        amp, checkpointing: the mode.
        device: the GPU it was measured on.
        allocated_a, allocated_b: line of ``max_memory_allocated``.
        reserved_a, reserved_b: line of ``max_memory_reserved``.
        probes: the measurements, ``(voxels, allocated, reserved)``.
    """

    amp: str
    checkpointing: bool
    device: str
    allocated_a: float
    allocated_b: float
    reserved_a: float
    reserved_b: float
    probes: tuple[tuple[int, int, int], ...]

    def allocated(self, voxels: int) -> int:
        return int(self.allocated_a + self.allocated_b * voxels)

    def reserved(self, voxels: int) -> int:
        return int(max(self.reserved_a + self.reserved_b * voxels, self.allocated(voxels)))


#: the largest probe input (64^3 voxels, batch 1): about 0.5 GiB of fp32 activations for the
#: default U-Net, so calibration itself fits a small GPU
PROBE_MAX_VOXELS = 64**3


def probe_cores(config: ExperimentConfig, candidates: list[tuple[int, ...]]) -> list[tuple]:
    """Two of the planner's candidate cores whose inputs hold about 1/4 and 1/8 of the voxels
    of the configured core's input (at most :data:`PROBE_MAX_VOXELS` and half of it): small
    enough for any GPU the plan is for, large enough that the allocator's block rounding does
    not dominate."""
    full = min(_input_voxels(config, candidates[0]), 4 * PROBE_MAX_VOXELS)
    chosen: list[tuple[int, ...]] = []
    for share in (1 / 4, 1 / 8):
        core = min(candidates, key=lambda c: abs(_input_voxels(config, c) - share * full))
        if core not in chosen:
            chosen.append(core)
    if len(chosen) < 2:  # tiny configs: the two smallest distinct cores
        chosen = sorted(candidates, key=lambda c: _input_voxels(config, c))[:2]
    return sorted(chosen, key=lambda c: _input_voxels(config, c))


def calibrate_mode(
    config: ExperimentConfig,
    amp: str,
    checkpointing: bool,
    probe: DeviceProbe,
    cores: list[tuple[int, ...]],
    *,
    steps: int = 3,
    progress: Callable[[str], None] | None = None,
) -> DeviceLaw:
    """Run ``steps`` real steps at each of ``cores`` (batch 1) and fit the memory lines."""
    from partseg.train.planner import apply_mode

    points = []
    for core in cores:
        probe_config = apply_mode(config, core, 1, amp, checkpointing)
        if progress is not None:
            progress(
                f"calibrating on {probe.name}: amp={amp}, checkpointing="
                f"{'on' if checkpointing else 'off'}, core {'x'.join(map(str, core))}, batch 1"
            )
        peak = probe.peak(probe_config, steps)
        points.append((_input_voxels(config, core), peak.allocated, peak.reserved))
    if len(points) < 2 or points[0][0] == points[-1][0]:
        voxels, allocated, reserved = points[-1]
        return DeviceLaw(amp, checkpointing, probe.name, 0.0, allocated / voxels, 0.0,
                         reserved / voxels, tuple(points))  # fmt: skip
    alloc_a, alloc_b = _line(points, 1)
    res_a, res_b = _line(points, 2)
    return DeviceLaw(amp, checkpointing, probe.name, alloc_a, alloc_b, res_a, res_b,
                     tuple(points))  # fmt: skip


def check_choice(
    config: ExperimentConfig, probe: DeviceProbe, steps: int = 3
) -> tuple[DevicePeak, int]:
    """The real peak of ``config`` (the planner's choice applied) and the device context."""
    return probe.peak(config, steps), probe.context_bytes()


def estimate_errors(estimate: MemoryEstimate, peak: DevicePeak, context: int) -> dict[str, float]:
    """Relative errors of an estimate against a measured peak (estimate / measured - 1):
    allocated, reserved, and the device total (reserved + context)."""
    return {
        "allocated": round(estimate.allocated / peak.allocated - 1, 4),
        "reserved": round(estimate.reserved / peak.reserved - 1, 4),
        "total": round(estimate.total / (peak.reserved + context) - 1, 4),
    }


def _line(points: list[tuple[int, int, int]], column: int) -> tuple[float, float]:
    """Least-squares line through ``(voxels, value)`` points."""
    xs = [p[0] for p in points]
    ys = [p[column] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - slope * mx, slope


def _input_voxels(config: ExperimentConfig, core: tuple[int, ...]) -> int:
    partition = config.partition.build(config.model.total_stride, core)
    return math.prod(config.partition.layout().spatial_size(partition))


__all__ = [
    "CudaProbe",
    "DeviceLaw",
    "DevicePeak",
    "DeviceProbe",
    "calibrate_mode",
    "check_choice",
    "estimate_errors",
    "probe_cores",
]
