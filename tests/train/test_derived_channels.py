"""``data.derived_channels`` end to end: train with the Sobel contour, then ``partseg predict``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from partseg.checkpoint import load_model
from partseg.cli import main
from partseg.config import load_config
from partseg.errors import ConfigError
from partseg.infer.predictor import predict_case
from partseg.store import open_store
from partseg.train.trainer import Trainer

SOBEL = ("data.derived_channels=[sobel:0]", "model.in_channels=3", "train.epochs=1")


def test_train_and_predict_with_a_sobel_channel(store: str, tiny_yaml: Path, tmp_path: Path):
    run, out = tmp_path / "run", tmp_path / "pred"
    assert main(["train", str(tiny_yaml), "--out", str(run), f"data.store={store}", *SOBEL]) == 0
    loaded = load_model(run)
    assert loaded.derived_channels == ("sobel:0",) and loaded.model.in_channels == 3
    assert loaded.derive is not None
    assert main(["predict", str(run), "--store", store, "--out", str(out), "--device", "cpu"]) == 0
    cases = open_store(store)
    for case in cases:
        labels = np.asarray(nib.load(out / f"{case.id}.nii.gz").dataobj).transpose(2, 1, 0)
        probs = predict_case(
            loaded.model, case, loaded.partition, loaded.layout, derive=loaded.derive
        )  # (K, Z, Y, X): the 3-channel model fed the store's 2 channels + Sobel
        np.testing.assert_array_equal(labels, probs.argmax(0))


def test_in_channels_mismatch_names_the_derived_channels(store: str, tiny_yaml: Path, tmp_path):
    config = load_config(tiny_yaml, [f"data.store={store}", "data.derived_channels=[sobel:1]"])
    with pytest.raises(ConfigError, match=r"derived \['sobel\(b\)'\].*set model\.in_channels=3"):
        Trainer(config, tmp_path, log=lambda _m: None).run()
    bad_source = [f"data.store={store}", "data.derived_channels=[sobel:2]", "model.in_channels=3"]
    with pytest.raises(ConfigError, match="reads channel 2 but the store has 2 channels"):
        Trainer(load_config(tiny_yaml, bad_source), tmp_path, log=lambda _m: None).run()


def test_unknown_derived_channel_is_a_config_error(tiny_yaml: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown derived channel 'vesselness'.*sobel"):
        load_config(tiny_yaml, ["data.derived_channels=[vesselness:0]"])
