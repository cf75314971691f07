"""Mixed precision with one code path: ``autocast(enabled=...)`` + ``GradScaler(enabled=...)``.

:func:`resolve_amp` turns the config's ``train.amp`` (``auto | bf16 | fp16 | off``) into an
:class:`AmpSettings` for a device:

* ``auto`` picks **bf16** on CPUs and on GPUs with native bf16 (compute capability >= 8.0:
  A100, RTX 30xx and newer), **fp16 + GradScaler** on older GPUs (GTX 10xx/16xx, RTX 20xx,
  V100), whose bf16 is emulated and slow. bf16 has fp32's exponent range, so it needs no loss
  scaling; fp16 does.
* The training step is written once: ``with amp.autocast(): ...`` then
  ``scaler.scale(loss).backward()``; with ``off`` both are no-ops.

Example:
    >>> import torch
    >>> amp = resolve_amp("auto", torch.device("cpu"))
    >>> amp.mode, amp.use_scaler
    ('bf16', False)
    >>> with amp.autocast():
    ...     y = torch.nn.Linear(2, 2)(torch.ones(1, 2))
    >>> y.dtype
    torch.bfloat16
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from partseg.errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class AmpSettings:
    """Resolved mixed-precision mode for one device type.

    Attributes:
        mode: ``"bf16"``, ``"fp16"`` or ``"off"``.
        device_type: ``"cpu"`` or ``"cuda"``.
    """

    mode: str
    device_type: str

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None when mixed precision is off."""
        return _DTYPES.get(self.mode)

    @property
    def use_scaler(self) -> bool:
        """fp16 needs loss scaling (its exponent range underflows small gradients)."""
        return self.mode == "fp16"

    def autocast(self) -> AbstractContextManager:
        """The autocast context of this mode (disabled when ``mode == "off"``)."""
        return torch.autocast(
            self.device_type, dtype=self.dtype or torch.bfloat16, enabled=self.enabled
        )

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16."""
        return torch.amp.GradScaler(self.device_type, enabled=self.use_scaler)


def supports_bf16(device: torch.device) -> bool:
    """True where bf16 is native: every CPU, and CUDA GPUs of compute capability >= 8.0."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        major, _minor = torch.cuda.get_device_capability(device)
        return major >= 8
    return False


def resolve_amp(mode: str, device: torch.device | str) -> AmpSettings:
    """Resolve ``train.amp`` for ``device``.

    Raises:
        ConfigError: unknown mode, or fp16/bf16 on a device type without autocast support.
    """
    device = torch.device(device)
    if mode not in ("auto", "bf16", "fp16", "off"):
        raise ConfigError(f"config key train.amp={mode!r}: use auto, bf16, fp16 or off")
    if device.type not in ("cpu", "cuda"):
        if mode in ("bf16", "fp16"):
            raise ConfigError(f"train.amp={mode!r} is not supported on {device}; use off")
        return AmpSettings("off", device.type)
    if mode == "auto":
        mode = "bf16" if supports_bf16(device) else "fp16"
    return AmpSettings(mode, device.type)
