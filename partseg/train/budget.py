"""A wall-time budget for training instead of a number of epochs (``train.budget``, ``--budget``).

Comparing variants by epochs is unfair: a 2D step is much cheaper than a 3D step with context,
so equal epochs give unequal compute. With ``train.budget: 60m`` the trainer instead measures
the variant's own step time on this machine and sets its number of steps so that its training
steps take the budget:

1. **Measure** (:func:`measure_step_seconds`): before the first epoch, ``PROBE_WARMUP`` optimizer
   steps (allocation, kernel selection, loader start-up) and then ``PROBE_STEPS`` timed steps run
   on real minicubes of epoch 0, data loading included. The model, optimizer, scaler, loss state
   and every RNG are then restored, so a budgeted run is exactly the plain run with the planned
   ``epochs`` / ``steps_per_epoch`` / ``val_every`` (the probe's time is reported, not counted).
2. **Plan** (:func:`plan_steps`): ``total = budget / step time`` optimizer steps, cut into epochs
   of the config's ``steps_per_epoch`` when that gives at least ``MIN_EPOCHS`` epochs, else into
   ``MIN_EPOCHS`` shorter epochs (the learning-rate schedule and validation work per epoch, so a
   short budget still gets a schedule and several validations).
3. **Recalibrate** (:func:`recalibrate`) once, after the first epoch: a few probe steps miss
   what a whole epoch shows (loader prefetch overlapping compute, caches and allocators
   settling; on 2 CPU cores a 2D U-Net's probe said 3.9 s per step where its epochs ran at
   2.7-3.3 s, which left a fifth of a 60-minute budget unused). The remaining epochs are set
   from the first epoch's own time. Epoch 0's learning rate does not depend on the number of
   epochs (every schedule starts at its first value), so the run is still exactly the plain
   run of its final plan. The plan then rests on that one epoch: another job sharing the CPU
   during it makes the run stop short (a 3D U-Net whose first epoch ran at 4.8 s per step while
   tests ran beside it, its later ones at 3.6-4.2 s, trained 52 of its 60 minutes).
4. **Validation does not count** towards the budget (training steps only: the fair measure of
   what a variant learns per unit of compute), but it is capped: ``val_every`` grows so that a
   run validates at most ``MAX_VALIDATIONS`` times (always after its last epoch).

The plan (:class:`BudgetPlan`, with the hardware it was measured on) is written to
``RUN/budget.json`` and stored in every checkpoint: a resumed run keeps its planned step count,
however fast the machine is when it resumes. Step times drift on a shared machine, so the
report gives the measured step time next to the training time actually spent.

This module loads no torch at import; durations are read by :mod:`partseg.durations`.

Example:
    >>> parse_duration("1.5h"), parse_duration("90s"), parse_duration(120)
    (5400.0, 90.0, 120.0)
    >>> plan_steps(600, 2.0, steps_per_epoch=250, val_every=1)   # 300 steps: 10 epochs of 30
    (10, 30, 2)
    >>> plan = BudgetPlan(600, 2.0, 1.0, epochs=10, steps_per_epoch=30, val_every=2)
    >>> late = recalibrate(plan, first_epoch_s=45.0)   # 1.5 s per step, not 2: 13 epochs
    >>> late.epochs, late.step_s, late.val_every, late.probe_s_per_step
    (13, 1.5, 3, 2.0)
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from partseg.durations import format_duration, parse_duration

#: Untimed optimizer steps before the timed ones (first-step allocation, kernel choice, workers).
PROBE_WARMUP = 1
#: Timed optimizer steps; their mean is the step time.
PROBE_STEPS = 3
#: A budget is cut into at least this many epochs when it holds that many steps.
MIN_EPOCHS = 10
#: A budgeted run validates at most this many times.
MAX_VALIDATIONS = 5


def plan_steps(
    budget_s: float,
    step_s: float,
    *,
    steps_per_epoch: int,
    val_every: int,
    min_epochs: int = MIN_EPOCHS,
    max_validations: int = MAX_VALIDATIONS,
) -> tuple[int, int, int]:
    """Epochs, steps per epoch and validation cadence that fill ``budget_s`` with steps.

    Args:
        budget_s: training time to fill, seconds.
        step_s: measured seconds of one optimizer step.
        steps_per_epoch: the config's epoch length in optimizer steps (the natural epoch's
            length when the config says 0); kept when the budget holds ``min_epochs`` such
            epochs.
        val_every: the config's validation cadence in epochs (0: never validate).
        min_epochs: shorter epochs are used below this many.
        max_validations: ``val_every`` grows until at most this many validations happen.

    Returns:
        ``(epochs, steps_per_epoch, val_every)``; ``epochs * steps_per_epoch`` is the total
        step count rounded to whole epochs (within half an epoch of ``budget_s / step_s``).

    Example:
        >>> plan_steps(3600, 12.0, steps_per_epoch=250, val_every=5)   # 300 steps
        (10, 30, 5)
        >>> plan_steps(3600, 1.0, steps_per_epoch=250, val_every=1)    # 3600 steps
        (14, 250, 3)
        >>> plan_steps(5, 2.0, steps_per_epoch=250, val_every=1)       # fewer steps than epochs
        (2, 1, 1)
    """
    if step_s <= 0 or budget_s <= 0:
        raise ValueError(f"budget {budget_s} s and step time {step_s} s must be positive")
    total = max(1, math.floor(budget_s / step_s))
    steps = max(1, int(steps_per_epoch))
    if total < steps * min_epochs:
        steps = max(1, total // min_epochs)
    epochs = max(1, round(total / steps))
    if val_every:
        val_every = max(int(val_every), math.ceil(epochs / max(1, max_validations)))
    return epochs, steps, int(val_every)


def hardware(device: Any = "cpu") -> dict[str, Any]:
    """What a budget was measured on: CPU model, cores, threads, GPU.

    Keys: ``cpu`` (model name), ``physical_cores`` (None when unknown), ``cpus_available``
    (CPUs this process may run on), ``torch_threads``, ``gpu`` (name, or None), ``device``.

    Example:
        >>> sorted(hardware())
        ['cpu', 'cpus_available', 'device', 'gpu', 'physical_cores', 'torch_threads']
    """
    import torch

    device = torch.device(device)
    gpu = None
    if device.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(device)
    model, cores = _cpuinfo()
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "physical_cores": cores,
        "cpus_available": available,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "device": str(device),
    }


def _cpuinfo() -> tuple[str | None, int | None]:
    """CPU model name and physical core count from ``/proc/cpuinfo`` (None where unknown)."""
    try:
        text = open("/proc/cpuinfo").read()  # noqa: SIM115 - a virtual file, read at once
    except OSError:
        return None, None
    model, cores, physical = None, set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    return model, len(cores) or None


@dataclass(frozen=True)
class BudgetPlan:
    """How a run fills its time budget (``RUN/budget.json``, and in every checkpoint).

    Attributes:
        budget_s: the training-time budget, seconds.
        step_s: measured mean wall seconds of one optimizer step (data loading included).
        probe_s: wall seconds the measurement took (warm-up included; not part of the budget).
        epochs, steps_per_epoch, val_every: the plan (see :func:`plan_steps`).
        hardware: :func:`hardware` of the measuring process.
        probe_step_s: each timed step's seconds.
        first_epoch_s: the first epoch's training seconds, once :func:`recalibrate` set the
            plan from them (``step_s`` is then that epoch's seconds per step); None before.
        probe_s_per_step: the probe's step time, kept when ``step_s`` is recalibrated.
    """

    budget_s: float
    step_s: float
    probe_s: float
    epochs: int
    steps_per_epoch: int
    val_every: int
    hardware: Mapping[str, Any] = field(default_factory=dict)
    probe_step_s: tuple[float, ...] = ()
    first_epoch_s: float | None = None
    probe_s_per_step: float | None = None

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hardware"] = dict(self.hardware)
        data["probe_step_s"] = list(self.probe_step_s)
        data["total_steps"] = self.total_steps
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BudgetPlan:
        return cls(
            budget_s=float(data["budget_s"]),
            step_s=float(data["step_s"]),
            probe_s=float(data.get("probe_s", 0.0)),
            epochs=int(data["epochs"]),
            steps_per_epoch=int(data["steps_per_epoch"]),
            val_every=int(data["val_every"]),
            hardware=dict(data.get("hardware", {})),
            probe_step_s=tuple(float(t) for t in data.get("probe_step_s", ())),
            first_epoch_s=_optional_float(data.get("first_epoch_s")),
            probe_s_per_step=_optional_float(data.get("probe_s_per_step")),
        )

    def describe(self) -> str:
        """One log line: the budget, the measured step time and the plan."""
        if self.first_epoch_s is not None:
            return (
                f"budget recalibrated after the first epoch ({self.first_epoch_s:.1f} s, "
                f"{self.step_s:.3g} s per step; the probe measured {self.probe_s_per_step:.3g}) "
                f"-> {self.epochs} epochs x {self.steps_per_epoch} steps = {self.total_steps} "
                f"steps (validation every {self.val_every or 'never'} epoch(s))"
            )
        return (
            f"budget {format_duration(self.budget_s)} of training steps: {self.step_s:.3g} s per "
            f"step measured -> {self.epochs} epochs x {self.steps_per_epoch} steps = "
            f"{self.total_steps} steps (validation every {self.val_every or 'never'} epoch(s), "
            f"not counted); measured in {self.probe_s:.1f} s on {self.hardware.get('cpu')}"
            + (f", {self.hardware['gpu']}" if self.hardware.get("gpu") else "")
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def recalibrate(plan: BudgetPlan, first_epoch_s: float) -> BudgetPlan:
    """The plan after its first epoch: the rest of the budget at that epoch's pace.

    The epoch length stays; the number of epochs becomes 1 + the whole epochs that fit in what
    is left of the budget (rounded, at least 1 in all); ``val_every`` grows if needed to keep
    at most ``MAX_VALIDATIONS`` validations.
    """
    step_s = max(first_epoch_s, 1e-9) / plan.steps_per_epoch
    left = max(0.0, plan.budget_s - first_epoch_s)
    epochs = 1 + round(left / (step_s * plan.steps_per_epoch))
    val_every = plan.val_every
    if val_every:
        val_every = max(val_every, math.ceil(epochs / MAX_VALIDATIONS))
    return dataclasses.replace(
        plan, step_s=step_s, epochs=epochs, val_every=val_every,
        first_epoch_s=first_epoch_s, probe_s_per_step=plan.step_s,
    )  # fmt: skip


def measure_step_seconds(
    trainer: Any, warmup: int = PROBE_WARMUP, timed: int = PROBE_STEPS
) -> tuple[list[float], float]:
    """Wall seconds of ``timed`` optimizer steps after ``warmup`` ones, then undo them.

    The steps are the trainer's own (``train_step`` x ``accumulate``, ``optimizer_step``) on
    epoch 0's minicubes, loading included. Afterwards the model, optimizer, scaler, loss state,
    step counter and RNG states are as before, so the run that follows is unchanged.

    Returns:
        The timed steps' seconds and the probe's total seconds.
    """
    from partseg.train.state import restore_snapshot, take_snapshot

    snapshot = take_snapshot(trainer)
    accumulate = trainer.config.train.accumulate
    start = time.perf_counter()
    times: list[float] = []
    try:
        trainer.net.train()
        trainer.schedule.start_epoch(0)
        batches = iter(trainer.loader(0, steps=warmup + timed))
        trainer.optimizer.zero_grad(set_to_none=True)
        for step in range(warmup + timed):
            began = time.perf_counter()
            for _ in range(accumulate):
                trainer.train_step(next(batches), sync=True)
            trainer.optimizer_step()
            if trainer.device.type == "cuda":
                import torch

                torch.cuda.synchronize(trainer.device)
            if step >= warmup:
                times.append(time.perf_counter() - began)
    finally:
        restore_snapshot(trainer, snapshot)
    return times, time.perf_counter() - start


def make_plan(trainer: Any, budget: str | float) -> BudgetPlan:
    """Measure the trainer's step time and plan its run for ``budget``."""
    train = trainer.config.train
    times, probe_s = measure_step_seconds(trainer)
    step_s = sum(times) / len(times)
    budget_s = parse_duration(budget)
    epochs, steps, val_every = plan_steps(
        budget_s, step_s, steps_per_epoch=trainer.epoch_steps(), val_every=train.val_every
    )
    return BudgetPlan(
        budget_s=budget_s,
        step_s=step_s,
        probe_s=probe_s,
        epochs=epochs,
        steps_per_epoch=steps,
        val_every=val_every,
        hardware=hardware(trainer.device),
        probe_step_s=tuple(round(t, 4) for t in times),
    )


__all__: Sequence[str] = (
    "MAX_VALIDATIONS",
    "MIN_EPOCHS",
    "PROBE_STEPS",
    "PROBE_WARMUP",
    "BudgetPlan",
    "format_duration",
    "hardware",
    "make_plan",
    "measure_step_seconds",
    "parse_duration",
    "plan_steps",
    "recalibrate",
)
