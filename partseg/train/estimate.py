"""What one training step holds on the device, by component: the planner's estimate.

Peak device memory of one training step is modelled as::

    allocated = parameters + gradients + optimizer state   4 bytes per parameter each (AdamW
                                                            keeps 2 moments, SGD + momentum 1)
              + activations (peak)                          measured + autocast copies of the
                                                            weights
              + batch tensors (input, target, mask)
              + workspace = 5% of the activations           cuDNN / oneDNN workspaces
    reserved  = allocated x 1.10                            the CUDA caching allocator's block
                                                            rounding and fragmentation
    total     = reserved + device context                   CUDA: 400 MiB for the context and
                                                            the cuDNN / cuBLAS handles; CPU: 0

``total`` is what the device holds (``torch.cuda.mem_get_info``), the figure a budget limits.
Activations measured with CPU kernels (:mod:`partseg.train.activations`) come with the stated
workspace, allocator and context allowances, which a CPU cannot see; a law calibrated on a GPU
(:mod:`partseg.train.calibration`) holds all of them, measured.

Example:
    >>> parse_size("4GiB"), parse_size("4GB"), parse_size("4096MiB"), parse_size("6g")
    (4294967296, 4000000000, 4294967296, 6442450944)
    >>> format_size(1536 * 2**20)
    '1.50 GiB'
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch

from partseg.config import ExperimentConfig
from partseg.errors import ConfigError
from partseg.train.activations import ActivationModel
from partseg.train.calibration import DeviceLaw

WORKSPACE_SHARE = 0.05
ALLOCATOR_SHARE = 0.10
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
