"""Partitioned prediction equals whole-volume inference (exact margin, eval BatchNorm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partseg.dataset import InputLayout
from partseg.errors import GeometryError
from partseg.geometry import make_partition, padded_shape
from partseg.infer.predictor import (
    ArrayCase,
    exact_partition,
    forward,
    norm_warning,
    predict_case,
    predict_whole,
    whole_partition,
)
from partseg.infer.stitch import Stitcher
from partseg.models import ModelConfig, build_model

SHAPE = (7, 13, 11)  # not a multiple of any core used below


def _model(dims: int, depth: int, norm: str = "batch", in_channels: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        name="unet",
        spatial_dims=dims,
        in_channels=in_channels,
        out_channels=3,
        depth=depth,
        base_width=4,
        norm=norm,
    )
    model = build_model(cfg)
    for m in model.modules():  # non-trivial running statistics, so eval BN is not the identity
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _case(shape=SHAPE, channels=2) -> ArrayCase:
    rng = np.random.default_rng(0)
    return ArrayCase("c1", rng.normal(size=(channels, *shape)).astype(np.float32))


def _layout_and_partition(dims: int, model, context: int = 1):
    if dims == 3:
        layout = InputLayout(3)
        return layout, exact_partition(model, (8, 8, 8), layout)
    layout = InputLayout(2, slice_axis=0)
    base = make_partition(
        (1, 8, 8), [(context, context), (0, 0), (0, 0)], (1, model.total_stride, model.total_stride)
    )
    return layout, exact_partition(model, None, layout, base=base)


def _reference_logits(model, case, partition, layout) -> np.ndarray:
    """Independent reference: np.pad the volume per padded_shape, run once, crop back."""
    padded = padded_shape(case.shape, partition)
    before = partition.margin_before
    pad = [(0, 0)] + [(b, p - s - b) for b, p, s in zip(before, padded, case.shape, strict=True)]
    volume = np.pad(case.image, pad)  # (C, *padded)
    with torch.no_grad():
        if layout.spatial_dims == 3:
            out = model(torch.from_numpy(volume[None]))[0].numpy()
        else:  # one pass per slice, its neighbours folded into channels
            slab = partition.input_size[0]
            slices = [
                layout.image_to_network(volume[:, z : z + slab]) for z in range(case.shape[0])
            ]
            out = model(torch.from_numpy(np.stack(slices))).numpy()  # (Z, K, Y', X')
            out = np.moveaxis(out, 0, 1)  # (K, Z, Y', X'), Z already in volume coordinates
            out = np.pad(out, [(0, 0), (before[0], 0), (0, 0), (0, 0)])  # crop below undoes it
    crop = tuple(slice(b, b + s) for b, s in zip(before, case.shape, strict=True))
    return out[(slice(None), *crop)]


def _logit_stitcher(case, partition, k=3, blend="crop"):
    return Stitcher(case.shape, partition, k, blend=blend, activation="none", dtype=np.float32)


@pytest.mark.parametrize(("dims", "depth"), [(3, 2), (3, 3), (2, 2), (2, 3)])
def test_exact_margin_stitching_equals_whole_volume(dims, depth):
    model = _model(dims, depth, in_channels=2 if dims == 3 else 6)
    case = _case()
    layout, partition = _layout_and_partition(dims, model)
    assert min(partition.margin_before[-2:]) >= model.receptive_field / 2
    reference = _reference_logits(model, case, partition, layout)
    stitched = predict_case(
        model, case, partition, layout, batch_size=3, stitcher=_logit_stitcher(case, partition)
    )
    whole = predict_whole(
        model,
        case,
        partition,
        layout,
        stitcher=_logit_stitcher(case, whole_partition(partition, SHAPE)),
    )
    assert stitched.shape == (3, *SHAPE)
    assert np.abs(whole - reference).max() <= 1e-4
    assert np.abs(stitched - reference).max() <= 1e-4
    assert norm_warning(model) is None


def test_default_output_is_probabilities_of_the_stitched_logits():
    model = _model(3, 2)
    case = _case()
    layout, partition = _layout_and_partition(3, model)
    probabilities = predict_case(model, case, partition, layout)
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, *SHAPE)
    np.testing.assert_allclose(probabilities.sum(0), 1, rtol=1e-5)
    logits = _reference_logits(model, case, partition, layout)
    expected = np.exp(logits) / np.exp(logits).sum(0)
    assert np.abs(probabilities - expected).max() <= 1e-5


def test_small_margin_is_not_exact():
    model = _model(3, 3)
    case = _case()
    layout = InputLayout(3)
    small = make_partition((8, 8, 8), 2, stride=model.total_stride)
    reference = _reference_logits(model, case, small, layout)
    crop = predict_case(model, case, small, layout, stitcher=_logit_stitcher(case, small))
    assert np.abs(crop - reference).max() > 1e-3


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_instance_and_group_norm_are_flagged_and_differ_from_whole(norm):
    model = _model(3, 2, norm=norm)
    case = _case()
    layout, partition = _layout_and_partition(3, model)
    assert "cannot equal whole-volume" in norm_warning(model)
    stitched = predict_case(
        model, case, partition, layout, stitcher=_logit_stitcher(case, partition)
    )
    whole = predict_whole(
        model,
        case,
        partition,
        layout,
        stitcher=_logit_stitcher(case, whole_partition(partition, SHAPE)),
    )
    assert np.abs(stitched - whole).max() > 1e-3


@pytest.mark.parametrize("blend", ["average", "gaussian", "hann"])
def test_blends_of_a_pointwise_model_equal_the_model(blend):
    conv = torch.nn.Conv3d(2, 3, 1)
    conv.out_channels = 3
    case = _case()
    partition = make_partition((4, 4, 4), 2, stride=1)
    out = predict_case(
        conv.eval(),
        case,
        partition,
        InputLayout(3),
        batch_size=4,
        stitcher=_logit_stitcher(case, partition, blend=blend),
    )
    with torch.no_grad():
        expected = conv(torch.from_numpy(case.image[None]))[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_tta_averages_flipped_predictions():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 2, 3, padding=1).eval()  # asymmetric kernel: flips matter
    x = torch.randn(1, 1, 4, 6, 6)
    dims = (2, 3, 4)
    manual = []
    with torch.no_grad():
        for mask in range(8):
            flip = tuple(d for i, d in enumerate(dims) if mask >> i & 1)
            manual.append(conv(x.flip(flip)).flip(flip) if flip else conv(x))
    expected = torch.stack(manual).mean(0)
    torch.testing.assert_close(forward(conv, x, tta=True), expected)
    assert not torch.allclose(forward(conv, x), expected)


def test_amp_runs_in_bfloat16_and_returns_float32():
    model = _model(3, 2)
    x = torch.randn(1, 2, 8, 8, 8)
    out = forward(model, x, amp=True)
    full = forward(model, x)
    assert out.dtype == torch.float32
    assert 0 < (out - full).abs().max() < 0.1  # bf16 rounding, not a different result


def test_exact_partition_margin_is_half_the_receptive_field_aligned():
    model = _model(3, 3)
    partition = exact_partition(model, (8, 8, 8), InputLayout(3))
    half = -(-model.receptive_field // 2)
    assert all(b >= half for b in partition.margin_before)
    assert all(s % model.total_stride == 0 for s in partition.input_size)
    with pytest.raises(GeometryError):
        exact_partition(model, None, InputLayout(3))


def test_array_case_reads_zero_outside_the_volume():
    image = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    case = ArrayCase("a", image, label=np.ones((3, 4, 5), np.uint8))
    from partseg.geometry import Box

    got, label = case.read(Box((-1, 2, 3), (2, 3, 3)))
    assert got[1, 1, 0, 0] == image[1, 0, 2, 3]
    assert got[:, 0].sum() == 0 and got[:, :, 2].sum() == 0 and got[:, :, :, 2].sum() == 0
    assert label.sum() == 1 * 2 * 2
