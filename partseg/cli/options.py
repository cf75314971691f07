"""Argparse ``type=`` functions for numeric options, shared by every subcommand.

An out-of-range value (``--workers -1``, ``--cases 0``, ``--clevel 12``) is refused when the
command line is parsed, with argparse's usual one-line usage error and exit status 2, before any
work starts.

Example:
    >>> positive_int("4")
    4
    >>> nonnegative_int("-1")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: expected a whole number >= 0, got '-1'
    >>> int_range(1, 9)("12")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: expected a whole number in 1..9, got '12'
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _whole(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """A ``type=`` function accepting whole numbers in ``low..high`` (no upper bound: None)."""
    what = f"a whole number >= {low}" if high is None else f"a whole number in {low}..{high}"

    def parse(text: str) -> int:
        value = _whole(text, what)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in its own messages
    return parse


#: Whole numbers >= 1 (counts, sizes) and >= 0 (seeds, indices).
positive_int = int_range(1)
nonnegative_int = int_range(0)


def positive_float(text: str) -> float:
    """A finite number > 0 (sizes in mm, seconds)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def safe_name(text: str) -> str:
    """A name that becomes a file or folder name: one safe path component
    (:func:`partseg.names.name_problem`)."""
    from partseg.names import name_problem

    problem = name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a safe file name: {problem}")
    return text


__all__ = ["int_range", "nonnegative_int", "positive_float", "positive_int", "safe_name"]
