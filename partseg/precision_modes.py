"""The mixed-precision mode names (torch-free): ``train.amp`` and ``predict --amp`` accept them.

The one list of mode names, read by config validation (which must not import torch) and by
:mod:`partseg.precision`, which resolves a mode for a device.

Example:
    >>> PRECISION_MODES
    ('auto', 'bf16', 'fp16', 'off')
"""

from __future__ import annotations

__all__ = ["PRECISION_MODES"]

#: The modes every command and config accepts (``off`` is fp32).
PRECISION_MODES = ("auto", "bf16", "fp16", "off")
