"""CasePredictor: modes and their fallback, blend overlap, model-store checks, settings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from partseg.checkpoint import LoadedModel
from partseg.dataset import InputLayout
from partseg.errors import CheckpointError, ConfigError
from partseg.geometry import make_partition
from partseg.infer.ensemble import check_members
from partseg.infer.modes import MODES, CaseJob, Mode
from partseg.infer.outputs import zarr_sink
from partseg.infer.pipeline import CasePredictor
from partseg.infer.predictor import ArrayCase
from partseg.infer.seams import seam_index
from partseg.infer.settings import PredictSettings
from partseg.models import ModelConfig, build_model
from partseg.registry import Entry

SHAPE = (12, 16, 14)


def _model(dims: int = 3, norm: str = "batch", in_channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        name="unet", spatial_dims=dims, in_channels=in_channels, out_channels=3, depth=2,
        base_width=4, norm=norm,
    )  # fmt: skip
    return build_model(cfg).eval()


def _case(channels: int = 1) -> ArrayCase:
    n = int(np.prod(SHAPE))
    ramp = (np.arange(channels * n, dtype=np.float32) % 31 / 15.0 - 1.0).reshape(channels, *SHAPE)
    return ArrayCase("c1", ramp)


def _predictor(model, partition, **settings) -> CasePredictor:
    messages: list[str] = []
    settings = {"device": "cpu", "mode": "grid", **settings}  # grid unless a test says otherwise
    predictor = CasePredictor.from_model(
        model, partition, InputLayout(3), PredictSettings(**settings), log=messages.append
    )
    predictor.messages = messages  # type: ignore[attr-defined]
    return predictor


def test_gaussian_with_margin_zero_blends_and_differs_from_crop():
    model, case = _model(), _case()
    trained = make_partition((8, 8, 8), 0, stride=2)  # no context margin at all
    crop = _predictor(model, trained)
    gaussian = _predictor(model, trained, blend="gaussian")  # default overlap 0.5 of the core
    assert crop.overlap == (0, 0, 0) and crop.partition.input_size == (8, 8, 8)
    assert gaussian.overlap == (2, 2, 2)  # neighbours share half a core: 2 voxels per side
    assert gaussian.partition.input_size == (12, 12, 12)  # region 12 = core 8 + 2 x 2
    a, b = crop.predict(case).probabilities, gaussian.predict(case).probabilities
    assert np.abs(a - b).max() > 1e-3  # the recipe's blend really blends now
    assert seam_index(b, (8, 8, 8)) < seam_index(a, (8, 8, 8))  # and hides the core faces
    wider = _predictor(model, trained, blend="gaussian", overlap=8)  # 8 voxels: 4 per side
    assert wider.overlap == (4, 4, 4) and wider.partition.margin_after == (4, 4, 4)


def test_blends_of_exact_predictions_stay_exact():
    model, case = _model(), _case()
    trained = make_partition((8, 8, 8), 2, stride=2)
    crop = _predictor(model, trained, margin="exact").predict(case).probabilities
    for blend in ("average", "hann"):
        blended = _predictor(model, trained, margin="exact", blend=blend, overlap=0.5)
        assert all(m % 2 == 0 for m in blended.partition.margin_before)  # on the stride grid
        assert np.abs(blended.predict(case).probabilities - crop).max() <= 1e-5


def test_modes_none_and_grid_and_labels_only_output():
    model, case = _model(), _case()
    trained = make_partition((8, 8, 8), 2, stride=2)
    grid = _predictor(model, trained).predict(case)
    labels_only = _predictor(model, trained).predict(case, probabilities=False)
    assert labels_only.probabilities is None
    np.testing.assert_array_equal(labels_only.labels, grid.labels)
    whole = _predictor(model, trained, mode="none").predict(case)
    x = torch.nn.functional.pad(torch.from_numpy(case.image[None]), (2,) * 6)  # trained margin
    with torch.no_grad():  # SHAPE and the margins are multiples of the stride
        expected = torch.softmax(model(x)[0], 0).numpy()[:, 2:-2, 2:-2, 2:-2]
    assert np.abs(whole.probabilities - expected).max() <= 1e-5
    exact = _predictor(model, trained, mode="exact").predict(case)
    assert np.abs(exact.probabilities - expected).max() <= 1e-5


def test_predict_restores_the_training_mode_and_postprocesses():
    model, case = _model().train(), _case()
    trained = make_partition((8, 8, 8), 2, stride=2)
    predictor = _predictor(model, trained, min_component_size=10_000)
    prediction = predictor.predict(case)
    assert model.training  # validation hands the model back to training
    assert (prediction.labels == 0).all()  # every component is smaller than 10000 voxels


def test_unsupported_mode_falls_back_to_grid_with_a_note(monkeypatch):
    tiled = Mode(lambda job: None, unsupported=lambda model, layout: "it uses instance norm")
    monkeypatch.setitem(MODES._entries, "tiled", Entry("tiled", tiled))
    predictor = _predictor(_model(norm="instance"), make_partition((8, 8, 8), 2, stride=2),
                           mode="tiled")  # fmt: skip
    assert predictor.mode_name == "grid" and predictor.mode is MODES.get("grid")
    assert any("'tiled' cannot run this model: it uses instance norm" in m
               for m in predictor.messages)  # fmt: skip
    assert predictor.predict(_case()).probabilities.shape == (3, *SHAPE)


def test_a_new_mode_gets_the_job_and_writes_through_its_backend(monkeypatch, tmp_path: Path):
    seen: list[CaseJob] = []

    def constant(job: CaseJob):
        seen.append(job)
        backend = job.backend((4, 4, 4))
        for z in range(0, job.shape[0], 4):
            for y in range(0, job.shape[1], 4):
                for x in range(0, job.shape[2], 4):
                    index = (slice(None), slice(z, z + 4), slice(y, y + 4), slice(x, x + 4))
                    block = np.zeros(backend.result()[index].shape, job.dtype)
                    block[1] = 1.0
                    backend.write(index, block)
        return backend.result()

    monkeypatch.setitem(MODES._entries, "constant", Entry("constant", Mode(constant)))
    predictor = _predictor(_model(), make_partition((8, 8, 8), 2, stride=2), mode="constant",
                           precision="bf16", tta=True)  # fmt: skip
    sink = zarr_sink(tmp_path / "p.zarr")
    prediction = predictor.predict(_case(), dtype=np.float16, sink=sink)
    (job,) = seen
    assert job.precision.mode == "bf16" and job.tta and job.activation == "softmax"
    assert job.output == "values" and job.dtype == np.float16
    assert prediction.probabilities.chunks == (3, 4, 4, 4)  # a zarr array at the temporary name
    assert (tmp_path / ".tmp-p.zarr").is_dir()
    assert (prediction.labels == 1).all()


def _loaded(path: str, *, channels=("t1",), classes=("bg", "fg"), in_channels=1, derived=()):
    model = _model(in_channels=in_channels)
    return LoadedModel(
        model=model, model_config=model.config, partition=make_partition((8, 8, 8), 2, stride=2),
        layout=InputLayout(3), classes=tuple(classes), channels=tuple(channels), label_mapping={},
        config={}, path=Path(path), derived_channels=tuple(derived),
    )  # fmt: skip


def test_check_store_reports_every_mismatch_at_once():
    member = _loaded("a.pt", channels=("t1", "t2"), classes=("bg", "a", "b"), in_channels=2)
    predictor = CasePredictor.from_model(
        member.model, member.partition, member.layout, PredictSettings(device="cpu")
    )
    predictor.members = (member,)
    store = SimpleNamespace(url="s.zarr", channels=("flair",), classes=("bg", "fg"))
    with pytest.raises(CheckpointError) as err:
        predictor.check_store(store)
    message = str(err.value)
    assert "trained on channels ['t1', 't2']" in message
    assert "takes 2 input channels but the store gives 1" in message
    assert "predicts classes ['bg', 'a', 'b']" in message
    derived = _loaded("d.pt", derived=("sobel:3",))
    predictor.members = (derived,)
    with pytest.raises(CheckpointError, match="sobel"):
        predictor.check_store(SimpleNamespace(url="s", channels=("t1",), classes=("bg", "fg")))


def test_ensemble_members_must_agree_on_everything_they_share():
    a = _loaded("a.pt")
    b = _loaded("b.pt", channels=("t2",), derived=("sobel:0",))
    with pytest.raises(CheckpointError) as err:
        check_members([a, b])
    assert "channels" in str(err.value) and "derived_channels" in str(err.value)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"mode": "tiles"}, "partition='tiles'"),
        ({"precision": "fp8"}, "amp='fp8'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"mode": "grid", "blend": "crop", "overlap": 4}, "crop keeps each core once"),
        ({"mode": "grid", "blend": "hann", "overlap": 0.0}, "equals crop"),
        ({"mode": "grid", "blend": "hann", "overlap": 3}, "even"),
        ({"mode": "grid", "blend": "hann", "overlap": 1.5}, r"\[0, 1\]"),
        ({"mode": "grid", "margin": -1}, "negative"),
        ({"batch_size": 0}, "at least 1"),
        ({"margin": 8}, "margin=8 shape the minicube grid.*--partition grid"),
        ({"blend": "gaussian", "mode": "none"}, "blend='gaussian' shape the minicube grid"),
    ],
)
def test_settings_are_checked_when_made(settings, match):
    with pytest.raises(ConfigError, match=match):
        PredictSettings(**settings)


@pytest.mark.parametrize(("mode", "tta"), [("exact", False), ("exact", True), ("grid", False),
                                           ("none", True)])  # fmt: skip
def test_progress_within_a_case_rises_to_one_in_every_mode(mode: str, tta: bool) -> None:
    model, case = _model(), _case()
    predictor = _predictor(model, make_partition((4, 8, 8), 2, stride=2), mode=mode, tta=tta)
    shares: list[float] = []
    with_progress = predictor.predict(case, progress=shares.append)
    assert shares and shares == sorted(shares) and shares[-1] == 1.0
    if mode == "grid":
        assert len(shares) > 1  # one report per finished chunk of the output
    without = predictor.predict(case)  # reporting changes nothing
    np.testing.assert_array_equal(with_progress.labels, without.labels)
