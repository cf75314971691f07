"""Training and validating a one-output-channel (sigmoid) model on a 2-class store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from partseg.checkpoint import load_model
from partseg.config import load_config
from partseg.geometry import Box
from partseg.infer.engine import predict_layerwise, trained_border
from partseg.losses import build_loss
from partseg.store.zarrstore import open_store
from partseg.train.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory, store_writer) -> tuple[Path, str]:
    """Two dice_ce epochs of a model.out_channels=1 U-Net, validated after each epoch."""
    url = tmp_path_factory.mktemp("binary") / "b.zarr"
    store = store_writer(url, classes=("background", "lesion"))
    config = load_config(CONFIG, [f"data.store={store}", "model.out_channels=1"])
    out = tmp_path_factory.mktemp("binary_run")
    Trainer(config, out, log=lambda _m: None).run()
    return out, store


def test_one_channel_validation_dice_and_loss_come_from_thresholded_sigmoid(binary_run):
    run, store = binary_run
    record = records(run)[-1]
    loaded = load_model(run / "checkpoints" / "last.pt")  # the weights of the last validation
    assert int(loaded.model.out_channels) == 1
    opened = open_store(store)
    case_ids = list(json.loads((run / "validation.json").read_text())["cases"])
    assert case_ids
    dices, losses = [], []
    loss_fn = build_loss("dice_ce")
    for case_id in case_ids:
        case = opened[case_id]
        probs = predict_layerwise(
            loaded.model, case, loaded.layout, border=trained_border(loaded.partition)
        )  # (1, Z, Y, X), exact mode
        assert probs.shape == (1, *case.shape)
        assert probs.min() >= 0.0 and probs.max() <= 1.0 and not np.allclose(probs, 1.0)
        _, gt = case.read(Box.whole(case.shape))
        pred = probs[0] > 0.5
        truth = gt == 1
        denominator = pred.sum() + truth.sum()
        dices.append(2.0 * (pred & truth).sum() / denominator if denominator else 1.0)
        p = torch.from_numpy(probs).double().clamp(1e-7, 1 - 1e-7)
        logits = (torch.log(p) - torch.log1p(-p)).float()[None]  # (1, 1, Z, Y, X) logit(p)
        target = torch.from_numpy(gt.astype(np.int64))[None]
        with torch.no_grad():
            losses.append(float(loss_fn(logits, target, torch.ones_like(target, dtype=bool))))
    assert 0.0 < float(np.mean(dices)) < 1.0  # a real threshold, neither empty nor everything
    assert record["val_dice"] == pytest.approx(float(np.mean(dices)), abs=1e-6)
    assert record["val_dice_lesion"] == pytest.approx(float(np.mean(dices)), abs=1e-6)
    assert record["val_loss"] == pytest.approx(float(np.mean(losses)), abs=1e-4)
