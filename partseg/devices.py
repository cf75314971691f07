"""Devices: one rule for the ``device`` setting of predict, compare, training and validation.

``auto`` means the first CUDA GPU when one is visible, else the CPU; ``cpu``, ``cuda`` and
``cuda:N`` are taken as given once checked. The name is validated here, so a typo says what is
accepted (instead of surfacing later as a checkpoint or torch error), and ``cuda`` without a
visible GPU says so.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> check_device_name("tpu")
    Traceback (most recent call last):
    ...
    partseg.errors.ConfigError: unknown device 'tpu'; use auto, cpu, cuda or cuda:N
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from partseg.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: The device names every command and config accepts (plus ``cuda:N``).
DEVICE_NAMES = ("auto", "cpu", "cuda")

_CUDA_INDEX = re.compile(r"cuda:\d+")


def check_device_name(name: str, *, key: str | None = None) -> str:
    """Return ``name`` when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; else ConfigError.

    Args:
        name: the device setting.
        key: the option or config key it came from (``--device``, ``train.device``), for the
            message.

    Needs no torch import, so config validation can use it.
    """
    if name in DEVICE_NAMES or (isinstance(name, str) and _CUDA_INDEX.fullmatch(name)):
        return name
    where = f"{key}: " if key else ""
    raise ConfigError(f"{where}unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def resolve_device(
    name: str, *, key: str | None = None, local_rank: int | None = None
) -> torch.device:
    """The torch device a ``device`` setting means here.

    Args:
        name: ``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        key: the option or config key, for messages.
        local_rank: with ``auto`` or a bare ``cuda``, use GPU ``local_rank`` (DDP processes);
            default GPU 0 is left to torch (``cuda``).

    Raises:
        ConfigError: an unknown name, or a CUDA device when none is visible.
    """
    import torch

    check_device_name(name, key=key)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        where = f"{key}={name!r}" if key else f"device {name!r}"
        if not torch.cuda.is_available():
            raise ConfigError(f"{where} but no CUDA GPU is visible; use cpu or auto")
        if name == "cuda" and local_rank is not None:
            name = f"cuda:{local_rank}"
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(
                f"{where} but only {torch.cuda.device_count()} CUDA GPUs are visible "
                "(cuda:0 ...); pick one of them"
            )
    return torch.device(name)
