"""Training steps on a synthetic batch, run by the trainer's own code (no store, no data).

The memory planner's GPU calibration, ``partseg plan``'s check of its choice,
``tools/gpu_check.py`` and ``tools/bench_memory.py`` time and measure training steps, and they
must run exactly what ``partseg train`` runs: the same seeding and cuDNN autotuning
(:meth:`Trainer.setup_runtime`), model, loss, optimizer, mixed precision and GradScaler
(``Trainer._setup_model``, :mod:`partseg.precision`), gradient checkpointing and memory layout,
and the same :meth:`Trainer.train_step` / :meth:`Trainer.optimizer_step`. :func:`step_trainer`
builds such a :class:`~partseg.train.trainer.Trainer` without a store; :func:`run_steps` feeds
it a random batch shaped like the config's minicubes and reports times and memory peaks.

Example:
    >>> from partseg.config import config_from_dict
    >>> config = config_from_dict({"model": {"depth": 2, "base_width": 4},
    ...     "partition": {"core": [8, 8, 8], "margin": 0}, "train": {"amp": "off"}})
    >>> stats = run_steps(config, 2, "cpu")
    >>> len(stats.step_s), stats.max_reserved is None
    (2, True)
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from partseg.config import ExperimentConfig
from partseg.train.distributed import DistContext


@dataclass(frozen=True)
class StepStats:
    """Times and memory of consecutive training steps (the first includes cuDNN autotuning
    and the optimizer's state allocation).

    Attributes:
        step_s: wall seconds of each step, device synchronised.
        cpu_s: CPU seconds of this process for each step (``time.process_time``).
        losses: the loss of each step.
        max_allocated: ``torch.cuda.max_memory_allocated`` over the steps (None on a CPU).
        max_reserved: ``torch.cuda.max_memory_reserved`` over the steps (None on a CPU).
        device_used: device memory in use after the steps, ``total - free`` of
            ``torch.cuda.mem_get_info`` (context, reserved memory and other processes).
    """

    step_s: tuple[float, ...]
    cpu_s: tuple[float, ...]
    losses: tuple[float, ...]
    max_allocated: int | None = None
    max_reserved: int | None = None
    device_used: int | None = None

    @property
    def median_step_s(self) -> float:
        """Median wall time of the steps after the first (all steps when there is one)."""
        return statistics.median(self.step_s[1:] or self.step_s)

    @property
    def median_cpu_s(self) -> float:
        """Median CPU time of the steps after the first (all steps when there is one)."""
        return statistics.median(self.cpu_s[1:] or self.cpu_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step_s": [round(t, 4) for t in self.step_s],
            "median_step_s": round(self.median_step_s, 4),
            "cpu_s": [round(t, 4) for t in self.cpu_s],
            "median_cpu_s": round(self.median_cpu_s, 4),
            "losses": [round(v, 5) for v in self.losses],
            "max_memory_allocated": self.max_allocated,
            "max_memory_reserved": self.max_reserved,
            "device_used": self.device_used,
        }


def step_trainer(config: ExperimentConfig, device: str | torch.device) -> Any:
    """A :class:`~partseg.train.trainer.Trainer` ready for ``train_step``/``optimizer_step``.

    Runtime flags (seed, determinism, ``cudnn.benchmark``), model, loss, optimizer, precision
    and scaler are set up by the trainer's own setup steps; the geometry that its data setup
    would derive from the store is derived from the config alone.
    """
    from partseg.train.planner import planning_channels
    from partseg.train.trainer import Trainer

    config = planning_channels(config)  # no store to take unset in/out channels from
    trainer = Trainer(
        config, "unused-run-dir", dist=DistContext(device=torch.device(device)), log=_quiet
    )
    trainer.setup_runtime()
    trainer.partition = config.partition.build(config.model.total_stride)
    trainer.layout = config.partition.layout()
    trainer.core_slices = trainer.layout.core_slices(trainer.partition.at((0, 0, 0)))
    trainer.train_cases, trainer.val_cases, trainer.unvalidated = [], [], []  # no store: no cases
    trainer.derive = None  # no derived channels: the batch is already the network input
    trainer._setup_model()
    return trainer


def synthetic_batch(trainer: Any, seed: int = 0) -> dict[str, Any]:
    """A random batch as the data loader gives it: image (B, C, *input) float32, target
    (B, *core) int64 class ids, mask (B, *core) bool, on the CPU (``train_step`` moves it)."""
    config = trainer.config
    batch = config.train.batch_size
    spatial = trainer.layout.spatial_size(trainer.partition)
    core = trainer.layout.core_size(trainer.partition)
    generator = torch.Generator().manual_seed(seed)
    classes = max(config.model.out_channels, 2)
    return {
        "image": torch.randn(batch, config.model.in_channels, *spatial, generator=generator),
        "target": torch.randint(0, classes, (batch, *core), generator=generator),
        "mask": torch.ones(batch, *core, dtype=torch.bool),
        "case_id": [f"synthetic_{i}" for i in range(batch)],
    }


def run_steps(
    config: ExperimentConfig, steps: int, device: str | torch.device = "cpu"
) -> StepStats:
    """Build a step trainer for ``config`` on ``device`` and run ``steps`` training steps.

    On CUDA the cache is emptied and the peak statistics reset first, so ``max_reserved``
    and ``max_allocated`` belong to these steps (parameters, gradients, optimizer state,
    activations, cuDNN workspaces and the batch).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    trainer = step_trainer(config, device)
    batch = synthetic_batch(trainer)
    walls, cpus, losses = [], [], []
    try:
        for _ in range(steps):
            wall, cpu = time.perf_counter(), time.process_time()
            losses.append(trainer.train_step(batch))
            trainer.optimizer_step()
            if cuda:
                torch.cuda.synchronize(device)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        if not cuda:
            return StepStats(tuple(walls), tuple(cpus), tuple(losses))
        free, total = torch.cuda.mem_get_info(device)
        return StepStats(
            tuple(walls),
            tuple(cpus),
            tuple(losses),
            max_allocated=int(torch.cuda.max_memory_allocated(device)),
            max_reserved=int(torch.cuda.max_memory_reserved(device)),
            device_used=int(total - free),
        )
    finally:
        del trainer, batch
        if cuda:
            gc.collect()
            torch.cuda.empty_cache()


def input_voxels(config: ExperimentConfig) -> int:
    """Voxels of one network input of ``config`` (the minicube box, one slice in 2D)."""
    partition = config.partition.build(config.model.total_stride)
    return math.prod(config.partition.layout().spatial_size(partition))


def _quiet(_message: str) -> None:
    """The step trainer logs nothing."""
