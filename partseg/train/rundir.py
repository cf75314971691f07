"""The files of a run directory that are not checkpoints, and what a rerun does with them.

``RUN/metrics.jsonl`` (appended) and ``RUN/metrics.csv`` (rewritten) hold one record per epoch,
epochs counted from 1 as on the console (record ``epoch: 3`` is the third epoch);
``RUN/progress.png`` (rewritten atomically, like nnU-Net's, after an epoch when the last plot is
at least ``PLOT_EVERY_S`` old, and when training ends: a plot costs ~0.2 s, which short epochs
must not pay every time) plots the training and validation loss and the validation Dice;
``RUN/tensorboard/`` gets the numeric fields when the ``tensorboard`` package is installed
(``tensorboard --logdir runs``). ``summary.json`` and
``validation.json`` are written atomically with :func:`write_run_json`.

Nothing is lost to a crash: the trainer appends an epoch's record before it writes that epoch's
checkpoints, and :meth:`MetricsLog.resume` keeps the records up to the checkpoint it resumes
from (the record of a later, interrupted epoch is written again when that epoch is redone; a
record missing from the log is taken from the checkpoint). :func:`clean_run_temps` removes the
temporary files a killed run left (``checkpoints/.last.pt.<random>.tmp``, ...).

A rerun of the same command resumes: :func:`run_state` tells an empty folder, a run of the same
config to resume, a finished run, and refuses a run of another config (naming the keys that
differ); :func:`clear_outputs` empties a folder for ``--overwrite``.

Example:
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> check_writable(run)
    >>> log = MetricsLog(run, plot=False)
    >>> log.append({"epoch": 1, "train_loss": 0.5})
    >>> (run / "metrics.csv").read_text().splitlines()
    ['epoch,train_loss', '1,0.5']
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from partseg.atomic import atomic_path, write_json, write_text
from partseg.errors import ConfigError, TrainingError


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


#: Seconds between two rewrites of ``progress.png`` during training.
PLOT_EVERY_S = 30.0


class MetricsLog:
    """``metrics.jsonl`` (appended), ``metrics.csv`` and ``progress.png`` (rewritten) of epoch
    records; ``plot=False`` skips the PNG; :meth:`close` writes what is not plotted yet."""

    def __init__(self, run_dir: Path, *, plot: bool = True) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.png = run_dir / "progress.png" if plot else None
        self.records: list[dict[str, Any]] = []
        self.tensorboard = _tensorboard(run_dir / "tensorboard")
        self._plotted_at: float | None = None  # monotonic time of the last plot
        self._unplotted = False

    def resume(self, last_epoch: int, last_record: dict[str, Any] | None = None) -> None:
        """Keep the records up to ``last_epoch`` (an interrupted epoch's line is dropped).

        Args:
            last_epoch: the epoch of the checkpoint training resumes from (0: none).
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
        self._unplotted = True
        now = time.monotonic()
        if self._plotted_at is None or now - self._plotted_at >= PLOT_EVERY_S:
            self._plot(now)
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "epoch":
                    self.tensorboard.add_scalar(key, value, record["epoch"])
            self.tensorboard.flush()

    def close(self) -> None:
        """Plot the records not plotted yet and close TensorBoard's writer."""
        if self._unplotted:
            self._plot(time.monotonic())
        if self.tensorboard is not None:
            self.tensorboard.close()

    def _plot(self, now: float) -> None:
        if self.png is not None:
            plot_progress(self.records, self.png)
        self._plotted_at, self._unplotted = now, False

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


def plot_progress(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``progress.png``: training / validation loss and validation Dice per epoch (atomic)."""
    from partseg.report import plot_loss_curves

    try:
        return plot_loss_curves({path.parent.name: [list(records)]}, path)
    except OSError as err:
        raise TrainingError(f"cannot write {path}: {err.strerror or err}") from err


#: Files of a run directory written through :mod:`partseg.atomic`, whose temporary files a
#: killed run may leave (checkpoints are in ``checkpoints/``).
RUN_FILES = ("config.yaml", "splits.json", "metrics.csv", "metrics.jsonl", "summary.json",
             "validation.json", "cost.json", "progress.png")  # fmt: skip
CHECKPOINT_FILES = ("last.pt", "best.pt")
#: What ``--overwrite`` removes from a run directory.
RUN_OUTPUTS = (*RUN_FILES, "checkpoints", "tensorboard", "evaluation")

#: Config keys that do not change a run's results (a rerun may change them and still resume).
VOLATILE = {("train", "progress"), ("train", "workers"), ("train", "device")}


def comparable(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict without the :data:`VOLATILE` keys, as two runs of one job agree on it.

    Example:
        >>> comparable({"train": {"epochs": 2, "progress": False}})
        {'train': {'epochs': 2}}
    """
    data = json.loads(json.dumps(raw, default=list))
    for section, key in VOLATILE:
        data.get(section, {}).pop(key, None)
    return data


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ, as ``key: old -> new``.

    Example:
        >>> differences({"train": {"epochs": 2}}, {"train": {"epochs": 3}})
        ['train.epochs: 2 -> 3']
    """
    found = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


def run_state(run_dir: Path, config: Mapping[str, Any], *, resume: bool = False) -> str:
    """What ``run_dir`` holds for a run of ``config`` (its ``to_dict()``).

    Args:
        run_dir: the run directory.
        config: the config of the run asked for.
        resume: ``--resume``: continue from ``checkpoints/last.pt`` even when training
            settings changed (more epochs, another learning rate); the trainer still refuses
            another model.

    Returns:
        ``"empty"`` (no checkpoint: train from the start), ``"resume"`` (a run of this config
        was interrupted, or ``resume``: continue from ``checkpoints/last.pt``) or
        ``"finished"`` (``summary.json`` written, or ``resume`` with every epoch done).

    Raises:
        ConfigError: the folder holds a run of another config and ``resume`` is not set (the
            message names the keys that differ, ``--resume`` and ``--overwrite``).
    """
    last, summary = run_dir / "checkpoints" / "last.pt", run_dir / "summary.json"
    if resume:  # a missing last.pt is the trainer's error ("cannot resume")
        return "finished" if _epochs_done(last) >= int(config["train"]["epochs"]) else "resume"
    if not last.is_file() and not summary.is_file():
        return "empty"
    changed = config_changes(run_dir, config)
    if changed:
        shown = "; ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
        raise ConfigError(
            f"{run_dir} holds a run of another config ({shown}); rerun with the same config to "
            "resume it, --resume to continue it with these settings, --overwrite to replace it, "
            "or choose another --out"
        )
    return "finished" if summary.is_file() else "resume"


def _epochs_done(last: Path) -> int:
    """Epochs ``last.pt`` holds (0 without it)."""
    if not last.is_file():
        return 0
    from partseg.checkpoint import load_checkpoint

    return int(load_checkpoint(last).get("epoch", -1)) + 1


def config_changes(run_dir: Path, config: Mapping[str, Any]) -> list[str]:
    """How ``config`` differs from the run's ``config.yaml`` (none: the same job, or no file).

    The stored config is read through the schema first, so a key partseg added since (with
    its default) is no change; :data:`VOLATILE` keys are ignored.
    """
    import yaml

    from partseg.config import config_from_dict

    stored = run_dir / "config.yaml"
    if not stored.is_file():
        return []
    raw = yaml.safe_load(stored.read_text()) or {}
    with contextlib.suppress(ConfigError):  # a key partseg no longer knows: compare as written
        raw = config_from_dict(raw).to_dict()
    return differences(comparable(raw), comparable(config))


def clear_outputs(folder: Path, names: Sequence[str], command: str) -> list[Path]:
    """Remove ``names`` (files or folders) from ``folder`` holding its lock (``--overwrite``).

    Only partseg's own outputs are named, so nothing else in the folder is touched.

    Example:
        >>> import tempfile, pathlib
        >>> run = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (run / "metrics.csv").write_text("epoch")
        >>> [p.name for p in clear_outputs(run, RUN_OUTPUTS, "train")]
        ['metrics.csv']
    """
    from partseg.locking import run_lock

    removed = []
    if not folder.is_dir():
        return removed
    with run_lock(folder, command):
        for name in names:
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(path)
    return removed


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
    "RUN_OUTPUTS",
    "VOLATILE",
    "MetricsLog",
    "check_writable",
    "clean_run_temps",
    "clear_outputs",
    "comparable",
    "config_changes",
    "differences",
    "json_safe",
    "plot_progress",
    "run_state",
    "write_run_json",
)
