"""Partitioned prediction against the references, for every local model family in 2D and 3D.

Two references, both computed here independently of the predictor:

* ``model(volume)``: the volume padded with zeros only at the end of each axis, up to a
  multiple of the stride (what ``--partition none`` runs). Exact-margin grid stitching equals it
  to float rounding at every voxel whose receptive field lies inside the volume (at least
  ``receptive_field // 2`` from every face); nearer the border the grid reads a full margin of
  zero *input*, the reference pads each layer's features with zeros, and they differ.
* the volume padded by the full margin on both sides (the grid's own zero pad rule), run once:
  exact-margin stitching equals it at every voxel, border included.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partseg.dataset import InputLayout
from partseg.errors import GeometryError
from partseg.geometry import Box, make_partition, padded_shape
from partseg.infer.partitions import exact_partition, whole_partition
from partseg.infer.predictor import ArrayCase, forward, norm_warning, predict_case, predict_whole
from partseg.infer.stitch import Stitcher
from partseg.models import ModelConfig, build_model
from partseg.precision import resolve_precision

SHAPE = (25, 27, 26)  # not a multiple of any core used below; > the receptive fields (<= 23)
FAMILIES = {
    "unet": {"name": "unet", "depth": 2, "base_width": 4},
    "dilated_unet": {"name": "dilated_unet", "depth": 2, "base_width": 4, "dilations": (1, 2)},
    "residual_se_unet": {"name": "residual_se_unet", "depth": 2, "base_width": 4,
                         "se_reduction": 0},
    "deep_supervision": {"name": "unet", "depth": 2, "base_width": 4, "deep_supervision": True},
    "deepmedic": {"name": "deepmedic", "deepmedic_widths": (4, 4, 4, 4), "deepmedic_fc_width": 8},
}  # fmt: skip
CONTEXT = 1  # context slices per side of the 2D models
TOLERANCE = 1e-5  # max abs logit difference allowed for "equal to float rounding" (seen: 6e-8)


def _model(dims: int, **config) -> torch.nn.Module:
    torch.manual_seed(0)
    in_channels = 2 if dims == 3 else 2 * (2 * CONTEXT + 1)
    config = {"name": "unet", "depth": 2, "base_width": 4, **config}
    model = build_model(
        ModelConfig(spatial_dims=dims, in_channels=in_channels, out_channels=3, **config)
    )
    for m in model.modules():  # non-trivial running statistics, so eval BN is not the identity
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _case(shape=SHAPE) -> ArrayCase:
    """(2, *shape) arange-based values: an offset shows up as a wrong number."""
    n = int(np.prod(shape))
    ramp = (np.arange(2 * n, dtype=np.float32) % 97 / 48.0 - 1.0).reshape(2, *shape)
    noise = np.random.default_rng(0).normal(scale=0.5, size=ramp.shape).astype(np.float32)
    return ArrayCase("c1", ramp + noise)


def _layout_and_partition(dims: int, model, core: int | None = None):
    s = model.total_stride
    core = core or 2 * s
    if dims == 3:
        layout = InputLayout(3)
        return layout, exact_partition(model, (core,) * 3, layout)
    layout = InputLayout(2, slice_axis=0)
    base = make_partition((1, core, core), [(CONTEXT, CONTEXT), (0, 0), (0, 0)], (1, s, s))
    return layout, exact_partition(model, None, layout, base=base)


def _run(model, volume: np.ndarray, layout, slab: int) -> np.ndarray:
    """Logits (K, *spatial) of a zero-padded (C, *padded) volume: once (3D) or per slice (2D)."""
    with torch.no_grad():
        if layout.spatial_dims == 3:
            return model(torch.from_numpy(volume[None]))[0].numpy()
        slices = [
            layout.image_to_network(volume[:, z : z + slab])
            for z in range(volume.shape[1] - slab + 1)
        ]
        return np.moveaxis(model(torch.from_numpy(np.stack(slices))).numpy(), 0, 1)


def _model_of_volume(model, case, partition, layout) -> np.ndarray:
    """``model(volume)``: zeros only at the end up to the stride (2D: context slices around)."""
    pad = [(0, 0)]
    for a, (n, s) in enumerate(zip(case.shape, partition.stride, strict=True)):
        if layout.spatial_dims == 2 and a == layout.slice_axis:
            pad.append((partition.margin_before[a], partition.margin_after[a]))
        else:
            pad.append((0, -n % s))
    out = _run(model, np.pad(case.image, pad), layout, partition.input_size[0])
    return out[(slice(None), *(slice(0, n) for n in case.shape))]


def _margin_padded(model, case, partition, layout) -> np.ndarray:
    """The volume padded by the full margins (the grid's zero pad rule), run once, cropped."""
    padded = padded_shape(case.shape, partition)
    before = partition.margin_before
    pad = [(0, 0)] + [(b, p - n - b) for b, p, n in zip(before, padded, case.shape, strict=True)]
    out = _run(model, np.pad(case.image, pad), layout, partition.input_size[0])
    if layout.spatial_dims == 2:  # the slices already start at volume z = 0
        before = (0, *before[1:])
    return out[(slice(None), *(slice(b, b + n) for b, n in zip(before, case.shape, strict=True)))]


def _no_margin(partition, layout):
    """The partition without in-plane context (2D keeps its context slices)."""
    pairs = [
        (b, a) if layout.spatial_dims == 2 and axis == layout.slice_axis else (0, 0)
        for axis, (b, a) in enumerate(
            zip(partition.margin_before, partition.margin_after, strict=True)
        )
    ]
    return make_partition(partition.core, pairs, partition.stride, ndim=partition.ndim)


def _interior(model, shape, layout) -> tuple[slice, ...]:
    """Voxels whose receptive field lies inside the volume (2D: every slice)."""
    half = model.receptive_field // 2
    planar = [not (layout.spatial_dims == 2 and a == layout.slice_axis) for a in range(3)]
    inner = [
        slice(half, n - half) if p else slice(None) for p, n in zip(planar, shape, strict=True)
    ]
    return (slice(None), *inner)


def _logits(case, partition, k=3, blend="crop"):
    return Stitcher(case.shape, partition, k, blend=blend, activation="none", dtype=np.float32)


@pytest.mark.parametrize("dims", [3, 2])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_exact_margin_grid_equals_the_references(family: str, dims: int):
    model = _model(dims, **FAMILIES[family])
    shape = SHAPE if family != "deepmedic" else (31, 33, 32)  # receptive field 29
    case = _case(shape)
    layout, partition = _layout_and_partition(dims, model)
    s = model.total_stride
    planar = [a for a in range(3) if not (dims == 2 and a == 0)]
    assert all(partition.margin_before[a] % s == 0 for a in planar)  # on the volume's stride grid
    assert min(partition.margin_before[a] for a in planar) >= model.receptive_field // 2
    stitched = predict_case(
        model, case, partition, layout, batch_size=3, stitcher=_logits(case, partition)
    )
    whole_stitcher = _logits(case, whole_partition(partition, case.shape, layout))
    whole = predict_whole(model, case, partition, layout, batch_size=4, stitcher=whole_stitcher)
    assert stitched.shape == whole.shape == (3, *shape)
    padded = _margin_padded(model, case, partition, layout)
    # --partition none: model(volume) with the trained margin of zeros around it
    assert np.abs(whole - padded).max() <= TOLERANCE
    assert np.abs(stitched - padded).max() <= TOLERANCE  # the grid adds nothing, border included
    plain = _model_of_volume(model, case, partition, layout)  # no zeros around the volume
    inner = _interior(model, shape, layout)
    assert np.abs(stitched[inner] - plain[inner]).max() <= TOLERANCE
    assert np.abs(stitched - plain).max() > 1e-4  # the border: zero input vs zero features
    no_margin = _no_margin(partition, layout)  # a model trained without context runs plain
    whole_stitcher = _logits(case, whole_partition(no_margin, case.shape, layout))
    bare = predict_whole(model, case, no_margin, layout, batch_size=4, stitcher=whole_stitcher)
    assert np.abs(bare - plain).max() <= TOLERANCE
    assert norm_warning(model) is None


@pytest.mark.parametrize("dims", [3, 2])
def test_whole_partition_pads_the_trained_margin_then_the_stride(dims: int):
    model = _model(dims)
    layout, partition = _layout_and_partition(dims, model)
    before, after = partition.margin_before, partition.margin_after
    whole = whole_partition(partition, (7, 13, 10), layout)
    cubes = whole.grid((7, 13, 10))
    plane = [(-before[a], before[a] + n + after[a]) for a, n in ((1, 14), (2, 10))]
    if dims == 3:
        z = (-before[0], before[0] + 8 + after[0])
        assert [c.input_box for c in cubes] == [Box(*zip(z, *plane, strict=True))]
    else:  # whole slices, each with the trained context slices
        boxes = [c.input_box for c in cubes]
        expected = [
            Box(*zip((z - CONTEXT, 2 * CONTEXT + 1), *plane, strict=True)) for z in range(7)
        ]
        assert boxes == expected


def test_default_output_is_probabilities_of_the_stitched_logits():
    model = _model(3)
    case = _case()
    layout, partition = _layout_and_partition(3, model)
    probabilities = predict_case(model, case, partition, layout)
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, *SHAPE)
    np.testing.assert_allclose(probabilities.sum(0), 1, rtol=1e-5)
    logits = _margin_padded(model, case, partition, layout)
    expected = np.exp(logits) / np.exp(logits).sum(0)
    assert np.abs(probabilities - expected).max() <= 1e-5


def test_small_margin_is_not_exact():
    model = _model(3)
    case = _case()
    layout = InputLayout(3)
    small = make_partition((8, 8, 8), 2, stride=model.total_stride)
    reference = _margin_padded(model, case, small, layout)
    crop = predict_case(model, case, small, layout, stitcher=_logits(case, small))
    assert np.abs(crop - reference).max() > 1e-3


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_instance_and_group_norm_are_flagged_and_differ_from_whole(norm):
    model = _model(3, norm=norm)
    case = _case()
    layout, partition = _layout_and_partition(3, model)
    assert "cannot equal whole-volume" in norm_warning(model)
    stitched = predict_case(model, case, partition, layout, stitcher=_logits(case, partition))
    reference = _model_of_volume(model, case, partition, layout)
    inner = _interior(model, SHAPE, layout)
    assert np.abs(stitched[inner] - reference[inner]).max() > 1e-3


@pytest.mark.parametrize("blend", ["average", "gaussian", "hann"])
def test_blends_of_a_pointwise_model_equal_the_model(blend):
    conv = torch.nn.Conv3d(2, 3, 1)
    conv.out_channels = 3
    case = _case()
    partition = make_partition((4, 4, 4), 2, stride=1)
    out = predict_case(
        conv.eval(), case, partition, InputLayout(3), batch_size=4,
        stitcher=_logits(case, partition, blend=blend),
    )  # fmt: skip
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


def test_bf16_precision_runs_in_bfloat16_and_returns_float32():
    model = _model(3)
    x = torch.randn(1, 2, 8, 8, 8)
    out = forward(model, x, precision=resolve_precision("bf16", "cpu"))
    full = forward(model, x, precision=resolve_precision("off", "cpu"))
    assert out.dtype == torch.float32
    assert 0 < (out - full).abs().max() < 0.1  # bf16 rounding, not a different result
    assert torch.equal(full, forward(model, x))  # None = fp32


def test_exact_partition_margin_is_half_the_receptive_field_on_the_stride_grid():
    model = _model(3, depth=3)
    partition = exact_partition(model, (8, 8, 8), InputLayout(3))
    half = -(-model.receptive_field // 2)
    stride = model.total_stride
    assert all(b == a == -(-half // stride) * stride for b, a in
               zip(partition.margin_before, partition.margin_after, strict=True))  # fmt: skip
    with pytest.raises(GeometryError):
        exact_partition(model, None, InputLayout(3))


def test_array_case_reads_zero_outside_the_volume():
    image = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    case = ArrayCase("a", image, label=np.ones((3, 4, 5), np.uint8))
    got, label = case.read(Box((-1, 2, 3), (2, 3, 3)))
    assert got[1, 1, 0, 0] == image[1, 0, 2, 3]
    assert got[:, 0].sum() == 0 and got[:, :, 2].sum() == 0 and got[:, :, :, 2].sum() == 0
    assert label.sum() == 1 * 2 * 2
