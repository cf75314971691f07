"""Per-stage gradient checkpointing, switchable at runtime.

A network is a flat sequence of :class:`Stage` modules (encoder levels, bottleneck, decoder
levels). With checkpointing on, a stage keeps only its inputs during the forward pass and runs
its body a second time in the backward pass; no stage is nested in another, so every layer is
recomputed exactly once per step (nested wrappers recompute inner levels many times).

Two details keep the switch exact and cheap:

* **BatchNorm running statistics are updated once.** The recomputation runs inside a context
  that snapshots the stage's BatchNorm buffers (``running_mean``, ``running_var``,
  ``num_batches_tracked``) and restores them when it ends, so the second pass computes exactly
  what the first did (batch statistics in training mode) but leaves no trace in the buffers.
* **Stage boundaries are saved in the autocast dtype.** Under autocast the stage inputs and
  outputs are cast to the autocast dtype (bf16/fp16), so what is kept between forward and
  backward is half the size of fp32 (the first conv of each stage would make that cast anyway).

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

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


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
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Within the context, BatchNorm layers of ``module`` may update their running statistics;
    on exit the statistics (mean, var, num_batches_tracked) are restored to their entry values.

    Normalisation is untouched (training mode still uses the batch statistics), so the
    recomputation saves the same tensors as the first pass, which checkpoint verifies.
    """
    saved = [
        (buffer, buffer.clone())
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


class Stage(nn.Module):
    """Wraps one stage's body; recomputes it in backward when ``checkpointing`` is True.

    Checkpointing applies only in training mode with gradients enabled; otherwise the body runs
    plainly. ``body`` takes and returns tensors: (B, C_in, *S) [, skip] -> (B, C_out, *S').
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.checkpointing = False

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not (self.checkpointing and self.training and torch.is_grad_enabled()):
            return self.body(*inputs)
        inputs = tuple(to_autocast_dtype(x) for x in inputs)
        out = checkpoint(self.body, *inputs, use_reentrant=False, context_fn=self._contexts)
        return to_autocast_dtype(out)

    def _contexts(self) -> tuple[AbstractContextManager, AbstractContextManager]:
        # (first forward, recomputation in backward)
        return nullcontext(), frozen_running_stats(self.body)

    def layer_specs(self) -> list:
        return self.body.layer_specs()


def set_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Turns checkpointing on or off for every :class:`Stage` of ``model``."""
    for module in model.modules():
        if isinstance(module, Stage):
            module.checkpointing = enabled
