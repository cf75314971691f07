"""Data-parallel training with torchrun: process group, rank-0 duties, helpers.

Nothing here reads the environment at import time. The train command calls
:func:`init_distributed`, which reads torchrun's variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) once and returns a :class:`DistContext`; without
them (a plain ``partseg train``) it returns a single-process context and starts no process group.
The backend is ``nccl`` on GPUs and ``gloo`` on CPUs.

Launch: ``partseg train CONFIG --nproc 2`` (:func:`launch` starts ``torch.distributed.run``), or
``torchrun --standalone --nproc_per_node 2 -m partseg train CONFIG --out RUN`` yourself.

Batches: ``train.batch_size`` is per process; each process trains on its strided shard of the
epoch's samples (:func:`partseg.sampling.shard`), so step ``k`` of ``N`` processes covers the same
``N * batch_size`` samples as step ``k`` of one process with that global batch. BatchNorm layers
are synchronised (``train.sync_batchnorm``, :mod:`partseg.train.syncnorm`), so the two train
the same model (``tests/train/test_distributed.py``: 2 CPU processes equal 1 to 1e-5).

Example:
    >>> ctx = init_distributed("cpu", env={})
    >>> ctx.world_size, ctx.is_main
    (1, True)
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from partseg.devices import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) training job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, validates and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", env: Mapping[str, str] | None = None) -> DistContext:
    """Join the torchrun process group if launched by torchrun, else run single-process.

    Args:
        device: ``train.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        env: the environment to read (default: ``os.environ``, read now, not at import).
    """
    env = os.environ if env is None else env
    world_size = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get("RANK", "0"))
    local_rank = int(env.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device, key="train.device", local_rank=local_rank)
    if world_size <= 1:
        return DistContext(0, 1, 0, chosen)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, chosen)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_object(ctx: DistContext, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. the validation metric early stopping reads)."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(ctx: DistContext, value: float) -> float:
    """Mean of a float over ranks (for logged losses)."""
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world_size


def all_reduce_sum_(ctx: DistContext, tensor: torch.Tensor) -> None:
    """Sum a tensor over ranks in place (e.g. the adaptive loss' running sums)."""
    if not ctx.distributed:
        return
    moved = tensor.to(_comm_device(ctx))
    dist.all_reduce(moved)
    tensor.copy_(moved)


def _comm_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")


def wrap_model(
    model: torch.nn.Module, ctx: DistContext, *, sync_batchnorm: bool = True
) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else the model itself.

    With ``sync_batchnorm`` its BatchNorm layers are first made synchronised in place
    (:func:`partseg.train.syncnorm.convert_sync_batchnorm`: parameter names unchanged), so
    ``model`` itself, whose ``state_dict`` the checkpoints hold, keeps its keys.
    """
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    from partseg.train.syncnorm import convert_sync_batchnorm, has_batchnorm

    if sync_batchnorm and has_batchnorm(model):
        convert_sync_batchnorm(model, ctx.device.type)
        if ctx.is_main:
            logging.getLogger("partseg").info(
                f"BatchNorm synchronised across {ctx.world_size} processes "
                "(train.sync_batchnorm=false keeps per-process statistics)"
            )
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def launch(nproc: int, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``partseg ARGV`` (without ``--nproc``) in ``nproc`` processes on this machine.

    Starts ``python -m torch.distributed.run --standalone --nproc_per_node N -m partseg ...``
    and returns its exit status.

    Raises:
        ConfigError: already inside a torchrun process group (``WORLD_SIZE`` is set).
    """
    from partseg.errors import ConfigError

    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        raise ConfigError("--nproc cannot be used under torchrun: drop --nproc, or torchrun")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(nproc), "-m", "partseg", *without_nproc(argv)]  # fmt: skip
    logging.getLogger("partseg").info(f"starting {nproc} processes: {' '.join(command[1:])}")
    return subprocess.call(command, env=dict(env))


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``.

    Example:
        >>> without_nproc(["train", "tiny", "--nproc", "2", "--out", "r"])
        ['train', 'tiny', '--out', 'r']
    """
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            out.append(token)
    return out
