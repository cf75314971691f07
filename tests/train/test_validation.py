"""Validation loss from stitched full-volume inference, and its curve in the compare report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from partseg.checkpoint import load_model
from partseg.config import load_config
from partseg.geometry import Box
from partseg.infer.engine import predict_layerwise, trained_border
from partseg.losses import AdaptiveTverskyCELoss, DeepSupervisionLoss, build_loss
from partseg.store.zarrstore import open_store
from partseg.train.trainer import Trainer
from partseg.train.validation import stitched_logits, validation_loss

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def tiny(store: str, *overrides: str):
    return load_config(CONFIG, [f"data.store={store}", *overrides])


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def val_case_ids(run: Path) -> list[str]:
    return list(json.loads((run / "validation.json").read_text())["cases"])


def loss_by_hand(loss_fn: torch.nn.Module, run: Path, store: str) -> float:
    """Mean over the validation cases of the loss on log(exact-mode probabilities) of last.pt."""
    loaded = load_model(run / "checkpoints" / "last.pt")  # a run dir would give best.pt
    opened = open_store(store)
    values = []
    for case_id in val_case_ids(run):
        case = opened[case_id]
        probs = predict_layerwise(
            loaded.model, case, loaded.layout, border=trained_border(loaded.partition)
        )  # (K, Z, Y, X), exact mode
        _, label = case.read(Box.whole(case.shape))
        logits = torch.log(torch.from_numpy(probs).clamp_min(1e-7))[None]  # (1, K, Z, Y, X)
        target = torch.from_numpy(label.astype(np.int64))[None]  # (1, Z, Y, X)
        with torch.no_grad():
            values.append(float(loss_fn(logits, target, torch.ones_like(target, dtype=bool))))
    return float(np.mean(values))


@pytest.fixture(scope="module")
def run(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three dice_ce epochs validated after epochs 2 and 3 (val_every=2, and the last)."""
    out = tmp_path_factory.mktemp("val_run")
    Trainer(tiny(store, "train.epochs=3", "train.val_every=2"), out, log=lambda _m: None).run()
    return out


def test_val_loss_logged_at_validation_epochs(run: Path, store: str) -> None:
    recs = records(run)
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert "val_loss" not in recs[0] and "val_dice" not in recs[0]
    for record in recs[1:]:
        assert math.isfinite(record["val_loss"]) and record["val_loss"] > 0.0
    by_hand = loss_by_hand(build_loss("dice_ce"), run, store)  # last.pt = the epoch-3 weights
    assert recs[-1]["val_loss"] == pytest.approx(by_hand, abs=1e-5)
    with (run / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert "val_loss" in rows[0] and rows[0]["val_loss"] == ""
    assert float(rows[2]["val_loss"]) == pytest.approx(recs[2]["val_loss"])


def test_report_loss_plot_draws_val_loss(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from partseg import report

    figures: list[Any] = []
    real_save = report.plots._save
    monkeypatch.setattr(
        report.plots, "_save", lambda fig, path: (figures.append(fig), real_save(fig, path))[1]
    )
    path = report.plot_loss_curves({"tiny": [records(run)]}, run / "loss.png")
    assert path.is_file()
    (fig,) = figures
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert set(panels) == {title for title, _ in report.CURVES}
    (line,) = panels["validation loss"].get_lines()
    np.testing.assert_array_equal(line.get_xdata(), [2.0, 3.0])  # epochs 1-based
    expected = [r["val_loss"] for r in records(run)[1:]]
    np.testing.assert_allclose(line.get_ydata(), expected)


def test_adaptive_loss_weights_ignore_validation(store: str, tmp_path: Path) -> None:
    common = ("loss.name=adaptive_tversky_ce", "model.deep_supervision=true", "train.epochs=2")
    validated, plain = tmp_path / "val", tmp_path / "plain"
    Trainer(tiny(store, *common), validated, log=lambda _m: None).run()
    Trainer(tiny(store, *common, "train.val_every=0"), plain, log=lambda _m: None).run()
    with_val, without_val = records(validated), records(plain)
    for a, b in zip(with_val, without_val, strict=True):
        assert a["loss_weights"] == b["loss_weights"]  # validation fed no epoch statistics
    # epoch 2 validated with the weights set at the end of epoch 1, without the DS wrapper
    loss = AdaptiveTverskyCELoss()
    weights = with_val[0]["loss_weights"]
    loss.weights.copy_(torch.tensor([weights["tversky"], weights["ce"]], dtype=torch.float64))
    by_hand = loss_by_hand(loss.eval(), validated, store)
    assert with_val[1]["val_loss"] == pytest.approx(by_hand, abs=1e-5)


def test_validation_loss_leaves_adaptive_statistics_and_mode_alone() -> None:
    loss = DeepSupervisionLoss(AdaptiveTverskyCELoss())  # training mode, grad enabled
    probs = np.random.default_rng(0).dirichlet(np.ones(3), (4, 4, 4)).astype(np.float32)
    probs = np.moveaxis(probs, -1, 0)  # (K=3, 4, 4, 4)
    label = np.arange(64).reshape(4, 4, 4) % 3
    value = validation_loss(loss, probs, label.astype(np.uint8))
    assert math.isfinite(value)
    assert int(loss.loss.count) == 0 and float(loss.loss.sums.abs().sum()) == 0.0
    assert loss.training and loss.loss.training


@pytest.mark.parametrize("k", [1, 3])
def test_stitched_logits_give_the_loss_of_the_original_logits(k: int) -> None:
    logits = torch.randn(1, k, 3, 4, 5, generator=torch.Generator().manual_seed(k))
    target = torch.arange(60).reshape(1, 3, 4, 5) % max(k, 2)
    probs = torch.sigmoid(logits[0]) if k == 1 else torch.softmax(logits[0], 0)  # (K, 3, 4, 5)
    loss = build_loss("dice_ce")
    expected = float(loss(logits, target))
    assert float(loss(stitched_logits(probs), target)) == pytest.approx(expected, abs=1e-5)
    value = validation_loss(loss, probs.numpy(), target[0].numpy().astype(np.uint8))
    assert value == pytest.approx(expected, abs=1e-5)


def test_checkpoint_records_the_training_store_ingest_settings(store_writer, tmp_path: Path):
    from partseg.store.ingest import IngestSettings
    from partseg.store.writer import StoreWriter

    url = store_writer(tmp_path / "s.zarr", n_cases=2)
    recorded = IngestSettings(normalize="none", spacing=(2.0, 1.0, 1.0)).recorded()
    writer = StoreWriter(url)
    writer.write_index({**writer.index(), "ingest": recorded})
    run = tmp_path / "run"
    Trainer(tiny(url, "train.epochs=1", "train.val_every=0"), run, log=lambda _m: None).run()
    assert load_model(run).ingest == recorded  # predict --input ingests raw data alike
