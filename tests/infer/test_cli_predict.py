"""``partseg predict`` end to end on tiny phantoms: outputs, geometry, errors (exit 2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from partseg.cli import main
from partseg.dataset import InputLayout
from partseg.geometry import make_partition
from partseg.infer.predictor import predict_case
from partseg.models import ModelConfig, build_model
from partseg.phantom import write_phantoms
from partseg.store import open_store
from partseg.store.ingest import ingest
from partseg.train.checkpoint import partition_to_dict, save_checkpoint

PHANTOM_SHAPE = (20, 28, 28)


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_phantoms(root, 2, PHANTOM_SHAPE, progress=False)
    return root


@pytest.fixture(scope="module")
def store_path(raw_dir, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    ingest(raw_dir, path, progress=False)
    return str(path)


def _checkpoint(path: Path, store, *, seed=0, in_channels=None, channels=None) -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        name="unet",
        spatial_dims=3,
        in_channels=in_channels or len(store.channels),
        out_channels=len(store.classes),
        depth=2,
        base_width=4,
    )
    model = build_model(cfg).eval()
    partition = make_partition((8, 8, 8), 2, stride=model.total_stride)
    save_checkpoint(path, {
        "format": "partseg-checkpoint", "version": 1,
        "model_config": dataclasses.asdict(cfg), "model_state": model.state_dict(),
        "partition": partition_to_dict(partition),
        "layout": dataclasses.asdict(InputLayout(3)),
        "classes": list(store.classes), "channels": list(channels or store.channels),
        "label_mapping": {str(k): v for k, v in store.label_mapping.items()}, "config": {},
    })  # fmt: skip
    return path


def _nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    data = np.asarray(image.dataobj)  # (X, Y, Z) or (X, Y, Z, K)
    data = data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)
    return data, image.affine  # -> (Z, Y, X) or (K, Z, Y, X)


def test_predict_writes_labels_in_original_geometry(store_path, tmp_path, raw_dir):
    store = open_store(store_path)
    ckpt = _checkpoint(tmp_path / "a.pt", store)
    out = tmp_path / "out"
    assert (
        main(["predict", str(ckpt), "--store", store_path, "--out", str(out), "--device", "cpu"])
        == 0
    )
    from partseg.train.checkpoint import load_model

    loaded = load_model(ckpt)
    inverse = {v: k for k, v in store.label_mapping.items()}
    for case in store:
        labels, affine = _nifti(out / f"{case.id}.nii.gz")
        assert labels.shape == tuple(case.attrs["original_shape"])
        np.testing.assert_allclose(affine, case.affine)
        expected = predict_case(loaded.model, case, loaded.partition, loaded.layout).argmax(0)
        crop = case.crop_box
        np.testing.assert_array_equal(labels[crop.slices()], np.vectorize(inverse.get)(expected))
        outside = np.ones(labels.shape, bool)
        outside[crop.slices()] = False
        assert (labels[outside] == 0).all()
        assert set(np.unique(labels)) <= set(store.label_mapping)


def test_existing_outputs_need_overwrite_and_bad_inputs_exit_2(store_path, tmp_path, capsys):
    store = open_store(store_path)
    ckpt = _checkpoint(tmp_path / "a.pt", store)
    out = str(tmp_path / "out")
    case = store.case_ids[0]
    args = ["predict", str(ckpt), "--store", store_path, "--out", out, "--cases", case]
    assert main(args) == 0
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["predict", str(ckpt), "--store", store_path, "--out", out, "--cases", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["predict", str(garbage), "--store", store_path, "--out", out]) == 2
    wrong = _checkpoint(tmp_path / "w.pt", store, in_channels=2, channels=("t1", "t2"))
    assert main(["predict", str(wrong), "--store", store_path, "--out", out]) == 2
    assert "channels" in capsys.readouterr().err
    assert (
        main(["predict", str(ckpt), "--store", store_path, "--out", out, "--margin", "lots"]) == 2
    )


def test_exact_margin_equals_partition_none_and_zarr_probabilities(store_path, tmp_path):
    import zarr

    store = open_store(store_path)
    ckpt = _checkpoint(tmp_path / "a.pt", store)
    case = store.case_ids[0]
    base = [
        "predict",
        str(ckpt),
        "--store",
        store_path,
        "--cases",
        case,
        "--margin",
        "exact",
        "--save-probabilities",
        "--probabilities-format",
        "zarr",
    ]
    assert main([*base, "--out", str(tmp_path / "grid")]) == 0
    assert main([*base, "--out", str(tmp_path / "none"), "--partition", "none"]) == 0
    grid = zarr.open_array(str(tmp_path / "grid" / f"{case}_probabilities.zarr"), mode="r")
    whole = zarr.open_array(str(tmp_path / "none" / f"{case}_probabilities.zarr"), mode="r")
    assert grid.chunks == (len(store.classes), 8, 8, 8)
    assert grid.dtype == np.float16
    np.testing.assert_allclose(grid[...].astype(np.float32).sum(0), 1, atol=5e-3)
    assert np.abs(grid[...].astype(np.float32) - whole[...].astype(np.float32)).max() < 2e-3
    a, _ = _nifti(tmp_path / "grid" / f"{case}.nii.gz")
    b, _ = _nifti(tmp_path / "none" / f"{case}.nii.gz")
    assert (a != b).mean() < 1e-3


def test_input_folder_ensemble_tta_and_postprocessing(store_path, raw_dir, tmp_path):
    store = open_store(store_path)
    ckpts = [str(_checkpoint(tmp_path / f"m{i}.pt", store, seed=i)) for i in range(2)]
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                *ckpts,
                "--input",
                str(raw_dir),
                "--out",
                str(out),
                "--tta",
                "--blend",
                "gaussian",
                "--min-component-size",
                "11",
                "--keep-largest",
                "--save-probabilities",
                "--cases",
                store.case_ids[0],
            ]
        )
        == 0
    )
    labels, _ = _nifti(out / f"{store.case_ids[0]}.nii.gz")
    probabilities, _ = _nifti(out / f"{store.case_ids[0]}_probabilities.nii.gz")
    assert labels.shape == tuple(store[store.case_ids[0]].attrs["original_shape"])
    assert probabilities.shape == (len(store.classes), *labels.shape)
    np.testing.assert_allclose(probabilities.sum(0), 1, atol=5e-3)
    from partseg.infer.postprocess import components

    _, sizes = components(labels > 0)
    assert len(sizes) <= 2  # at most one foreground component is left
    assert not any(p.name.startswith(".") for p in out.iterdir())  # temporary store removed
