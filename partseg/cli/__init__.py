"""The ``partseg`` console script: one subcommand per module in this package.

Each subcommand module defines ``add_parser(subparsers)``, which registers its parser and sets
``func`` to a callable taking the parsed namespace and returning an exit status. Modules import
heavy dependencies (torch, zarr) inside that callable so ``partseg --help`` stays fast.

Errors: a :class:`~partseg.errors.PartsegError` becomes one line on stderr and exit status 2;
so does any ``OSError`` that reaches :func:`main` (a full disk, a read-only folder, a path under
a file), with its file name and what to do. Numeric options are range-checked at parse time,
and the flags commands share (``--json``, ``--no-progress``, ``--device``, ``--amp``,
``--overwrite``) come from one builder each (:mod:`partseg.cli.options`).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from partseg import __version__
from partseg.errors import PartsegError

#: errno values of failed writes (the others are reported as failed access).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EEXIST, errno.EISDIR}

#: Subcommands in the order ``--help`` lists them.
COMMANDS = (
    "demo",
    "phantom",
    "ingest",
    "info",
    "plan",
    "train",
    "cv",
    "predict",
    "evaluate",
    "compare",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="partseg",
        description="Train 2D/3D U-Nets on large medical volumes with minicube partitions, "
        "on a small GPU or a CPU, and stitch seam-free full-volume predictions.",
    )
    parser.add_argument("--version", action="version", version=f"partseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"partseg.cli.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``partseg`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for train --nproc
    _log_to_stderr(args.command)
    try:
        status = args.func(args)
    except PartsegError as err:
        print(f"partseg {args.command}: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:  # last resort: the write helpers and the store writer name more
        from partseg.atomic import os_error_message

        verb = "write" if err.errno in _WRITE_ERRNOS else "access"
        where = err.filename if err.filename is not None else _destination(args)
        message = os_error_message(err, where, verb=verb)
        print(f"partseg {args.command}: error: {message}", file=sys.stderr)
        return 2
    except MemoryError as err:  # numpy names the size it could not allocate
        print(
            f"partseg {args.command}: error: out of memory ({err or 'no details'}); use smaller "
            "sizes (shape, core, batch) or a machine with more memory",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        from partseg.cli.options import RESUMING_COMMANDS

        hint = "; rerun the same command to resume" if args.command in RESUMING_COMMANDS else ""
        print(f"partseg {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    return int(status or 0)


def _destination(args: argparse.Namespace) -> str | None:
    """Where the command writes (``--out``, STORE, ``--json``), named when an OSError has no
    file name (a failed ``write()`` has none)."""
    for name in ("out", "store", "json", "csv"):
        value = getattr(args, name, None)
        if isinstance(value, str | os.PathLike) and os.fspath(value) not in ("", "-"):
            return f"under {os.fspath(value)}"
    return None


def one_line(text: str) -> str:
    r"""``text`` on one line: messages quoting a YAML or torch error keep their words only.

    Example:
        >>> one_line("bad YAML: while parsing\n  in line 1\n    ^")
        'bad YAML: while parsing | in line 1 | ^'
    """
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (a redirected or captured one included)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # logging must never raise; it reports instead
            self.handleError(record)


def _log_to_stderr(command: str) -> None:
    """Library notes (logger ``partseg``, e.g. the precision ``auto`` chose) go to stderr,
    prefixed by the running command (also when one process runs several, as the benchmarks do).
    """
    logger = logging.getLogger("partseg")
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    handler.setFormatter(logging.Formatter(f"partseg {command}: %(message)s"))


if __name__ == "__main__":
    sys.exit(main())
