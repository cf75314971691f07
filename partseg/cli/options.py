"""The shared vocabulary of the ``partseg`` commands: numeric range types and flag builders.

Numeric ``type=`` functions: an out-of-range value (``--workers -1``, ``--count 0``,
``--clevel 12``) is refused when the command line is parsed, with argparse's usual one-line usage
error and exit status 2, before any work starts.

Flag builders: every subcommand that has ``--json``, ``--no-progress``, ``--device``, ``--amp``,
``--overwrite`` or a label option gets it from one function here, so the flag is spelled, parsed
and explained alike everywhere (:data:`VOCABULARY` lists them; ``docs/user_guide.md`` has the
table; ``tests/test_cli_vocabulary.py`` checks every command against it). A renamed flag keeps
its old spelling as a hidden alias that still works and prints a note (:func:`add_deprecated`).

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
import sys
from collections.abc import Callable, Sequence
from typing import Any


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


def _number(text: str) -> float:
    """``float(text)``, or NaN when it is not a number (which every range check refuses)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def fold_numbers(text: str) -> list[int]:
    """``--fold 0,2`` (compare, cv): the folds to run, numbered from 0, in the order given.

    Example:
        >>> fold_numbers("2,0")
        [2, 0]
        >>> fold_numbers("one")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: give fold numbers such as 0 or 0,2, got 'one'
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"give fold numbers such as 0 or 0,2, got {text!r}")
    return [int(p) for p in parts]


def positive_float(text: str) -> float:
    """A finite number > 0 (sizes in mm, seconds)."""
    value = _number(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def share(text: str) -> float:
    """A finite share in [0, 1) (a part of a budget kept free)."""
    value = _number(text)
    if not (math.isfinite(value) and 0 <= value < 1):
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1), e.g. 0.1, got {text!r}")
    return value


def memory_size(text: str) -> str:
    """A ``--gpu-mem`` budget (``4GiB``, ``4GB``, ``4096MiB``, ``6g``) larger than zero; the text
    is kept for the logs (:func:`partseg.train.estimate.parse_size` reads it).

    Example:
        >>> memory_size("0GiB")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: expected a memory budget > 0 such as 4GiB, got '0GiB'
    """
    from partseg.errors import ConfigError
    from partseg.train.estimate import parse_size

    try:
        size = parse_size(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"expected a memory budget > 0 such as 4GiB, got {text!r}")
    return text


def safe_name(text: str) -> str:
    """A name that becomes a file or folder name: one safe path component
    (:func:`partseg.names.name_problem`)."""
    from partseg.names import name_problem

    problem = name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a safe file name: {problem}")
    return text


# ------------------------------------------------------------------------------ vocabulary

#: The shared flags and what each means on every command that has it (the user guide's table).
VOCABULARY: dict[str, str] = {
    "--json": "machine-readable output: the command's result as JSON on stdout (notes, logs "
    "and progress go to stderr)",
    "--no-progress": "no progress on stderr (default: a bar on a terminal, a plain line every "
    "30 s when stderr is redirected)",
    "--device": "where the network runs: auto (a CUDA GPU when one is visible, else the CPU), "
    "cpu, cuda or cuda:N",
    "--amp": "autocast precision: auto, bf16, fp16 or off (fp32)",
    "--overwrite": "start again, replacing what an earlier run of a different (or the same) "
    "job left in the output; without it a rerun resumes the same job and refuses another one",
}

#: Commands that run long enough to resume and to show progress.
LONG_COMMANDS = ("demo", "phantom", "ingest", "plan", "train", "cv", "predict", "compare")
#: Commands that write an output folder and resume it when rerun (``--overwrite`` starts over).
RESUMING_COMMANDS = ("demo", "phantom", "ingest", "train", "cv", "predict", "compare")


def add_json(p: argparse.ArgumentParser, what: str, *, legacy_file: bool = False) -> None:
    """``--json``: print ``what`` as JSON on stdout instead of text.

    ``legacy_file=True`` (``evaluate``) still reads the old ``--json FILE`` as ``--json-out
    FILE``, with a note; ``--json-out FILE`` is then the way to write the file.
    """
    text = f"print {what} as JSON on stdout instead of text; notes go to stderr (default: text)"
    if not legacy_file:
        p.add_argument("--json", action="store_true", help=text)
        return
    text += "; --json FILE (deprecated) = --json-out FILE"
    p.add_argument("--json", nargs="?", const=True, default=False, action=_JsonOrFile,
                   metavar="FILE", help=text)  # fmt: skip
    p.add_argument(
        "--json-out", metavar="FILE", default=None, help="write the JSON to FILE (default: none)"
    )


class _JsonOrFile(argparse.Action):
    """``--json`` alone: JSON on stdout; ``--json FILE``: the deprecated spelling of --json-out."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        if values is True:
            namespace.json = True
            return
        deprecation_note(parser, "--json FILE", f"--json-out {values}")
        namespace.json_out = values


def add_no_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bar or lines on stderr."""
    p.add_argument("--no-progress", action="store_true", help=VOCABULARY["--no-progress"])


def device_name(text: str) -> str:
    """A ``--device`` value: auto, cpu, cuda or cuda:N (:func:`partseg.devices.check_device_name`).

    Example:
        >>> device_name("cuda:1")
        'cuda:1'
    """
    from partseg.devices import check_device_name
    from partseg.errors import ConfigError

    try:
        return check_device_name(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_device(p: argparse.ArgumentParser, *, default: str | None = "auto", note: str = "") -> None:
    """``--device``: where the network runs (``default=None``: the config's ``train.device``)."""
    shown = "the config's train.device" if default is None else default
    p.add_argument(
        "--device",
        type=device_name,
        default=default,
        metavar="DEVICE",
        help=f"{VOCABULARY['--device']}{note} (default: {shown})",
    )


def add_amp(p: argparse.ArgumentParser, *, default: str | None, note: str = "") -> None:
    """``--amp {auto,bf16,fp16,off}`` (``default=None``: the config's ``train.amp``)."""
    from partseg.precision_modes import PRECISION_MODES

    shown = "the config's train.amp" if default is None else default
    p.add_argument(
        "--amp",
        choices=PRECISION_MODES,
        default=default,
        help=f"{VOCABULARY['--amp']}: auto = bf16 where native, fp16 + GradScaler on older "
        f"GPUs, fp32 on CPUs without native bf16{note} (default: {shown})",
    )


def add_overwrite(p: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: replace ``what`` instead of resuming (or refusing a different job)."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} and start again (default: a rerun of the same command resumes; "
        "a different job in the same folder is refused)",
    )


def add_deprecated(
    p: argparse.ArgumentParser, old: str, new: str, *, dest: str, flag: bool = False, **kwargs: Any
) -> None:
    """A hidden old spelling ``old`` of ``new`` that still works and prints a note on stderr.

    ``flag=True``: an old flag without a value (e.g. ``--resume``, which is the default now).
    """
    if flag:
        kwargs.setdefault("nargs", 0)
    p.add_argument(old, dest=dest, action=_Deprecated, new=new, flag=flag, help=argparse.SUPPRESS,
                   **kwargs)  # fmt: skip


class _Deprecated(argparse.Action):
    def __init__(self, *args: Any, new: str, flag: bool = False, **kwargs: Any) -> None:
        self.new, self.flag = new, flag
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        deprecation_note(parser, option_string or self.dest, self.new)
        setattr(namespace, self.dest, True if self.flag else values)


def deprecation_note(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """``partseg <command>: note: OLD is deprecated; use NEW`` on stderr."""
    print(f"{parser.prog}: note: {old} is deprecated; use {new}", file=sys.stderr)


# ------------------------------------------------------------------------------ labels
# One syntax for labels: lists are space-separated values (--labels 0 1 2 4, --classes
# background edema ...), maps are space-separated KEY=VALUE pairs (--label-names 1=aneurysm,
# --label-map 0=0 1=1 2=2 4=3).


def value_name(text: str) -> tuple[int, str]:
    """``VALUE=NAME`` (``--label-names 1=aneurysm``).

    Example:
        >>> value_name("4=enhancing")
        (4, 'enhancing')
    """
    value, sep, name = text.partition("=")
    if not sep or not value.strip().lstrip("-").isdigit() or not name.strip():
        raise argparse.ArgumentTypeError(f"expected VALUE=NAME such as 1=aneurysm, got {text!r}")
    return int(value), name.strip()


def value_class(text: str) -> list[tuple[int, int]]:
    """``VALUE=ID`` (``--label-map 4=3``); the old ``0:0,1:1,4:3`` form is still read.

    Example:
        >>> value_class("4=3"), value_class("0:0,4:3")
        ([(4, 3)], [(0, 0), (4, 3)])
    """
    items = text.split(",") if ":" in text else [text]
    pairs = []
    for item in items:
        value, sep, cls = item.replace(":", "=").partition("=")
        try:
            pairs.append((int(value), int(cls)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected VALUE=ID pairs such as 0=0 1=1 2=2 4=3, got {text!r}"
            ) from None
        if not sep:
            raise argparse.ArgumentTypeError(f"expected VALUE=ID such as 4=3, got {text!r}")
    return pairs


def label_map_text(values: Sequence[list[tuple[int, int]]] | None) -> str | None:
    """``--label-map`` values as the ``"0:0,4:3"`` text the evaluation reads (None: not given).

    Example:
        >>> label_map_text([[(0, 0)], [(4, 3)]])
        '0:0,4:3'
    """
    if not values:
        return None
    return ",".join(f"{v}:{c}" for pairs in values for v, c in pairs)


__all__ = [
    "LONG_COMMANDS",
    "RESUMING_COMMANDS",
    "VOCABULARY",
    "add_amp",
    "add_deprecated",
    "add_device",
    "add_json",
    "add_no_progress",
    "add_overwrite",
    "deprecation_note",
    "device_name",
    "int_range",
    "label_map_text",
    "memory_size",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "safe_name",
    "value_class",
    "value_name",
]
