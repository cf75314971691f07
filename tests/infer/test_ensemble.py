"""Ensembles average member probabilities, minicube by minicube."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partseg.dataset import InputLayout
from partseg.errors import CheckpointError
from partseg.geometry import make_partition
from partseg.infer.ensemble import (
    EnsembleModel,
    average_probabilities,
    ensemble_partition,
)
from partseg.infer.partitions import exact_partition
from partseg.infer.predictor import ArrayCase, predict_case
from partseg.models import ModelConfig, build_model


def _member(seed: int, depth: int = 2) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        name="unet", spatial_dims=3, in_channels=1, out_channels=3, depth=depth, base_width=4
    )
    return build_model(cfg).eval()


def test_ensemble_prediction_equals_average_of_member_predictions():
    members = [_member(0), _member(1)]
    ensemble = EnsembleModel(members).eval()
    rng = np.random.default_rng(0)
    case = ArrayCase("c", rng.normal(size=(1, 7, 9, 10)).astype(np.float32))
    layout = InputLayout(3)
    partition = exact_partition(ensemble, (4, 6, 6), layout)
    assert ensemble.total_stride == 2 and ensemble.receptive_field == members[1].receptive_field
    together = predict_case(ensemble, case, partition, layout)
    separate = average_probabilities([predict_case(m, case, partition, layout) for m in members])
    np.testing.assert_allclose(together, separate, atol=1e-5)


def test_ensemble_partition_takes_widest_margin_and_largest_stride():
    a = make_partition((8, 8, 8), 2, stride=2)
    b = make_partition((8, 8, 8), [(5, 3), (1, 1), (0, 0)], stride=4)
    merged = ensemble_partition([a, b])
    assert merged.stride == (4, 4, 4)
    assert merged.margin_before == (5, 2, 2) and merged.margin_after == (3, 2, 2)


def test_average_probabilities_rejects_mismatched_shapes():
    with pytest.raises(CheckpointError):
        average_probabilities([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(CheckpointError):
        EnsembleModel([])
