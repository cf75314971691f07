"""Training / validation splits: a seeded hold-out or k-fold cross-validation.

Folds are drawn once from the sorted case ids with a seeded shuffle and stored as
``splits.json`` (a list of ``{"train": [...], "val": [...]}``, the layout nnU-Net uses), so a
fold run and a later ``partseg cv`` summary agree on which case was validated where.

Example:
    >>> folds = kfold_splits([f"c{i}" for i in range(5)], folds=5, seed=0)
    >>> len(folds), sorted(sum((f["val"] for f in folds), []))
    (5, ['c0', 'c1', 'c2', 'c3', 'c4'])
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from partseg.atomic import write_json
from partseg.config import DataConfig
from partseg.errors import ConfigError

Split = dict[str, list[str]]


def kfold_splits(case_ids: Sequence[str], folds: int, seed: int = 0) -> list[Split]:
    """Split cases into ``folds`` disjoint validation sets (sizes differ by at most one).

    Raises:
        ConfigError: fewer cases than folds.
    """
    ids = sorted(case_ids)
    if folds < 2 or len(ids) < folds:
        raise ConfigError(
            f"data.folds={folds}: {len(ids)} cases cannot form {folds} folds; "
            "use at most as many folds as cases (and at least 2)"
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    chunks = np.array_split(order, folds)
    splits = []
    for chunk in chunks:
        val = sorted(ids[i] for i in chunk)
        splits.append({"train": [c for c in ids if c not in val], "val": val})
    return splits


def drawn_val_count(cases: int, val_fraction: float, max_val_cases: int = 0) -> int:
    """How many of ``cases`` a seeded ``val_fraction`` split validates: at least one when the
    fraction is positive, at most ``cases - 1`` and at most ``max_val_cases`` (when set).

    Example:
        >>> drawn_val_count(10, 0.3), drawn_val_count(10, 0.3, 1), drawn_val_count(1, 0.5)
        (3, 1, 0)
    """
    if val_fraction <= 0 or cases < 2:
        return 0
    n_val = min(cases - 1, max(1, round(val_fraction * cases)))
    return min(n_val, max_val_cases or n_val)  # the cases not validated train


def holdout_split(data: DataConfig, case_ids: Sequence[str]) -> Split:
    """The non-CV split: explicit ``val_cases`` or a seeded ``val_fraction`` of the cases.

    A drawn split takes at most ``max_val_cases`` validation cases (when set): the cases it would
    not validate on train instead of sitting idle.

    Example:
        >>> from partseg.config import DataConfig
        >>> ids = [f"c{i}" for i in range(10)]
        >>> def sizes(**data):
        ...     return [len(s) for s in holdout_split(DataConfig(**data), ids).values()]
        >>> sizes(val_fraction=0.3), sizes(val_fraction=0.3, max_val_cases=1)
        ([7, 3], [9, 1])
    """
    ids = sorted(case_ids)
    missing = [c for c in (*data.val_cases, *data.train_cases) if c not in ids]
    if missing:
        raise ConfigError(
            f"data.val_cases / data.train_cases name cases not in the store: {missing[:5]}"
        )
    if data.val_cases:
        val = sorted(data.val_cases)
    elif (n_val := drawn_val_count(len(ids), data.val_fraction, data.max_val_cases)) > 0:
        order = np.random.default_rng(data.split_seed).permutation(len(ids))
        val = sorted(ids[i] for i in order[:n_val])
    else:
        val = []
    train = sorted(data.train_cases) if data.train_cases else [c for c in ids if c not in val]
    return {"train": train, "val": val}


def write_splits(path: str | os.PathLike, splits: list[Split]) -> None:
    """Write ``splits.json`` atomically."""
    write_json(path, splits)


def read_splits(path: str | os.PathLike) -> list[Split]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read splits file {path}: {err}; delete it to redraw") from err


def resolve_split(
    data: DataConfig, case_ids: Sequence[str], run_dir: str | os.PathLike | None = None
) -> Split:
    """This run's train / val case ids; with folds, read or write ``RUN/splits.json``.

    Raises:
        ConfigError: ``folds`` set without ``fold``, or a stored splits file that does not
            match the store's cases.
    """
    if not data.folds:
        return holdout_split(data, case_ids)
    if data.fold is None:
        raise ConfigError(f"data.folds={data.folds} needs data.fold (or --fold K)")
    path = Path(run_dir) / "splits.json" if run_dir is not None else None
    if path is not None and path.is_file():
        splits = read_splits(path)
        stored = sorted(case for s in splits for case in s["val"])
        if stored != sorted(case_ids) or len(splits) != data.folds:
            raise ConfigError(
                f"{path} was drawn for other cases or another number of folds; "
                "delete it or use a fresh run directory"
            )
    else:
        splits = kfold_splits(case_ids, data.folds, data.split_seed)
        if path is not None:
            write_splits(path, splits)
    return splits[data.fold]
