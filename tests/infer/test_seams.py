"""Seam measures: reference error and the reference-free seam index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partseg.dataset import InputLayout
from partseg.geometry import make_partition
from partseg.infer.predictor import ArrayCase, predict_case
from partseg.infer.seams import reference_error, seam_index, seam_report
from partseg.models import ModelConfig, build_model


def test_reference_error_counts_changed_labels():
    a = np.zeros((2, 3, 4, 5), np.float32)
    a[0] = 1  # label 0 everywhere
    b = a.copy()
    b[1, 0, 0, :2] = 2  # two voxels switch to label 1
    error = reference_error(a, b, slab=2)
    assert error["max_abs"] == 2
    assert error["mean_abs"] == pytest.approx(4 / a.size)
    assert error["changed_label_share"] == pytest.approx(2 / 60)


def test_reference_error_labels_region_models_by_the_region_rule():
    # whole tumour, tumour core, enhancing: the argmax and the region rule disagree here
    a = np.array([0.9, 0.8, 0.2], np.float32).reshape(3, 1, 1, 1)
    b = np.array([0.9, 0.8, 0.7], np.float32).reshape(3, 1, 1, 1)  # enhancing above 0.5
    assert reference_error(a, b)["changed_label_share"] == 0  # argmax: channel 0 in both
    assert reference_error(a, b, region_order=(1, 2, 3))["changed_label_share"] == 1  # 2 -> 3


@pytest.mark.parametrize("slab", [2, 4, None])
def test_seam_index_is_one_for_smooth_and_large_for_a_step_on_faces(slab):
    z, y, x = np.meshgrid(np.arange(8.0), np.arange(6.0), np.arange(6.0), indexing="ij")
    smooth = np.stack([x + y + z, -(x + y + z)])  # same |Δ| everywhere
    assert seam_index(smooth, (2, 3, 3), slab=slab) == pytest.approx(1.0)
    stepped = smooth + 5 * np.stack([z // 2, z // 2])  # a jump exactly at every Z core face
    assert seam_index(stepped, (2, 3, 3), slab=slab) > 2
    off_face = smooth + 5 * np.stack([(z + 1) // 2, (z + 1) // 2])  # jumps inside the cores
    assert seam_index(off_face, (2, 3, 3), slab=slab) < 1


def test_seams_of_a_small_margin_prediction_show_and_exact_do_not():
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            name="unet", spatial_dims=3, in_channels=1, out_channels=2, depth=2, base_width=4
        )
    ).eval()
    rng = np.random.default_rng(0)
    case = ArrayCase("c", rng.normal(size=(1, 12, 12, 12)).astype(np.float32))
    layout = InputLayout(3)
    # the reference of the grid's zero pad rule: 10 zeros around the volume, run once
    with torch.no_grad():
        padded = torch.from_numpy(np.pad(case.image, [(0, 0)] + [(10, 10)] * 3)[None])
        logits = model(padded)[0, :, 10:22, 10:22, 10:22]
    reference = torch.softmax(logits, 0).numpy()
    narrow = make_partition((4, 4, 4), 0, stride=2)
    report = seam_report(predict_case(model, case, narrow, layout), narrow.core, reference)
    assert report["max_abs"] > 1e-3
    assert report["seam_index"] > 1.0
    wide = make_partition((4, 4, 4), 10, stride=2)
    exact = seam_report(predict_case(model, case, wide, layout), wide.core, reference)
    assert exact["max_abs"] < 1e-5
    assert exact["seam_index"] < report["seam_index"]
