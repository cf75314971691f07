"""``partseg predict`` end to end on tiny phantoms: outputs, geometry, resume, errors (exit 2)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from partseg.checkpoint import load_model, partition_to_dict, save_checkpoint
from partseg.cli import main
from partseg.dataset import InputLayout
from partseg.geometry import make_partition
from partseg.infer.engine import predict_layerwise, trained_border
from partseg.models import ModelConfig, build_model
from partseg.phantom import write_phantoms
from partseg.store import open_store
from partseg.store.ingest import IngestSettings, ingest

PHANTOM_SHAPE = (20, 28, 28)
SPECIAL = IngestSettings(crop="none", normalize="none", spacing=(10.0, 7.0, 7.0), dtype="float32")


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_phantoms(root, 3, PHANTOM_SHAPE, progress=False)
    return root


@pytest.fixture(scope="module")
def store_path(raw_dir, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    ingest(raw_dir, path, progress=False)
    return str(path)


@pytest.fixture(scope="module")
def special_store(raw_dir, tmp_path_factory) -> str:
    """The phantoms ingested with non-default settings: no crop, no z-score, resampled."""
    path = tmp_path_factory.mktemp("special") / "s.zarr"
    ingest(raw_dir, path, SPECIAL, progress=False)
    return str(path)


def _checkpoint(path: Path, store, *, seed=0, in_channels=None, channels=None, ingest=True):
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
    payload = {
        "format": "partseg-checkpoint", "version": 1,
        "model_config": dataclasses.asdict(cfg), "model_state": model.state_dict(),
        "partition": partition_to_dict(partition),
        "layout": dataclasses.asdict(InputLayout(3)),
        "classes": list(store.classes), "channels": list(channels or store.channels),
        "label_mapping": {str(k): v for k, v in store.label_mapping.items()}, "config": {},
    }  # fmt: skip
    if ingest:  # what the trainer records: the training store's ingest settings
        payload["ingest"] = store.attrs["ingest"]
    save_checkpoint(path, payload)
    return path


def _nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    data = np.asarray(image.dataobj)  # (X, Y, Z) or (X, Y, Z, K)
    data = data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)
    return data, image.affine  # -> (Z, Y, X) or (K, Z, Y, X)


def test_predict_writes_labels_in_original_geometry(store_path, tmp_path):
    store = open_store(store_path)
    ckpt = _checkpoint(tmp_path / "a.pt", store)
    out = tmp_path / "out"
    args = ["predict", str(ckpt), "--store", store_path, "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    loaded = load_model(ckpt)
    inverse = {v: k for k, v in store.label_mapping.items()}
    for case in store:
        labels, affine = _nifti(out / f"{case.id}.nii.gz")
        assert labels.shape == tuple(case.attrs["original_shape"])
        np.testing.assert_allclose(affine, case.affine)
        expected = predict_layerwise(
            loaded.model, case, loaded.layout, border=trained_border(loaded.partition)
        ).argmax(0)  # default
        crop = case.crop_box
        np.testing.assert_array_equal(labels[crop.slices()], np.vectorize(inverse.get)(expected))
        outside = np.ones(labels.shape, bool)
        outside[crop.slices()] = False
        assert (labels[outside] == 0).all()
        assert set(np.unique(labels)) <= set(store.label_mapping)


def test_nonzero_mask_clears_the_air_and_says_how_much_it_cleared(store_path, tmp_path, capsys):
    from partseg.infer.postprocess import case_nonzero_mask

    store = open_store(store_path)
    ckpt = _checkpoint(tmp_path / "a.pt", store, seed=1)  # untrained: tumour here and there
    base = ["predict", str(ckpt), "--store", store_path, "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "masked"), "--nonzero-mask"]) == 0
    printed = capsys.readouterr().out
    cleared = 0
    for case in store:
        plain = _nifti(tmp_path / "plain" / f"{case.id}.nii.gz")[0][case.crop_box.slices()]
        masked = _nifti(tmp_path / "masked" / f"{case.id}.nii.gz")[0][case.crop_box.slices()]
        head = case_nonzero_mask(case)
        np.testing.assert_array_equal(masked, np.where(head, plain, 0))
        air = int(np.count_nonzero(plain[~head]))
        cleared += air
        line = next(x for x in printed.splitlines() if x.startswith(f"{case.id}:"))
        note = f"the nonzero mask set {air} foreground voxels outside the head to 0"
        assert (note in line) == (air > 0)
    assert cleared > 0  # the untrained model did call some air tumour


def test_rerun_predicts_only_unfinished_cases(store_path, tmp_path, capsys):
    store = open_store(store_path)
    assert len(store.case_ids) == 3
    ckpt = _checkpoint(tmp_path / "a.pt", store)
    out = tmp_path / "out"
    args = ["predict", str(ckpt), "--store", store_path, "--out", str(out), "--save-probabilities"]
    assert main(args) == 0
    files = {c: [out / f"{c}.nii.gz", out / f"{c}_probabilities.nii.gz"] for c in store.case_ids}
    before = {p: (p.stat().st_mtime_ns, _nifti(p)[0]) for ps in files.values() for p in ps}
    redo = store.case_ids[1]
    files[redo][1].unlink()  # one output of one case lost
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "skipped 2 of 3 cases" in printed and f"{redo}:" in printed
    for case_id, paths in files.items():
        for path in paths:
            mtime, data = before[path]
            if case_id == redo:
                assert path.stat().st_mtime_ns > mtime  # predicted again
            else:
                assert path.stat().st_mtime_ns == mtime  # skipped, not rewritten
            np.testing.assert_array_equal(_nifti(path)[0], data)  # identical outputs
    capsys.readouterr()
    assert main([*args, "--json"]) == 0  # nothing left to do; stdout holds only the JSON
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == list(store.case_ids) and report["written"] == []
    assert main([*args, "--overwrite"]) == 0
    assert all(p.stat().st_mtime_ns > before[p][0] for ps in files.values() for p in ps)


def test_other_settings_or_foreign_outputs_need_overwrite(store_path, tmp_path, capsys):
    store = open_store(store_path)
    ckpt = _checkpoint(tmp_path / "a.pt", store)
    out = str(tmp_path / "out")
    case = store.case_ids[0]
    args = ["predict", str(ckpt), "--store", store_path, "--out", out, "--cases", case]
    assert main(args) == 0
    assert main([*args, "--tta"]) == 2  # other settings than the outputs in OUT
    err = capsys.readouterr().err
    assert "--overwrite" in err and "tta" in err
    assert main([*args, "--tta", "--overwrite"]) == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / f"{case}.nii.gz").write_bytes(b"someone else's file")
    assert main(["predict", str(ckpt), "--store", store_path, "--out", str(foreign)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert (foreign / f"{case}.nii.gz").read_bytes() == b"someone else's file"


def test_bad_inputs_exit_2_with_one_clear_line(store_path, tmp_path, capsys):
    store = open_store(store_path)
    ckpt = str(_checkpoint(tmp_path / "a.pt", store))
    base = ["predict", ckpt, "--store", store_path, "--out", str(tmp_path / "out")]
    assert main([*base, "--cases", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["predict", str(garbage), *base[2:]]) == 2
    wrong = _checkpoint(tmp_path / "w.pt", store, in_channels=2, channels=("t1", "t2"))
    assert main(["predict", str(wrong), *base[2:]]) == 2
    err = capsys.readouterr().err
    assert "trained on channels ['t1', 't2']" in err and "takes 2 input channels" in err
    assert main([*base, "--margin", "lots"]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # refused when parsed, as on every command
        main([*base, "--device", "tpu"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "unknown device 'tpu'; use auto, cpu, cuda or cuda:N" in err and "checkpoint" not in err
    assert main([*base, "--overlap", "0.5"]) == 2  # crop with an overlap
    assert main([*base, "--blend", "gaussian", "--overlap", "0"]) == 2  # a blend that equals crop
    assert "equals crop" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--amp", "fp8"])  # choices come from precision.PRECISION_MODES


def test_partition_none_is_the_model_of_the_volume_and_zarr_probabilities(store_path, tmp_path):
    import zarr

    store = open_store(store_path)
    ckpt = _checkpoint(tmp_path / "a.pt", store)
    case = store[store.case_ids[0]]
    base = ["predict", str(ckpt), "--store", store_path, "--cases", case.id]
    base += ["--save-probabilities", "--probabilities-format", "zarr"]
    grid_args = ["--partition", "grid", "--margin", "exact"]
    assert main([*base, "--out", str(tmp_path / "grid"), *grid_args]) == 0
    assert main([*base, "--out", str(tmp_path / "none"), "--partition", "none"]) == 0
    assert main([*base, "--out", str(tmp_path / "exact")]) == 0  # the default mode
    grid = zarr.open_array(str(tmp_path / "grid" / f"{case.id}_probabilities.zarr"), mode="r")
    whole = zarr.open_array(str(tmp_path / "none" / f"{case.id}_probabilities.zarr"), mode="r")
    exact = zarr.open_array(str(tmp_path / "exact" / f"{case.id}_probabilities.zarr"), mode="r")
    assert exact.chunks[1] == min(8, case.shape[0])  # chunked on the engine's slabs of rows
    np.testing.assert_array_equal(exact[...], whole[...])  # equal after float16 rounding
    assert grid.chunks == (len(store.classes), 8, 8, 8) and grid.dtype == np.float16
    np.testing.assert_allclose(grid[...].astype(np.float32).sum(0), 1, atol=5e-3)
    loaded = load_model(ckpt)
    image, _ = case.read(case_box(case), label=False)  # the trained margin 2, then the stride
    with torch.no_grad():
        logits = loaded.model(torch.from_numpy(image[None]))[0]
    inside = tuple(slice(2, 2 + n) for n in case.shape)
    expected = torch.softmax(logits, 0).numpy()[(slice(None), *inside)]
    assert np.abs(whole[...].astype(np.float32) - expected).max() < 2e-3  # float16 storage
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "grid").iterdir())


def case_box(case):
    from partseg.geometry import Box

    return Box((-2, -2, -2), tuple(-(-n // 2) * 2 + 4 for n in case.shape))


def test_input_folder_ensemble_tta_and_postprocessing(store_path, raw_dir, tmp_path):
    store = open_store(store_path)
    ckpts = [str(_checkpoint(tmp_path / f"m{i}.pt", store, seed=i)) for i in range(2)]
    out = tmp_path / "out"
    out.mkdir()
    leftovers = [
        out / ".tmp-Phantom_009_probabilities.zarr",  # zarr output of an interrupted run
        out / ".partseg-ingest-0123456789ab",  # its temporary store
        out / f".{store.case_ids[0]}.nii.gz.x1y2.nii.gz",  # an atomic write cut short
    ]
    for path in leftovers[:2]:
        path.mkdir()
    leftovers[2].write_bytes(b"half")
    args = ["predict", *ckpts, "--input", str(raw_dir), "--out", str(out), "--tta"]
    args += ["--partition", "grid", "--blend", "gaussian"]
    args += ["--min-component-size", "11", "--keep-largest"]
    args += ["--save-probabilities", "--cases", store.case_ids[0]]
    assert main(args) == 0
    labels, _ = _nifti(out / f"{store.case_ids[0]}.nii.gz")
    probabilities, _ = _nifti(out / f"{store.case_ids[0]}_probabilities.nii.gz")
    assert labels.shape == tuple(store[store.case_ids[0]].attrs["original_shape"])
    assert probabilities.shape == (len(store.classes), *labels.shape)
    np.testing.assert_allclose(probabilities.sum(0), 1, atol=5e-3)
    from partseg.infer.postprocess import components

    _, sizes = components(labels > 0)
    assert len(sizes) <= 2  # at most one foreground component is left
    assert not any(p.exists() for p in leftovers)
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == [".partseg-predict.json"]  # temporary store and leftovers removed


def test_input_is_ingested_with_the_training_store_settings(
    special_store, raw_dir, tmp_path, capsys
):
    store = open_store(special_store)
    ckpt = str(_checkpoint(tmp_path / "a.pt", store))
    common = ["--save-probabilities", "--device", "cpu"]
    assert (
        main(["predict", ckpt, "--store", special_store, "--out", str(tmp_path / "s"), *common])
        == 0
    )
    assert (
        main(["predict", ckpt, "--input", str(raw_dir), "--out", str(tmp_path / "i"), *common]) == 0
    )
    for case_id in store.case_ids:
        for name in (f"{case_id}.nii.gz", f"{case_id}_probabilities.nii.gz"):
            a, _ = _nifti(tmp_path / "s" / name)
            b, _ = _nifti(tmp_path / "i" / name)
            np.testing.assert_array_equal(a, b)  # the same network input, bit for bit
    old = str(_checkpoint(tmp_path / "old.pt", store, ingest=False))  # written before recording
    capsys.readouterr()
    assert (
        main(["predict", old, "--input", str(raw_dir), "--out", str(tmp_path / "o"), *common]) == 0
    )
    assert "records no ingest settings" in capsys.readouterr().err
    case_id = store.case_ids[0]
    a, _ = _nifti(tmp_path / "s" / f"{case_id}_probabilities.nii.gz")
    b, _ = _nifti(tmp_path / "o" / f"{case_id}_probabilities.nii.gz")
    assert a.shape != b.shape or np.abs(a - b).max() > 1e-3  # default settings: other input


def test_cross_validation_folder_predicts_its_folds_as_an_ensemble(store_path, tmp_path, capsys):
    store = open_store(store_path)
    cv = tmp_path / "cv"
    for k in range(3):  # partseg cv --out cv: cv/fold_K/checkpoints/best.pt
        _checkpoint(cv / f"fold_{k}" / "checkpoints" / "best.pt", store, seed=k)
    (cv / "fold_3").mkdir()  # an unfinished fold: no checkpoint yet
    case = store.case_ids[0]
    common = ["--store", store_path, "--cases", case, "--save-probabilities", "--device", "cpu"]
    folds = cv / "fold_0", cv / "fold_2"
    assert main(["predict", *map(str, folds), "--out", str(tmp_path / "runs"), *common]) == 0
    assert main(["predict", str(cv), "--fold", "0,2", "--out", str(tmp_path / "f"), *common]) == 0
    capsys.readouterr()
    old = ["predict", str(cv), "--folds", "0", "2", "--out", str(tmp_path / "old"), *common]
    assert main(old) == 0  # the earlier spelling still works, with a note
    assert "--folds is deprecated; use --fold K[,K]" in capsys.readouterr().err
    by_runs, _ = _nifti(tmp_path / "runs" / f"{case}_probabilities.nii.gz")
    by_folds, _ = _nifti(tmp_path / "f" / f"{case}_probabilities.nii.gz")
    np.testing.assert_array_equal(by_folds, by_runs)  # the same ensemble, picked by fold
    by_old, _ = _nifti(tmp_path / "old" / f"{case}_probabilities.nii.gz")
    np.testing.assert_array_equal(by_old, by_runs)
    one, _ = _nifti(tmp_path / "runs" / f"{case}.nii.gz")
    capsys.readouterr()
    # every fold by default: fold 3 has no checkpoint, which is an error naming it
    assert main(["predict", str(cv), "--out", str(tmp_path / "all"), *common]) == 2
    assert "fold 3" in capsys.readouterr().err
    assert main(["predict", str(cv), "--fold", "5", "--out", str(tmp_path / "x"), *common]) == 2
    assert "no fold 5" in capsys.readouterr().err
    run = str(cv / "fold_0")  # --fold on a run directory is refused, not ignored
    assert main(["predict", run, "--fold", "0", "--out", str(tmp_path / "y"), *common]) == 2
    assert "cross-validation folder" in capsys.readouterr().err
    assert one.shape == tuple(store[case].attrs["original_shape"])
