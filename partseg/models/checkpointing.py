"""Gradient checkpointing in flat units, switchable at runtime.

A network is a flat sequence of :class:`Stage` modules (encoder levels, bottleneck, decoder
levels). With checkpointing on, a stage runs as a chain of checkpoint **units**: each unit keeps
only its inputs during the forward pass and runs its layers a second time in the backward pass.
Units are never nested, so every layer is recomputed exactly once per step (nested wrappers
recompute inner levels many times).

By default a stage is one unit. A stage built with ``split=True`` asks its body for finer units
(``body.checkpoint_units()``, e.g. one per conv-norm-act block): the peak of a recomputation is
the unit's own activations and gradients on top of everything kept, so at full resolution,
where one 32-channel map of a BraTS minicube is ~0.18 GiB in bf16, a whole stage (7 such maps
with its skip concatenation) is too coarse a unit.

Three details keep the switch exact and cheap:

* **BatchNorm running statistics are updated once.** Each recomputation runs inside a context
  that snapshots the unit's BatchNorm buffers (``running_mean``, ``running_var``,
  ``num_batches_tracked``) and restores them when it ends, so the second pass computes exactly
  what the first did (batch statistics in training mode) but leaves no trace in the buffers.
* **Unit boundaries are kept in the autocast dtype.** Under autocast the unit inputs and
  outputs are cast to the autocast dtype (bf16/fp16), so what is kept between forward and
  backward is half the size of fp32 (the first conv of each unit would make that cast anyway).
* **Dropout draws the same mask** in the recomputation (``checkpoint`` restores the RNG state).

Example:
    >>> import torch
    >>> from torch import nn
    >>> stage = Stage(nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.BatchNorm3d(2)))
    >>> stage.checkpointing = True
    >>> stage(torch.randn(2, 1, 4, 4, 4, requires_grad=True)).sum().backward()
    >>> int(stage.body[1].num_batches_tracked)
    1
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)  # any BatchNorm, synchronised too


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active for ``device_type``, or None when autocast is off there."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    if device_type == "cpu":  # torch 2.3
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def to_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """Casts a floating tensor to the active autocast dtype of its device (no-op otherwise)."""
    dtype = autocast_dtype(x.device.type)
    if dtype is None or not x.is_floating_point() or x.dtype == dtype:
        return x
    return x.to(dtype)


@contextmanager
def frozen_running_stats(*modules: nn.Module) -> Iterator[None]:
    """Within the context, BatchNorm layers of ``modules`` may update their running statistics;
    on exit the statistics (mean, var, num_batches_tracked) are restored to their entry values.

    Normalisation is untouched (training mode still uses the batch statistics), so the
    recomputation saves the same tensors as the first pass, which checkpoint verifies.
    """
    saved = [
        (buffer, buffer.clone())
        for module in modules
        for m in module.modules()
        if isinstance(m, _BATCH_NORMS) and m.track_running_stats
        for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buffer is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


@dataclass(frozen=True)
class Unit:
    """One checkpoint unit: ``fn(*inputs) -> tensor``, computed by the layers of ``modules``.

    ``modules`` are the layers ``fn`` runs (whose BatchNorm statistics the recomputation must
    leave untouched); ``fn`` may combine them in ways a module's ``forward`` does not (e.g. the
    decoder's concatenation-free first convolution).
    """

    fn: Callable[..., torch.Tensor]
    modules: tuple[nn.Module, ...]

    def contexts(self) -> tuple[AbstractContextManager, AbstractContextManager]:
        """(first forward, recomputation in backward) contexts for ``checkpoint``."""
        return nullcontext(), frozen_running_stats(*self.modules)


def chain_units(modules: list[nn.Module]) -> list[Unit]:
    """One unit per module with parameters; parameter-free modules (pooling, dropout) join the
    next unit (or the last one), so no unit boundary sits between a pooling and its conv."""
    units: list[list[nn.Module]] = []
    pending: list[nn.Module] = []
    for module in modules:
        pending.append(module)
        if any(True for _ in module.parameters()):
            units.append(pending)
            pending = []
    if pending:
        if units:
            units[-1].extend(pending)
        else:
            units.append(pending)
    return [_sequence_unit(group) for group in units]


def _sequence_unit(modules: list[nn.Module]) -> Unit:
    if len(modules) == 1:
        return Unit(modules[0], (modules[0],))
    return Unit(nn.Sequential(*modules), tuple(modules))


class Stage(nn.Module):
    """Wraps one stage's body; recomputes it in backward when ``checkpointing`` is True.

    Checkpointing applies only in training mode with gradients enabled; otherwise the body runs
    plainly. ``body`` takes and returns tensors: (B, C_in, *S) [, skip] -> (B, C_out, *S').

    Args:
        body: the stage's layers.
        split: checkpoint the body in the finer units of ``body.checkpoint_units()`` (one
            unit otherwise, and when the body has no such method).
    """

    def __init__(self, body: nn.Module, *, split: bool = False) -> None:
        super().__init__()
        self.body = body
        self.split = split
        self.checkpointing = False
        self.observer: Callable[[tuple[torch.Tensor, ...]], None] | None = None

    def units(self) -> list[Unit]:
        """The checkpoint units of this stage, in order."""
        make = getattr(self.body, "checkpoint_units", None)
        if self.split and make is not None:
            return make()
        return [Unit(self.body, (self.body,))]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not (self.checkpointing and self.training and torch.is_grad_enabled()):
            return self.body(*inputs)
        kept = tuple(to_autocast_dtype(x) for x in inputs)
        for unit in self.units():
            if self.observer is not None:
                self.observer(kept)
            out = checkpoint(unit.fn, *kept, use_reentrant=False, context_fn=unit.contexts)
            kept = (to_autocast_dtype(out),)
        return kept[0]

    def layer_specs(self) -> list:
        return self.body.layer_specs()


def set_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Turns checkpointing on or off for every :class:`Stage` of ``model``."""
    for module in model.modules():
        if isinstance(module, Stage):
            module.checkpointing = enabled


@contextmanager
def observe_kept_inputs(
    model: nn.Module, callback: Callable[[tuple[torch.Tensor, ...]], None]
) -> Iterator[None]:
    """Within the context, ``callback(inputs)`` sees the inputs every checkpoint unit of
    ``model`` keeps for its recomputation (non-reentrant checkpointing holds them by reference,
    outside ``saved_tensors_hooks``)."""
    stages = [m for m in model.modules() if isinstance(m, Stage)]
    for stage in stages:
        stage.observer = callback
    try:
        yield
    finally:
        for stage in stages:
            stage.observer = None
