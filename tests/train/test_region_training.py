"""Region-based training end to end: nnU-Net's BraTS dataset.json -> ingest -> a 1-epoch run
(one sigmoid per region, per-region validation) -> predict (labels by regions_class_order)
-> NIfTI in the dataset's label values, from a store or from a flat imagesTs folder."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import zarr

from partseg.checkpoint import load_checkpoint, load_model, save_checkpoint
from partseg.cli import main
from partseg.config import load_config
from partseg.geometry import Box
from partseg.infer.pipeline import CasePredictor
from partseg.infer.settings import PredictSettings
from partseg.infer.stitch import labels_from_regions
from partseg.losses import LossConfig
from partseg.store import open_store
from partseg.train.trainer import Trainer
from partseg.train.validation import validation_loss

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
SHAPE = (16, 16, 16)
IDS = ("r_00", "r_01", "r_02", "r_03")
#: nnU-Net's region form with non-contiguous values, so the export's value mapping shows.
LABELS = {"background": 0, "whole_tumor": [2, 4, 6], "tumor_core": [4, 6], "enhancing_tumor": 6}
ORDER = [2, 4, 6]
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _save(path: Path, zyx: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(np.ascontiguousarray(zyx.transpose(2, 1, 0)), AFFINE), str(path))


def _case(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Two channels and nested spheres: value 2 (r < 6), 4 (r < 4), 6 (r < 2)."""
    z, y, x = np.indices(SHAPE)
    centre = np.array(SHAPE) // 2 + np.random.default_rng(k).integers(-2, 3, 3)
    radius = np.sqrt(((np.stack([z, y, x]).T - centre) ** 2).sum(-1)).T
    label = np.select([radius < 2, radius < 4, radius < 6], [6, 4, 2], 0).astype(np.int16)
    rng = np.random.default_rng(100 + k)
    image = rng.normal(1.0, 0.2, (2, *SHAPE)).astype(np.float32) + (label > 0) * [
        [[[1.0]]],
        [[[2.0]]],
    ]
    return image.astype(np.float32), label


def write_raw(root: Path) -> Path:
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for k, case in enumerate(IDS):
        image, label = _case(k)
        for c in range(2):
            _save(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", image[c])
        _save(root / "labelsTr" / f"{case}.nii.gz", label)
    meta = {"channel_names": {"0": "T1", "1": "FLAIR"}, "labels": LABELS,
            "regions_class_order": ORDER, "file_ending": ".nii.gz"}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def write_flat(root: Path, ids=IDS[:2], channels: int = 2) -> Path:
    """nnU-Net's imagesTs: the same images, ``<id>_XXXX.nii.gz`` without dataset.json."""
    root.mkdir(parents=True)
    for case in ids:
        image, _ = _case(IDS.index(case))
        for c in range(channels):
            _save(root / f"{case}_{c:04d}.nii.gz", image[c % 2])
    return root


@pytest.fixture(scope="module")
def region_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(run, store): one epoch of tiny.yaml with in/out channels from the store."""
    root = tmp_path_factory.mktemp("regions")
    raw = write_raw(root / "raw")
    store = str(root / "s.zarr")
    assert main(["ingest", str(raw), store, "--no-progress"]) == 0
    config = load_config(CONFIG, [f"data.store={store}", "model.in_channels=null",
                                  "model.out_channels=null", "train.epochs=1"])  # fmt: skip
    Trainer(config, root / "run", log=lambda _m: None).run()
    return root / "run", store


def test_region_training_sigmoid_outputs_and_per_region_validation(region_run) -> None:
    run, store_path = region_run
    store = open_store(store_path)
    assert store.regions is not None and store.regions.labels == ((1, 2, 3), (2, 3), (3,))
    loaded = load_model(run / "checkpoints" / "last.pt")
    assert loaded.regions == store.regions
    assert (loaded.model_config.in_channels, loaded.model_config.out_channels) == (2, 3)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    names = ("whole_tumor", "tumor_core", "enhancing_tumor")
    dices = [record[f"val_dice_{name}"] for name in names]
    assert record["val_dice"] == pytest.approx(float(np.mean(dices)))
    report = json.loads((run / "validation.json").read_text())
    assert set(report["summary"]["regions"]) == set(names)
    assert report["hd95_convention"] == "max_directed"  # the report says how HD95 was taken
    # val_loss is the training loss (one sigmoid per region) on the stitched probabilities
    predictor = CasePredictor.from_checkpoints([run / "checkpoints" / "last.pt"],
                                               PredictSettings(device="cpu"))  # fmt: skip
    loss = LossConfig("dice_ce").build(regions=store.regions.labels)
    losses = []
    for case_id in report["cases"]:
        case = store[case_id]
        prediction = predictor.predict(case)
        np.testing.assert_array_equal(
            prediction.labels, labels_from_regions(prediction.probabilities, (1, 2, 3))
        )
        _, gt = case.read(Box.whole(case.shape))
        losses.append(validation_loss(loss, prediction.probabilities, gt, sigmoid=True))
    assert record["val_loss"] == pytest.approx(float(np.mean(losses)), rel=1e-4)


def _nifti(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0)


def test_labels_come_back_in_the_dataset_values_by_the_region_order(region_run, tmp_path) -> None:
    run, store_path = region_run
    payload = load_checkpoint(run / "checkpoints" / "last.pt")
    head = payload["model_state"]
    head["head.weight"] = torch.zeros_like(head["head.weight"])
    head["head.bias"] = torch.tensor([10.0, 10.0, -10.0])  # WT and TC certain, ET never
    save_checkpoint(tmp_path / "fixed.pt", payload)
    out = tmp_path / "from_store"
    assert (
        main(["predict", str(tmp_path / "fixed.pt"), "--store", store_path, "--out", str(out)]) == 0
    )
    store = open_store(store_path)
    for case in store:
        labels = _nifti(out / f"{case.id}.nii.gz")
        inside = np.zeros(labels.shape, bool)
        inside[case.crop_box.slices()] = True
        assert (labels[inside] == 4).all()  # tumour core's regions_class_order value
        assert (labels[~inside] == 0).all()
    # the trained model: exported values are the rule's class ids mapped back to 2, 4, 6
    out = tmp_path / "trained"
    assert main(["predict", str(run), "--store", store_path, "--out", str(out)]) == 0
    predictor = CasePredictor.from_checkpoints([run], PredictSettings(device="cpu"))
    values = np.array([0, 2, 4, 6])
    for case in store:
        labels = _nifti(out / f"{case.id}.nii.gz")
        expected = values[predictor.predict(case).labels]
        np.testing.assert_array_equal(labels[case.crop_box.slices()], expected)
        assert set(np.unique(labels)) <= {0, 2, 4, 6}
    # zarr probabilities record the region order, so seam measures label them by the rule
    zarr_out = tmp_path / "zarr"
    assert main(["predict", str(run), "--store", store_path, "--out", str(zarr_out),
                 "--probabilities-format", "zarr", "--cases", store.case_ids[0]]) == 0  # fmt: skip
    stored = zarr.open_array(str(zarr_out / f"{store.case_ids[0]}_probabilities.zarr"), mode="r")
    assert stored.attrs["region_order"] == [1, 2, 3] and stored.shape[0] == 3


def test_a_flat_imagests_folder_predicts_like_the_store(region_run, tmp_path, capsys) -> None:
    run, store_path = region_run
    flat = write_flat(tmp_path / "imagesTs")
    out, reference = tmp_path / "flat", tmp_path / "store"
    assert main(["predict", str(run), "--input", str(flat), "--out", str(out)]) == 0
    assert main(["predict", str(run), "--store", store_path, "--out", str(reference),
                 "--cases", *IDS[:2]]) == 0  # fmt: skip
    for case in IDS[:2]:
        np.testing.assert_array_equal(
            _nifti(out / f"{case}.nii.gz"), _nifti(reference / f"{case}.nii.gz")
        )
    assert not list(out.glob(".partseg-ingest-*"))  # the temporary store is gone
    three = write_flat(tmp_path / "three", channels=3)
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(three), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "3 channel(s) per case, but the model was trained on 2 (T1, FLAIR)" in err
