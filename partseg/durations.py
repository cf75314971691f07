"""Durations as people type them: ``90s``, ``60m`` (or ``60min``), ``1.5h``, or plain seconds.

Used by ``train.budget`` / ``--budget`` (the config validates it, so this sits below the config).

Example:
    >>> parse_duration("1.5h"), format_duration(5400)
    (5400.0, '90m')
"""

from __future__ import annotations

import math
import re

from partseg.errors import ConfigError

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m|min|h)?\s*$", re.IGNORECASE)


def parse_duration(value: str | float | int) -> float:
    """Seconds of a duration: ``90s``, ``60m`` (or ``60min``), ``1.5h``, or a number of seconds.

    Raises:
        ConfigError: not a positive duration.

    Example:
        >>> parse_duration("60m"), parse_duration("2.5")
        (3600.0, 2.5)
    """
    if isinstance(value, bool):
        raise ConfigError(f"budget {value!r}: give a duration such as 90s, 60m or 1.5h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"budget {value!r}: give a duration such as 90s, 60m or 1.5h")
        seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"budget {value!r}: the duration must be positive")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form of ``seconds``.

    Example:
        >>> format_duration(3600), format_duration(90), format_duration(5400), format_duration(12.5)
        ('60m', '90s', '90m', '12.5s')
    """
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
