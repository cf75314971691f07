"""Coarse-to-fine cascade and the Sobel contour channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partseg.channels import add_sobel_channel, sobel_contour
from partseg.dataset import InputLayout
from partseg.errors import GeometryError
from partseg.geometry import Box, make_partition
from partseg.infer.cascade import predict_cascade, propose_regions, voi_box
from partseg.infer.pipeline import CasePredictor
from partseg.infer.predictor import ArrayCase
from partseg.infer.settings import PredictSettings
from partseg.store.regions import Regions


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


def stage(model, partition, derive=None, regions=None, **settings) -> CasePredictor:
    """A 3D predictor of ``model`` on the minicube grid (the toy models have no layers to lower)."""
    settings = PredictSettings(device="cpu", mode="grid", **settings)
    return CasePredictor(model, partition, InputLayout(3), settings, derive=derive,
                         regions=regions, log=lambda _m: None)  # fmt: skip


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
    coarse = stage(Threshold(), make_partition((8, 8, 8), 0, stride=1))
    fine = stage(ContourGate(), make_partition((8, 8, 8), 2, stride=1), derive=add_sobel_channel)
    result = predict_cascade(coarse, fine, case, voi_size=8, min_size=2)
    assert len(result.vois) == 2 and all(v.size == (8, 8, 8) for v in result.vois)
    expected = (case.image[0] > 0).astype(np.uint8)
    expected[15, 0, 0] = 0  # too small to be proposed: outside every VOI
    np.testing.assert_array_equal(result.labels, expected)
    np.testing.assert_array_equal(result.coarse, (case.image[0] > 0).astype(np.uint8))
    with pytest.raises(GeometryError, match="stride"):
        predict_cascade(
            coarse,
            stage(ContourGate(), make_partition((8, 8, 8), 2, stride=(4, 4, 4))),
            case,
            voi_size=6,
        )


class OneChannelThreshold(torch.nn.Module):
    """A sigmoid 'model' whose foreground logit is the input minus 0.5."""

    out_channels = 1
    total_stride = 1
    receptive_field = 1

    def forward(self, x):
        return x[:, :1] - 0.5


def test_cascade_with_one_channel_models_thresholds_sigmoid_probabilities():
    image = np.zeros((1, 12, 12, 12), np.float32)
    image[0, 2:5, 3:6, 4:7] = 1
    image[0, 2:5, 3:6, 8:10] = 1  # a second blob whose VOI overlaps the first one's
    case = ArrayCase("c", image)
    predictor = stage(OneChannelThreshold(), make_partition((4, 4, 4), 1))
    result = predict_cascade(predictor, predictor, case, voi_size=6)
    expected = (image[0] > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(result.coarse, expected)
    assert len(result.vois) == 2
    overlap_start = max(v.start[2] for v in result.vois)
    assert overlap_start < min(v.stop[2] for v in result.vois)  # the VOIs share voxels
    # averaged (not summed) sigmoid probabilities: background stays 0 where the VOIs overlap
    np.testing.assert_array_equal(result.labels, expected)


class RegionThreshold(torch.nn.Module):
    """Three region logits: whole tumour where x > 0.5, core where x > 1.5, enhancing > 2.5."""

    out_channels = 3
    total_stride = 1
    receptive_field = 1

    def forward(self, x):
        return torch.cat([x[:, :1] - 0.5, x[:, :1] - 1.5, x[:, :1] - 2.5], dim=1)


def test_cascade_of_region_models_labels_by_the_region_order_and_post_processes():
    image = np.zeros((1, 12, 12, 12), np.float32)
    image[0, 2:7, 2:7, 2:7] = 1  # whole tumour
    image[0, 3:6, 3:6, 3:6] = 2  # core
    image[0, 4, 4, 4] = 3  # enhancing
    image[0, 10, 10, 10] = 1  # a one-voxel second lesion
    case = ArrayCase("c", image)
    regions = Regions(("wt", "tc", "et"), ((1, 2, 3), (2, 3), (3,)), (1, 2, 3))
    partition = make_partition((4, 4, 4), 1)
    result = predict_cascade(
        stage(RegionThreshold(), partition, regions=regions),
        stage(RegionThreshold(), partition, regions=regions, keep_largest=True),
        case, voi_size=8,
    )  # fmt: skip
    expected = np.rint(image[0]).astype(np.uint8)
    np.testing.assert_array_equal(result.coarse, expected)  # both lesions proposed
    assert len(result.vois) == 2
    expected[10, 10, 10] = 0  # the fine predictor keeps the largest component only
    np.testing.assert_array_equal(result.labels, expected)  # 1, 2, 3 by the region rule


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
