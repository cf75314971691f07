"""One-channel (sigmoid) binary models: probabilities, labels p > 0.5, ensembles, CLI export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from partseg.checkpoint import load_model, partition_to_dict, save_checkpoint
from partseg.cli import main
from partseg.dataset import InputLayout
from partseg.errors import CheckpointError, GeometryError
from partseg.geometry import Box, make_partition, padded_shape
from partseg.infer.ensemble import EnsembleModel
from partseg.infer.export import probabilities_to_original_grid
from partseg.infer.partitions import exact_partition
from partseg.infer.predictor import ArrayCase, predict_case
from partseg.infer.seams import reference_error
from partseg.infer.stitch import (
    Stitcher,
    activate,
    default_activation,
    labels_from_probabilities,
    sigmoid,
)
from partseg.models import ModelConfig, build_model
from partseg.store import open_store

SHAPE = (7, 13, 11)  # not a multiple of the core


def _binary_model(dims: int = 3, seed: int = 0, in_channels: int = 1) -> torch.nn.Module:
    """The tiny one-output-channel U-Net (no norm, so stitching is exact)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        name="unet",
        spatial_dims=dims,
        in_channels=in_channels,
        out_channels=1,
        depth=2,
        base_width=4,
        norm="none",
    )
    return build_model(cfg).eval()


def _case(shape=SHAPE, channels: int = 1) -> ArrayCase:
    rng = np.random.default_rng(0)
    return ArrayCase("c", rng.normal(size=(channels, *shape)).astype(np.float32))


def _layout_and_partition(dims: int, model: torch.nn.Module):
    if dims == 3:
        layout = InputLayout(3)
        return layout, exact_partition(model, (4, 8, 8), layout)
    layout = InputLayout(2, slice_axis=0)
    stride = model.total_stride
    base = make_partition((1, 8, 8), [(1, 1), (0, 0), (0, 0)], (1, stride, stride))
    return layout, exact_partition(model, None, layout, base=base)


def _whole_logits(model, case: ArrayCase, partition, layout) -> np.ndarray:
    """Independent reference: np.pad the volume per padded_shape, run once, crop back."""
    padded = padded_shape(case.shape, partition)
    before = partition.margin_before
    pad = [(0, 0)] + [(b, p - s - b) for b, p, s in zip(before, padded, case.shape, strict=True)]
    volume = np.pad(case.image, pad)  # (C, *padded)
    with torch.no_grad():
        if layout.spatial_dims == 3:
            out = model(torch.from_numpy(volume[None]))[0].numpy()  # (1, *padded)
        else:  # one pass per slice, its neighbours folded into channels
            slab = partition.input_size[0]
            slices = [
                layout.image_to_network(volume[:, z : z + slab]) for z in range(case.shape[0])
            ]
            out = np.moveaxis(model(torch.from_numpy(np.stack(slices))).numpy(), 0, 1)
            out = np.pad(out, [(0, 0), (before[0], 0), (0, 0), (0, 0)])
    crop = tuple(slice(b, b + s) for b, s in zip(before, case.shape, strict=True))
    return out[(slice(None), *crop)]  # (1, *SHAPE)


def _centre_bias(model: torch.nn.Module, case: ArrayCase, partition, layout) -> None:
    """Spread the logits (so fp16 probabilities keep every label) and centre them at 0.

    About half of the voxels become foreground (p > 0.5), few lie near 0.5.
    """
    with torch.no_grad():
        model.head.weight *= 100.0
    logits = _whole_logits(model, case, partition, layout)
    with torch.no_grad():
        model.head.bias -= float(np.median(logits))


# -- labels_from_probabilities and the Stitcher's sigmoid -----------------------------------------
def test_labels_from_probabilities_thresholds_one_channel_and_argmaxes_several():
    one = np.array([[[0.2, 0.5, 0.5001, 0.9]]], np.float32)  # (1, 1, 4)
    labels = labels_from_probabilities(one)
    assert labels.dtype == np.uint8 and labels.tolist() == [[0, 0, 1, 1]]
    several = np.random.default_rng(0).dirichlet(np.ones(3), (2, 5)).transpose(2, 0, 1)
    np.testing.assert_array_equal(labels_from_probabilities(several), several.argmax(0))
    with pytest.raises(GeometryError, match="K >= 1"):
        labels_from_probabilities(np.zeros((0, 3)))


def test_sigmoid_is_stable_and_default_activation_follows_channels():
    x = np.array([-200.0, -3.0, 0.0, 2.5, 200.0], np.float32)
    expected = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(sigmoid(x), expected, rtol=1e-6, atol=1e-30)
    assert sigmoid(x).dtype == np.float32 and np.isfinite(sigmoid(x)).all()
    assert default_activation(1) == "sigmoid" and default_activation(2) == "softmax"
    np.testing.assert_array_equal(activate(x[None], "none"), x[None])


@pytest.mark.parametrize("blend", ["crop", "gaussian"])
@pytest.mark.parametrize("output", ["values", "labels"])
def test_stitcher_sigmoid_per_chunk_equals_sigmoid_of_the_field(blend: str, output: str):
    shape, partition = (9, 11, 7), make_partition((4, 4, 4), 2, stride=2)
    logits = np.random.default_rng(1).normal(size=(1, *shape)).astype(np.float32)  # (1, Z, Y, X)
    stitcher = Stitcher(shape, partition, 1, blend=blend, output=output, dtype=np.float32)
    assert stitcher.activation == "sigmoid"  # default for one channel
    for cube in partition.grid(shape):
        region = stitcher.region(cube)
        values = np.zeros((1, *region.size), np.float32)
        inside, where = region.clip(shape)
        values[(slice(None), *where)] = logits[(slice(None), *inside.slices())]
        stitcher.aggregate(values, cube)
    result = stitcher.finalize()
    probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    if output == "values":
        assert result.shape == (1, *shape)
        np.testing.assert_allclose(result, probabilities, atol=1e-6)
    else:
        assert result.dtype == np.uint8 and result.shape == shape
        np.testing.assert_array_equal(result, logits[0] > 0)  # sigmoid > 0.5 <=> logit > 0
        assert 0 < result.mean() < 1


def test_stitcher_rejects_activations_that_do_not_fit_the_channels():
    shape, partition = (4, 4, 4), make_partition((4, 4, 4), 0)
    with pytest.raises(GeometryError, match="softmax over a single output channel"):
        Stitcher(shape, partition, 1, activation="softmax")
    with pytest.raises(GeometryError, match="sigmoid activation is for one-channel"):
        Stitcher(shape, partition, 3, activation="sigmoid")
    with pytest.raises(GeometryError, match="threshold sigmoid probabilities"):
        Stitcher(shape, partition, 1, activation="none", output="labels")
    assert Stitcher(shape, partition, 1, activation="none").activation == "none"  # raw logits


# -- predict_case -------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [3, 2])
def test_predict_case_of_a_one_channel_model_is_the_sigmoid_of_whole_volume_logits(dims: int):
    model = _binary_model(dims, in_channels=1 if dims == 3 else 3)
    case = _case()
    layout, partition = _layout_and_partition(dims, model)
    reference = _whole_logits(model, case, partition, layout)  # (1, *SHAPE)
    expected = 1.0 / (1.0 + np.exp(-reference.astype(np.float64)))
    stitched = predict_case(model, case, partition, layout, batch_size=3)
    assert stitched.shape == (1, *SHAPE) and stitched.dtype == np.float32
    assert np.abs(stitched - expected).max() <= 1e-5
    assert not np.allclose(stitched, 1.0)  # not the softmax of one channel
    labels = Stitcher(case.shape, partition, 1, output="labels")
    labels = predict_case(model, case, partition, layout, stitcher=labels)
    np.testing.assert_array_equal(labels, stitched[0] > 0.5)
    np.testing.assert_array_equal(labels, labels_from_probabilities(stitched))


# -- ensembles, seams, cascade, export ----------------------------------------------------------
def test_ensemble_of_sigmoid_members_equals_the_mean_of_their_probabilities():
    members = [_binary_model(seed=0), _binary_model(seed=1)]
    ensemble = EnsembleModel(members).eval()
    case = _case()
    layout = InputLayout(3)
    partition = exact_partition(ensemble, (4, 8, 8), layout)
    together = predict_case(ensemble, case, partition, layout)
    separate = [predict_case(m, case, partition, layout) for m in members]
    assert together.shape == (1, *SHAPE)
    np.testing.assert_allclose(together, (separate[0] + separate[1]) / 2, atol=1e-5)
    x = torch.from_numpy(case.image[None, :, :6, :12, :10].copy())  # a multiple of the stride
    with torch.no_grad():
        mean = (members[0](x).sigmoid() + members[1](x).sigmoid()) / 2
        torch.testing.assert_close(ensemble(x).sigmoid(), mean, atol=1e-6, rtol=1e-5)


def test_ensemble_refuses_members_with_different_output_channels():
    torch.manual_seed(0)
    cfg = ModelConfig(name="unet", spatial_dims=3, in_channels=1, out_channels=2, depth=2)
    with pytest.raises(CheckpointError, match="different output channels"):
        EnsembleModel([_binary_model(), build_model(cfg)])


def test_reference_error_thresholds_one_channel_probabilities():
    a = np.array([[[[0.2, 0.6, 0.4, 0.9]]]], np.float32)  # (1, 1, 1, 4)
    b = np.array([[[[0.3, 0.4, 0.45, 0.8]]]], np.float32)  # labels change at one voxel of 4
    assert reference_error(a, b)["changed_label_share"] == 0.25


def test_exported_one_channel_probabilities_are_zero_outside_the_crop():
    attrs = {"crop_box": {"start": [1, 0, 2], "size": [2, 2, 2]}, "original_shape": [4, 3, 5]}
    one = np.full((1, 2, 2, 2), 0.75, np.float32)
    full = probabilities_to_original_grid(one, attrs)
    assert full.shape == (1, 4, 3, 5)
    assert full.sum() == pytest.approx(0.75 * 8)  # background: foreground probability 0
    several = np.full((2, 2, 2, 2), 0.5, np.float32)
    full = probabilities_to_original_grid(several, attrs)
    np.testing.assert_allclose(full.sum(0), 1.0)  # background: class 0 with probability 1


# -- partseg predict on a one-channel checkpoint --------------------------------------------------
def _binary_store(path: Path, shape=(8, 12, 10)) -> str:
    """One case, one channel, classes background / lesion; lesion is stored value 2."""
    from partseg.store.writer import create_store

    classes = ["background", "lesion"]
    index = {"channels": ["a"], "classes": classes, "label_mapping": [[0, 0], [2, 1]]}
    writer = create_store(path, {**index, "chunks": [8, 8, 8], "case_ids": []})
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    label = (image[0] > 0).astype(np.uint8)
    attrs = {
        "shape": list(shape),
        "spacing": [1.0, 1.0, 1.0],
        "channels": ["a"],
        "classes": classes,
        "has_label": True,
        "voxel_counts": {"0": int((label == 0).sum()), "1": int(label.sum())},
        "crop_box": {"start": [1, 2, 0], "size": list(shape)},
        "original_shape": [shape[0] + 2, shape[1] + 3, shape[2]],
    }
    locations = np.concatenate([np.c_[np.full(5, k), np.argwhere(label == k)[:5]] for k in (0, 1)])
    writer.write_case("b0", image, label, attrs, locations, (8, 8, 8))
    writer.write_index({**writer.index(), "case_ids": ["b0"]})
    return str(path)


def _binary_checkpoint(path: Path, store_url: str) -> Path:
    store = open_store(store_url)
    case = store["b0"]
    model = _binary_model()
    layout = InputLayout(3)
    partition = make_partition((4, 8, 8), 2, stride=model.total_stride)
    image, _ = case.read(Box.whole(case.shape), label=False)
    _centre_bias(model, ArrayCase("b0", image), partition, layout)
    cfg = ModelConfig(
        name="unet", spatial_dims=3, in_channels=1, out_channels=1, depth=2, base_width=4,
        norm="none",
    )  # fmt: skip
    save_checkpoint(path, {
        "format": "partseg-checkpoint", "version": 1,
        "model_config": dataclasses.asdict(cfg), "model_state": model.state_dict(),
        "partition": partition_to_dict(partition), "layout": dataclasses.asdict(layout),
        "classes": list(store.classes), "channels": list(store.channels),
        "label_mapping": {str(k): v for k, v in store.label_mapping.items()}, "config": {},
    })  # fmt: skip
    return path


def _nifti(path: Path) -> np.ndarray:
    data = np.asarray(nib.load(str(path)).dataobj)  # (X, Y, Z) or (X, Y, Z, K)
    return data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)


def test_cli_predict_of_a_one_channel_checkpoint_writes_thresholded_labels(tmp_path: Path):
    url = _binary_store(tmp_path / "b.zarr")
    ckpt = _binary_checkpoint(tmp_path / "b.pt", url)
    out = tmp_path / "out"
    args = ["predict", str(ckpt), "--store", url, "--out", str(out), "--device", "cpu"]
    args += ["--partition", "grid"]  # compared with predict_case on the trained grid below
    assert main([*args, "--save-probabilities", "--probabilities-format", "nifti"]) == 0
    case = open_store(url)["b0"]
    loaded = load_model(ckpt)
    probs = predict_case(loaded.model, case, loaded.partition, loaded.layout)  # (1, Z, Y, X)
    labels = _nifti(out / "b0.nii.gz")
    crop = Box(tuple(case.attrs["crop_box"]["start"]), case.shape)
    assert labels.shape == tuple(case.attrs["original_shape"])
    inside = labels[crop.slices()]
    np.testing.assert_array_equal(inside, np.where(probs[0] > 0.5, 2, 0))  # class 1 -> value 2
    assert set(np.unique(inside)) == {0, 2}  # both classes predicted: a real threshold
    assert labels.sum() == inside.sum()  # background outside the crop
    saved = _nifti(out / "b0_probabilities.nii.gz")  # (1, *original_shape)
    assert saved.shape == (1, *case.attrs["original_shape"])
    np.testing.assert_allclose(saved[(slice(None), *crop.slices())], probs, atol=1e-3)  # fp16
    assert saved.sum() == pytest.approx(float(probs.sum()), rel=1e-5)  # 0 outside the crop
    # the labels-only path (no probabilities kept) gives the same labels
    assert main([*args, "--overwrite"]) == 0
    np.testing.assert_array_equal(_nifti(out / "b0.nii.gz"), labels)
