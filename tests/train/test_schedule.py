"""Learning-rate schedules and k-fold splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from partseg.config import DataConfig, ScheduleConfig
from partseg.errors import ConfigError
from partseg.train.schedule import LrSchedule
from partseg.train.splits import holdout_split, kfold_splits, resolve_split


def schedule(name: str, epochs: int = 10, **kw) -> LrSchedule:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    return LrSchedule(opt, ScheduleConfig(name, **kw), epochs)


def test_poly_cosine_constant_warmup() -> None:
    poly = schedule("poly")
    assert poly.lr_at(0) == pytest.approx(0.1)
    assert poly.lr_at(5) == pytest.approx(0.1 * 0.5**0.9)
    cosine = schedule("cosine", min_lr=0.01)
    assert cosine.lr_at(0) == pytest.approx(0.1) and cosine.lr_at(5) == pytest.approx(0.055)
    assert schedule("constant").lr_at(7) == pytest.approx(0.1)
    warm = schedule("constant", warmup_epochs=3)
    assert [round(warm.lr_at(e), 3) for e in range(5)] == [0.025, 0.05, 0.075, 0.1, 0.1]
    assert warm.start_epoch(1) == pytest.approx(0.05)
    assert warm.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_plateau_decays_and_round_trips() -> None:
    plateau = schedule("plateau", patience=1, factor=0.5)
    for metric in (0.5, 0.4, 0.4):  # best, then two without improvement
        plateau.observe(metric)
    assert plateau.lr_at(3) == pytest.approx(0.05)
    other = schedule("plateau", patience=1, factor=0.5)
    other.load_state_dict(plateau.state_dict())
    assert other.lr_at(3) == pytest.approx(0.05)


def test_kfold_is_seeded_disjoint_and_complete() -> None:
    ids = [f"c{i}" for i in range(11)]
    folds = kfold_splits(ids, 5, seed=3)
    assert folds == kfold_splits(list(reversed(ids)), 5, seed=3)
    vals = [c for f in folds for c in f["val"]]
    assert sorted(vals) == sorted(ids) and len(set(vals)) == 11
    assert all(set(f["train"]) == set(ids) - set(f["val"]) for f in folds)
    assert folds != kfold_splits(ids, 5, seed=4)
    with pytest.raises(ConfigError, match="cannot form 5 folds"):
        kfold_splits(ids[:3], 5)


def test_resolve_split_writes_and_checks_splits_json(tmp_path: Path) -> None:
    ids = [f"c{i}" for i in range(6)]
    data = DataConfig(folds=3, fold=2)
    split = resolve_split(data, ids, tmp_path)
    stored = json.loads((tmp_path / "splits.json").read_text())
    assert stored[2] == split
    with pytest.raises(ConfigError, match="other cases"):
        resolve_split(data, ids[:5], tmp_path)
    with pytest.raises(ConfigError, match=r"needs data\.fold"):
        resolve_split(DataConfig(folds=3), ids, tmp_path)


def test_holdout() -> None:
    ids = [f"c{i}" for i in range(10)]
    split = holdout_split(DataConfig(val_fraction=0.2, split_seed=1), ids)
    assert len(split["val"]) == 2 and sorted(split["train"] + split["val"]) == ids
    assert holdout_split(DataConfig(val_cases=("c3",)), ids)["val"] == ["c3"]
    with pytest.raises(ConfigError, match="not in the store"):
        holdout_split(DataConfig(val_cases=("x",)), ids)
