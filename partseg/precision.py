"""Mixed precision: one rule for training, inference and the memory planner.

:func:`resolve_precision` turns a mode (``train.amp``, ``partseg predict --amp``, the planner's
candidates) into a :class:`Precision` for one device:

* ``auto`` picks **bf16** where bf16 is native: CPUs whose oneDNN has bf16 kernels (AVX512-BF16
  or AMX; ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``) and CUDA GPUs of compute
  capability >= 8.0 (A100, RTX 30xx and newer). It picks **fp16 + GradScaler** on older CUDA
  GPUs (GTX 10xx/16xx, RTX 20xx, V100), whose bf16 is emulated, and **fp32** (``off``) on
  other CPUs: an AVX2-only CPU runs a bf16 conv3d 10-50x slower than fp32.
* bf16 has fp32's exponent range and needs no loss scaling; fp16 does.
* The training step is written once: ``with precision.autocast(): ...`` then
  ``scaler.scale(loss).backward()``; with ``off`` both are no-ops.
* What ``auto`` chose, and why, is logged once per device type (logger ``partseg``).

Example:
    >>> import torch
    >>> p = resolve_precision("bf16", torch.device("cpu"))
    >>> p.mode, p.use_scaler
    ('bf16', False)
    >>> with p.autocast():
    ...     y = torch.nn.Linear(2, 2)(torch.ones(1, 2))
    >>> y.dtype
    torch.bfloat16
    >>> resolve_precision("off", "cpu").autocast_dtype is None
    True
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from partseg.errors import ConfigError
from partseg.precision_modes import PRECISION_MODES as PRECISION_MODES  # the one list

if TYPE_CHECKING:  # torch is imported where it is used, so CLI parsers can read the modes
    import torch

_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # torch dtype names
_LOG = logging.getLogger("partseg")
_ANNOUNCED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Precision:
    """A resolved mixed-precision mode for one device type.

    Attributes:
        mode: ``"bf16"``, ``"fp16"`` or ``"off"`` (fp32).
        device_type: ``"cpu"`` or ``"cuda"`` (other types always resolve to ``off``).
        reason: why this mode was chosen (for logs and plans).
    """

    mode: str
    device_type: str
    reason: str = ""

    @property
    def enabled(self) -> bool:
        """True when autocast runs in a 16-bit dtype."""
        return self.mode != "off"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for fp32."""
        import torch

        name = _DTYPES.get(self.mode)
        return None if name is None else getattr(torch, name)

    @property
    def bytes_per_value(self) -> int:
        """Bytes of one activation value under this mode (2 for bf16/fp16, 4 for fp32)."""
        return 2 if self.enabled else 4

    @property
    def use_scaler(self) -> bool:
        """fp16 needs loss scaling (its exponent range underflows small gradients)."""
        return self.mode == "fp16"

    def autocast(self) -> AbstractContextManager:
        """The autocast context of this mode (disabled for ``off``)."""
        import torch

        return torch.autocast(
            self.device_type, dtype=self.autocast_dtype or torch.bfloat16, enabled=self.enabled
        )

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16."""
        import torch

        return torch.amp.GradScaler(self.device_type, enabled=self.use_scaler)


def native_bf16(device: torch.device | str) -> bool:
    """True where bf16 runs at full speed: oneDNN bf16 CPUs, CUDA capability >= 8.0.

    Example:
        >>> native_bf16("meta")
        False
    """
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    if device.type == "cuda":
        major, _minor = torch.cuda.get_device_capability(device)
        return major >= 8
    return False


def _auto(device: torch.device) -> tuple[str, str]:
    """The mode ``auto`` means on ``device``, and why."""
    import torch

    if device.type == "cpu":
        if native_bf16(device):
            return "bf16", "this CPU has native bf16 (oneDNN AVX512-BF16/AMX kernels)"
        return "off", (
            "this CPU has no native bf16 (bf16 convolutions would run 10-50x slower), so fp32"
        )
    if native_bf16(device):
        return "bf16", f"{torch.cuda.get_device_name(device)} supports bf16 natively"
    return "fp16", f"{torch.cuda.get_device_name(device)} has no native bf16: fp16 + GradScaler"


def resolve_precision(mode: str, device: torch.device | str, *, key: str = "amp") -> Precision:
    """Resolve a precision mode for ``device``.

    Args:
        mode: ``auto``, ``bf16``, ``fp16`` or ``off``.
        device: where the model runs.
        key: how the caller names the setting in errors (``train.amp``, ``--amp``).

    Raises:
        ConfigError: unknown mode, or bf16/fp16 on a device type without autocast.
    """
    import torch

    device = torch.device(device)
    if mode not in PRECISION_MODES:
        raise ConfigError(f"{key}={mode!r}: use one of {', '.join(PRECISION_MODES)}")
    if device.type not in ("cpu", "cuda"):
        if mode in ("bf16", "fp16"):
            raise ConfigError(f"{key}={mode!r} is not supported on {device}; use off")
        return Precision("off", device.type, f"no autocast on {device.type}")
    if mode != "auto":
        return Precision(mode, device.type, f"{key}={mode}")
    resolved, reason = _auto(device)
    if (device.type, resolved) not in _ANNOUNCED:
        _ANNOUNCED.add((device.type, resolved))
        shown = "fp32" if resolved == "off" else resolved
        _LOG.info("precision auto -> %s on %s: %s", shown, device.type, reason)
    return Precision(resolved, device.type, reason)
