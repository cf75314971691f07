"""Region models (one sigmoid per region) and channels matched by alias, through every path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from partseg.checkpoint import LoadedModel
from partseg.dataset import InputLayout
from partseg.errors import CheckpointError, GeometryError
from partseg.geometry import make_partition
from partseg.infer.engine import predict_layerwise
from partseg.infer.ensemble import EnsembleModel, check_members
from partseg.infer.pipeline import CasePredictor, ReorderedCase
from partseg.infer.predictor import ArrayCase, predict_case
from partseg.infer.settings import PredictSettings
from partseg.infer.stitch import Stitcher, labels_from_probabilities, labels_from_regions
from partseg.models import ModelConfig, build_model
from partseg.store.editions import BRATS23_CHANNELS, BRATS_CHANNELS
from partseg.store.regions import Regions

SHAPE = (10, 12, 9)
BRATS = Regions(("whole_tumor", "tumor_core", "enhancing"), ((1, 2, 3), (2, 3), (3,)), (1, 2, 3))
MSD_ORDER = ("FLAIR", "T1w", "t1gd", "T2w")


def _model(in_channels: int = 4, out_channels: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(depth=2, base_width=4, in_channels=in_channels, out_channels=out_channels)
    return build_model(cfg).eval()


def _case(channels=BRATS_CHANNELS) -> ArrayCase:
    n = int(np.prod(SHAPE))
    image = (np.arange(4 * n, dtype=np.float32) % 23 / 11.0 - 1.0).reshape(4, *SHAPE)
    return ArrayCase("c1", image, attrs={"channels": list(channels)})


def _predictor(model, regions=BRATS, mode="grid", channels=BRATS_CHANNELS) -> CasePredictor:
    predictor = CasePredictor(
        model, make_partition((4, 4, 4), 2, stride=2), InputLayout(3),
        PredictSettings(device="cpu", mode=mode), regions=regions, channels=channels,
        log=lambda _m: None,
    )  # fmt: skip
    return predictor


def test_the_last_region_above_half_wins_as_in_nnunet() -> None:
    p = np.array(
        [
            [0.2, 0.9, 0.9, 0.9, 0.3],  # whole tumour
            [0.1, 0.2, 0.8, 0.8, 0.7],  # tumour core (the last voxel: core without whole tumour)
            [0.1, 0.1, 0.2, 0.6, 0.1],  # enhancing
        ]
    )
    assert labels_from_regions(p, (1, 2, 3)).tolist() == [0, 1, 2, 3, 2]
    assert labels_from_regions(p, (4, 1, 2)).tolist() == [0, 4, 1, 2, 1]  # values of the order
    assert labels_from_probabilities(p, (1, 2, 3)).tolist() == [0, 1, 2, 3, 2]
    with pytest.raises(GeometryError, match="regions_class_order"):
        labels_from_regions(p, (1, 2))


@pytest.mark.parametrize("blend", ["crop", "gaussian"])
def test_stitched_region_labels_equal_the_rule_on_stitched_probabilities(blend: str) -> None:
    model, case = _model(), _case()
    partition = make_partition((4, 4, 4), 2, stride=2)
    kwargs = {"blend": blend, "region_order": BRATS.order}
    values = predict_case(model, case, partition, InputLayout(3), stitcher=Stitcher(
        SHAPE, partition, 3, dtype=np.float32, **kwargs))  # fmt: skip
    labels = predict_case(model, case, partition, InputLayout(3), stitcher=Stitcher(
        SHAPE, partition, 3, output="labels", **kwargs))  # fmt: skip
    assert values.shape == (3, *SHAPE) and values.min() >= 0 and values.max() <= 1
    assert not np.allclose(values.sum(0), 1.0)  # independent sigmoids, not a softmax
    np.testing.assert_array_equal(labels, labels_from_regions(values, BRATS.order))
    with pytest.raises(GeometryError, match="one sigmoid per region"):
        Stitcher(SHAPE, partition, 3, activation="softmax", output="labels", region_order=(1, 2, 3))
    with pytest.raises(GeometryError, match="3 output channels but 2 regions"):
        Stitcher(SHAPE, partition, 3, region_order=(1, 2))


def test_the_engine_gives_the_same_region_labels() -> None:
    model, case = _model(), _case()
    values = predict_layerwise(model, case, InputLayout(3), region_order=BRATS.order)
    labels = predict_layerwise(
        model, case, InputLayout(3), output="labels", region_order=BRATS.order
    )
    np.testing.assert_array_equal(labels, labels_from_regions(values, BRATS.order))
    assert set(np.unique(labels)) <= {0, 1, 2, 3}


@pytest.mark.parametrize("mode", ["grid", "exact", "none"])
def test_the_pipeline_predicts_region_probabilities_and_ordered_labels(mode: str) -> None:
    predictor = _predictor(_model(), mode=mode)
    prediction = predictor.predict(_case())
    np.testing.assert_array_equal(
        prediction.labels, labels_from_regions(prediction.probabilities, BRATS.order)
    )
    only_labels = predictor.predict(_case(), probabilities=False)
    np.testing.assert_array_equal(only_labels.labels, prediction.labels)


def test_exported_region_probabilities_are_zero_outside_the_crop(tmp_path: Path) -> None:
    import nibabel as nib

    from partseg.infer.outputs import OutputSettings, write_prediction

    case = _case()
    original = (SHAPE[0] + 3, SHAPE[1], SHAPE[2] + 2)
    case.attrs.update(crop_box={"start": [2, 0, 1], "size": list(SHAPE)},
                      original_shape=list(original))  # fmt: skip
    prediction = _predictor(_model()).predict(case)
    assert prediction.regions
    mapping = {v: v for v in range(4)}
    write_prediction(prediction, case, tmp_path, mapping, OutputSettings(probabilities="nifti"))
    full = np.asarray(nib.load(tmp_path / "c1_probabilities.nii.gz").dataobj).transpose(3, 2, 1, 0)
    assert full.shape == (3, *original)
    inside = (slice(None), slice(2, 2 + SHAPE[0]), slice(None), slice(1, 1 + SHAPE[2]))
    np.testing.assert_allclose(full[inside], prediction.probabilities, atol=1e-6)
    outside = np.ones(original, bool)
    outside[inside[1:]] = False
    assert outside.any() and not full[:, outside].any()  # no region (not "whole tumour") outside


def test_a_region_ensemble_averages_sigmoids() -> None:
    a, b = _model(seed=1), _model(seed=2)
    ensemble = EnsembleModel([a, b], sigmoid=True).eval()
    x = torch.randn(1, 4, 4, 4, 4)
    with torch.no_grad():
        mean = (a(x).sigmoid() + b(x).sigmoid()) / 2
        assert torch.allclose(ensemble(x).sigmoid(), mean, atol=1e-6)


def test_another_channel_order_is_read_in_the_models_order() -> None:
    predictor = _predictor(_model())
    case = _case()
    order = [BRATS_CHANNELS.index(c) for c in ("flair", "t1", "t1ce", "t2")]
    msd = ArrayCase("c1", case.image[order], attrs={"channels": list(MSD_ORDER)})
    assert isinstance(predictor.in_model_order(msd), ReorderedCase)
    assert predictor.in_model_order(case) is case  # already in order
    renamed = ArrayCase("c1", case.image, attrs={"channels": list(BRATS23_CHANNELS)})
    assert predictor.in_model_order(renamed) is renamed  # 2023 names, same order
    expected = predictor.predict(case)
    for other in (msd, renamed):
        got = predictor.predict(other)
        np.testing.assert_array_equal(got.labels, expected.labels)
        np.testing.assert_array_equal(got.probabilities, expected.probabilities)


def _loaded(path: str, channels, regions=None) -> LoadedModel:
    model = _model()
    return LoadedModel(
        model=model, model_config=model.config, partition=make_partition((4, 4, 4), 2, stride=2),
        layout=InputLayout(3), classes=("bg", "a", "b", "c"), channels=tuple(channels),
        label_mapping={}, config={}, path=Path(path), regions=regions,
    )  # fmt: skip


def test_a_2020_model_fits_a_2023_store_and_an_msd_ordered_one() -> None:
    predictor = _predictor(_model())
    notes: list[str] = []
    predictor.log = notes.append
    predictor.members = (_loaded("m.pt", BRATS_CHANNELS, BRATS),)
    for channels in (BRATS23_CHANNELS, MSD_ORDER):
        store = SimpleNamespace(url="s", channels=channels, classes=("bg", "a", "b", "c"),
                                regions=BRATS)  # fmt: skip
        predictor.check_store(store)
    assert len(notes) == 1 and "read in the model's order ['t1', 't1ce', 't2', 'flair']" in notes[0]
    bad = SimpleNamespace(url="s", channels=("t1", "t1ce", "t2", "adc"), classes=("bg", "a", "b",
                          "c"), regions=Regions(("wt",), ((1, 2, 3),), (1,)))  # fmt: skip
    with pytest.raises(CheckpointError) as info:
        predictor.check_store(bad)
    assert "no channel matches ['flair']" in str(info.value)
    assert "predicts regions" in str(info.value)


def test_ensemble_members_of_both_editions_agree_but_not_other_orders_or_regions() -> None:
    check_members([_loaded("a.pt", BRATS_CHANNELS), _loaded("b.pt", BRATS23_CHANNELS)])
    with pytest.raises(CheckpointError, match="channels"):
        check_members([_loaded("a.pt", BRATS_CHANNELS), _loaded("b.pt", MSD_ORDER)])
    with pytest.raises(CheckpointError, match="regions"):
        check_members([_loaded("a.pt", BRATS_CHANNELS, BRATS), _loaded("b.pt", BRATS_CHANNELS)])
