"""The files of a run directory that are not checkpoints: metrics logs and JSON summaries.

``RUN/metrics.jsonl`` (appended) and ``RUN/metrics.csv`` (rewritten) hold one record per epoch;
``RUN/tensorboard/`` gets the numeric fields when tensorboard is installed. ``summary.json`` and
``validation.json`` are written atomically with :func:`write_run_json`.

Nothing is lost to a crash: the trainer appends an epoch's record before it writes that epoch's
checkpoints, and :meth:`MetricsLog.resume` keeps the records up to the checkpoint it resumes
from (the record of a later, interrupted epoch is written again when that epoch is redone; a
record missing from the log is taken from the checkpoint). :func:`clean_run_temps` removes the
temporary files a killed run left (``checkpoints/.last.pt.<random>.tmp``, ...).

Example:
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> check_writable(run)
    >>> log = MetricsLog(run)
    >>> log.append({"epoch": 0, "train_loss": 0.5})
    >>> (run / "metrics.csv").read_text().splitlines()
    ['epoch,train_loss', '0,0.5']
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from partseg.atomic import atomic_path, write_json, write_text
from partseg.errors import TrainingError


def check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and prove a file can be written there, before any work is done."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=run_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise TrainingError(
            f"run directory {run_dir} is not writable ({err.strerror or err}); choose another --out"
        ) from err


class MetricsLog:
    """``metrics.jsonl`` (appended) and ``metrics.csv`` (rewritten) of epoch records."""

    def __init__(self, run_dir: Path) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.records: list[dict[str, Any]] = []
        self.tensorboard = _tensorboard(run_dir / "tensorboard")

    def resume(self, last_epoch: int, last_record: dict[str, Any] | None = None) -> None:
        """Keep the records up to ``last_epoch`` (an interrupted epoch's line is dropped).

        Args:
            last_epoch: the epoch of the checkpoint training resumes from (-1: none).
            last_record: that checkpoint's own record, added when the log lacks it.
        """
        if self.jsonl.is_file():
            records = []
            for line in self.jsonl.read_text().splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:  # a line cut short by a kill while it was appended
                    continue
            by_epoch = {r.get("epoch", -1): r for r in records if isinstance(r, dict)}
            self.records = [r for e, r in sorted(by_epoch.items()) if e <= last_epoch]
        if last_record and last_epoch not in {r.get("epoch") for r in self.records}:
            self.records = sorted([*self.records, last_record], key=lambda r: r.get("epoch", -1))
        self._rewrite()

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        try:
            with self.jsonl.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            self._write_csv()
        except OSError as err:
            raise TrainingError(f"cannot write {self.jsonl}: {err.strerror or err}") from err
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "epoch":
                    self.tensorboard.add_scalar(key, value, record["epoch"])
            self.tensorboard.flush()

    def _rewrite(self) -> None:
        write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.records))
        self._write_csv()

    def _write_csv(self) -> None:
        columns = list(dict.fromkeys(k for r in self.records for k in r))
        with atomic_path(self.csv) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for record in self.records:
                writer.writerow({k: _scalar(v) for k, v in record.items()})


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(path))


#: Files of a run directory written through :mod:`partseg.atomic`, whose temporary files a
#: killed run may leave (checkpoints are in ``checkpoints/``).
RUN_FILES = ("config.yaml", "splits.json", "metrics.csv", "metrics.jsonl", "summary.json",
             "validation.json", "cost.json")  # fmt: skip
CHECKPOINT_FILES = ("last.pt", "best.pt")


def clean_run_temps(run_dir: Path) -> list[Path]:
    """Remove the temporary files of an earlier, killed run (call it holding the run's lock)."""
    from partseg.atomic import clean_temp_files

    return [
        *clean_temp_files(run_dir, RUN_FILES),
        *clean_temp_files(run_dir / "checkpoints", CHECKPOINT_FILES),
    ]


def json_safe(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` round-tripped through JSON (numpy / torch scalars become floats).

    Example:
        >>> import numpy as np
        >>> json_safe({"a": np.float32(0.5)})
        {'a': 0.5}
    """
    return json.loads(json.dumps(record, default=float))


def write_run_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as JSON; an OSError becomes a :class:`TrainingError`."""
    try:
        write_json(path, data)
    except OSError as err:
        raise TrainingError(f"cannot write {path}: {err.strerror or err}") from err


__all__: Sequence[str] = (
    "MetricsLog",
    "check_writable",
    "clean_run_temps",
    "json_safe",
    "write_run_json",
)
