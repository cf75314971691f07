"""Coarse-to-fine cascade and the Sobel contour channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partseg.channels import add_sobel_channel, sobel_contour
from partseg.dataset import InputLayout
from partseg.errors import GeometryError
from partseg.geometry import Box, make_partition
from partseg.infer.cascade import Stage, predict_cascade, propose_regions, voi_box
from partseg.infer.predictor import ArrayCase


class Threshold(torch.nn.Module):
    """A 'model' whose class-1 logit is the first input channel minus 0.5."""

    out_channels = 2
    total_stride = 1
    receptive_field = 1

    def forward(self, x):
        fg = x[:, :1] - 0.5
        return torch.cat([-fg, fg], dim=1)


class ContourGate(Threshold):
    """Foreground only where the image is bright AND the contour channel is present."""

    def forward(self, x):
        fg = x[:, :1] - 0.5 + 10 * (x[:, 1:2] >= 0) - 10
        return torch.cat([-fg, fg], dim=1)


def _case() -> ArrayCase:
    image = np.zeros((1, 16, 20, 24), np.float32)
    image[0, 2:5, 3:6, 4:7] = 1  # blob A (27 voxels)
    image[0, 10:12, 14:16, 18:20] = 1  # blob B (8 voxels)
    image[0, 15, 0, 0] = 1  # one voxel
    return ArrayCase("c", image)


def test_propose_regions_sorted_by_size_with_centres_and_boxes():
    labels = (_case().image[0] > 0).astype(np.uint8)
    regions = propose_regions(labels, min_size=2)
    assert [r.size for r in regions] == [27, 8]
    assert regions[0].centre == (3, 4, 5) and regions[0].box == Box((2, 3, 4), (3, 3, 3))
    assert propose_regions(labels, max_regions=1)[0].size == 27


def test_voi_box_is_shifted_inside_when_it_fits():
    assert voi_box((0, 10, 23), (8, 8, 8), (16, 20, 24)) == Box((0, 6, 16), (8, 8, 8))
    assert voi_box((2, 2, 2), (8, 8, 8), (4, 20, 24)).start == (-2, 0, 0)  # too thin: centred


def test_cascade_segments_vois_around_coarse_components_only():
    case = _case()
    layout = InputLayout(3)
    coarse = Stage(Threshold(), make_partition((8, 8, 8), 0, stride=1), layout)
    fine = Stage(
        ContourGate(), make_partition((8, 8, 8), 2, stride=1), layout, derive=add_sobel_channel
    )
    result = predict_cascade(coarse, fine, case, voi_size=8, min_size=2)
    assert len(result.vois) == 2 and all(v.size == (8, 8, 8) for v in result.vois)
    expected = (case.image[0] > 0).astype(np.uint8)
    expected[15, 0, 0] = 0  # too small to be proposed: outside every VOI
    np.testing.assert_array_equal(result.labels, expected)
    np.testing.assert_array_equal(result.coarse, (case.image[0] > 0).astype(np.uint8))
    with pytest.raises(GeometryError, match="stride"):
        predict_cascade(
            coarse,
            Stage(ContourGate(), make_partition((8, 8, 8), 2, stride=(4, 4, 4)), layout),
            case,
            voi_size=6,
        )


def test_sobel_contour_of_a_box_matches_the_whole_volume_inside():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(10, 12, 14)).astype(np.float32)
    whole = sobel_contour(volume)
    box = Box((2, 3, 4), (6, 6, 6))
    part = sobel_contour(volume[box.slices()])
    np.testing.assert_allclose(part[1:-1, 1:-1, 1:-1], whole[3:7, 4:8, 5:9], rtol=1e-5)
    assert add_sobel_channel(volume[None]).shape == (2, 10, 12, 14)
    flat = np.ones((5, 5, 5), np.float32)
    assert sobel_contour(flat)[2, 2, 2] == 0  # flat inside, contour only at the zero-padded rim
    assert sobel_contour(flat, dilate=1).shape == (5, 5, 5)
