"""Progress on stderr: a bar on a terminal, plain lines otherwise.

One helper for every long command (ingest, phantom, plan, train, predict, compare): a tqdm bar
when the stream is a terminal; when it is redirected (a log file, CI, ``2> log``) a bar's
carriage returns would fill the log, so :class:`Progress` writes a plain line instead, at most
every ``interval`` seconds (``interval=0``: one line per update) and, with ``final=True``, one
when the work is done. ``enabled=False`` (``--no-progress``) shows nothing.

Example:
    >>> import io
    >>> log = io.StringIO()
    >>> with Progress(3, "ingest", unit="case", stream=log, interval=0) as bar:
    ...     for name in ("a", "b", "c"):
    ...         bar.update(note=name)
    >>> print(log.getvalue().splitlines()[-1])
    ingest: 3/3 case (100%), 0s, c
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """A tqdm bar on a terminal, throttled plain lines elsewhere, nothing when disabled.

    Args:
        total: the amount of work (cases, steps, measurements); None when unknown.
        desc: what is progressing, the start of every line (``epoch 3/10``, ``predict``).
        unit: the unit of ``total`` (``case``, ``step``).
        enabled: False shows nothing (``--no-progress``).
        stream: where to write (default ``sys.stderr``, read when the bar is made).
        interval: seconds between two plain lines (0: a line per update).
        final: write a plain line when the work is done (``update`` reaches ``total``).
        tty: force the terminal (True) or line (False) behaviour (default: ``stream.isatty()``).
    """

    def __init__(
        self,
        total: float | None,
        desc: str,
        *,
        unit: str = "it",
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 30.0,
        final: bool = True,
        tty: bool | None = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.final = float(interval), final
        self.done = 0.0
        self.start = self._last = time.perf_counter()
        self.bar: Any = None
        if enabled and (_isatty(self.stream) if tty is None else tty):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False,
                            dynamic_ncols=True)  # fmt: skip

    @property
    def lines(self) -> bool:
        """Whether this progress writes plain lines (enabled, not a terminal)."""
        return self.enabled and self.bar is None

    def update(self, n: float = 1, *, note: str = "") -> None:
        """Advance by ``n``; ``note`` (a loss, a case id) is shown beside the count."""
        self.set(self.done + n, note=note)

    def set(self, done: float, *, note: str = "") -> None:
        """Move to ``done`` (e.g. 2.4 cases: the fifth of a case within the third)."""
        step, self.done = done - self.done, done
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(step)
            return
        if not self.lines:
            return
        now = time.perf_counter()
        finished = self.total is not None and done >= self.total
        if (finished and self.final) or (not finished and now - self._last >= self.interval):
            self._last = now
            self.write(self.describe(note))

    def describe(self, note: str = "") -> str:
        """``desc: done/total unit (percent), elapsed, note``."""
        count = _number(self.done)
        if self.total:
            count += f"/{_number(self.total)} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            count += f" {self.unit}"
        parts = [count, format_seconds(time.perf_counter() - self.start), note]
        return f"{self.desc}: {', '.join(p for p in parts if p)}"

    def write(self, message: str) -> None:
        """A line of its own (above the bar on a terminal); shown even when not enabled."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``.

    Example:
        >>> format_seconds(42.4), format_seconds(187), format_seconds(7500)
        ('42s', '3m07s', '2h05m')
    """
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


__all__ = ["Progress", "format_seconds"]
