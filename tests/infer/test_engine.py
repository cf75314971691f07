"""The layer-wise engine equals the padded whole-volume forward ``model(volume)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partseg.channels import build_derive
from partseg.dataset import InputLayout
from partseg.errors import NotTileableError
from partseg.geometry import make_partition
from partseg.infer.engine import EngineStats, predict_layerwise, stride_padded
from partseg.infer.pipeline import CasePredictor
from partseg.infer.predictor import ArrayCase
from partseg.infer.settings import PredictSettings
from partseg.infer.stitch import ZarrBackend, labels_from_probabilities
from partseg.models import ModelConfig, build_model

FAMILIES = {
    "unet": {},
    "unet_interpolate": {"upsample": "interpolate"},
    "unet_strided": {"downsample": "strided"},
    "dilated_unet": {"name": "dilated_unet"},
    "residual_se_unet": {"name": "residual_se_unet"},
    "deep_supervision": {"deep_supervision": True, "depth": 4},
    "deepmedic": {"name": "deepmedic", "deepmedic_widths": (4,) * 5, "deepmedic_fc_width": 6},
}


def make_model(dims: int = 3, *, in_channels: int = 2, **changes) -> torch.nn.Module:
    """A tiny model with He-initialised convs and random BatchNorm statistics (eval mode)."""
    torch.manual_seed(0)
    values = {"depth": 3, "base_width": 4, "in_channels": in_channels, "out_channels": 3}
    model = build_model(ModelConfig(spatial_dims=dims, **{**values, **changes}))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.conv._ConvNd):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.normal_(0, 0.5)
    return model.eval()


def volume(shape: tuple[int, ...], channels: int = 2) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(channels, *shape)).astype(np.float32)


def reference(model, image: np.ndarray, *, flips=((),), border: int = 0) -> np.ndarray:
    """Softmax of ``model(image)``: ``border`` zeros before and after each axis, then zeros at
    the end to the stride; cropped back."""
    shape = image.shape[1:]
    padded = stride_padded(tuple(s + 2 * border for s in shape), int(model.total_stride))
    inside = tuple(slice(border, border + s) for s in shape)
    x = torch.zeros(1, image.shape[0], *padded)
    x[(0, slice(None), *inside)] = torch.from_numpy(image)
    total = 0
    with torch.no_grad():
        for flip in flips:
            dims = [d + 2 for d in flip]
            out = model(x.flip(dims) if dims else x)
            total = total + (out.flip(dims) if dims else out)
    probs = torch.softmax(total / len(flips), 1)[0]
    return probs[(slice(None), *inside)].numpy()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("shape", [(21, 14, 11), (8, 16, 8)])
def test_every_3d_family_equals_the_whole_volume_forward(family: str, shape) -> None:
    model = make_model(**FAMILIES[family])
    image = volume(shape)
    probs = predict_layerwise(model, ArrayCase("c", image), InputLayout(), slab=4)
    expected = reference(model, image)
    assert probs.shape == expected.shape == (3, *shape)
    assert np.abs(probs - expected).max() <= 1e-5
    assert expected.std() > 0.05  # a model whose output ignores the input would prove nothing


@pytest.mark.parametrize("shape", [(3, 5, 2), (1, 1, 1), (7, 3, 9)])
def test_volumes_smaller_than_one_slab_or_the_stride(shape) -> None:
    model = make_model()
    image = volume(shape)
    probs = predict_layerwise(model, ArrayCase("c", image), InputLayout(), slab=8)
    assert np.abs(probs - reference(model, image)).max() <= 1e-5


@pytest.mark.parametrize("family", ["unet", "residual_se_unet"])
def test_zarr_buffers_and_zarr_output(tmp_path, family: str) -> None:
    model = make_model(**FAMILIES[family])
    image = volume((18, 10, 12))
    backend = ZarrBackend.create(tmp_path / "p.zarr", (3, 18, 10, 12), (3, 4, 10, 12), np.float32)
    stats = EngineStats()
    out = predict_layerwise(model, ArrayCase("c", image), InputLayout(), slab=4,
                            buffers="zarr", backend=backend, stats=stats)  # fmt: skip
    assert np.abs(out[:] - reference(model, image)).max() <= 1e-5
    assert stats.peak_buffer_bytes < image.nbytes  # only the image rows stay in RAM


def test_labels_output_is_the_argmax_of_the_reference() -> None:
    model = make_model()
    image = volume((12, 9, 10))
    labels = predict_layerwise(model, ArrayCase("c", image), InputLayout(), output="labels")
    assert labels.dtype == np.uint8
    assert (labels == labels_from_probabilities(reference(model, image))).mean() > 0.999


def test_test_time_flips_equal_the_flipped_whole_volume_forwards() -> None:
    model = make_model()
    image = volume((13, 10, 11))
    probs = predict_layerwise(model, ArrayCase("c", image), InputLayout(), tta=True, slab=4)
    flips = [(), (0,), (1,), (0, 1), (2,), (0, 2), (1, 2), (0, 1, 2)]
    assert np.abs(probs - reference(model, image, flips=flips)).max() <= 1e-5


def test_derived_sobel_channel_is_computed_over_the_whole_volume() -> None:
    model = make_model(in_channels=3)
    image = volume((14, 9, 10))
    derive = build_derive(["sobel:0"])
    probs = predict_layerwise(model, ArrayCase("c", image), InputLayout(), derive=derive, slab=4)
    padded = stride_padded(image.shape[1:], 4)
    whole = np.zeros((2, *padded), np.float32)
    whole[:, :14, :9, :10] = image
    expected = reference(model, derive(whole))[:, :14, :9, :10]
    assert np.abs(probs - expected).max() <= 1e-5


@pytest.mark.parametrize("family", ["unet", "deepmedic"])
def test_2d_models_run_whole_slices_with_their_context(family: str) -> None:
    config = {**FAMILIES[family], "depth": 3}
    model = make_model(2, in_channels=2 * 3, **config)  # 1 context slice on each side
    image = volume((6, 9, 7))
    layout = InputLayout(spatial_dims=2, slice_axis=0)
    stride = int(model.total_stride)
    partition = make_partition((1, stride, stride), [(1, 1), (0, 0), (0, 0)], (1, stride, stride))
    settings = PredictSettings(mode="exact", device="cpu", batch_size=4)
    predictor = CasePredictor.from_model(model, partition, layout, settings)
    assert predictor.mode_name == "exact"
    probs = predictor.predict(ArrayCase("c", image)).probabilities
    stacked = np.zeros((2, 8, 9, 7), np.float32)  # zero slices beyond both ends
    stacked[:, 1:7] = image
    for z in range(6):
        x = stacked[:, z : z + 3].reshape(6, 9, 7)
        assert np.abs(probs[:, z] - reference(model, x)).max() <= 1e-5


def test_the_exact_mode_falls_back_to_the_grid_for_instance_norm() -> None:
    model = make_model(norm="instance")
    partition = make_partition((8, 8, 8), 4, stride=4)
    notes: list[str] = []
    settings = PredictSettings(device="cpu")
    predictor = CasePredictor.from_model(
        model, partition, InputLayout(), settings, log=notes.append
    )
    assert predictor.mode_name == "grid"
    assert any("InstanceNorm3d" in n and "using 'grid'" in n for n in notes)


def test_the_exact_mode_of_the_pipeline_is_the_engine() -> None:
    model = make_model()
    image = volume((21, 14, 11))
    partition = make_partition((8, 8, 8), 4, stride=4)  # trained with 4 voxels of context
    predictor = CasePredictor.from_model(model, partition, InputLayout(), PredictSettings())
    prediction = predictor.predict(ArrayCase("c", image))
    # the network input has the trained margin of zeros around the case, as training saw
    expected = reference(model, image, border=4)
    assert np.abs(prediction.probabilities - expected).max() <= 1e-5
    assert np.abs(prediction.probabilities - reference(model, image)).max() > 1e-3
    tta = CasePredictor.from_model(model, partition, InputLayout(), PredictSettings(tta=True))
    flips = [(), (0,), (1,), (0, 1), (2,), (0, 2), (1, 2), (0, 1, 2)]
    expected = reference(model, image, flips=flips, border=4)
    assert np.abs(tta.predict(ArrayCase("c", image)).probabilities - expected).max() <= 1e-5


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_per_input_norms_are_refused_with_a_clear_message(norm: str) -> None:
    model = make_model(norm=norm)
    with pytest.raises(NotTileableError, match=r"statistics of its whole input.*--blend"):
        predict_layerwise(model, ArrayCase("c", volume((8, 8, 8))), InputLayout())


def test_buffers_hold_a_window_of_rows_not_the_volume() -> None:
    model = make_model(depth=3, base_width=4)
    peaks = {}
    for depth in (64, 128):
        stats = EngineStats()
        image = volume((depth, 8, 8))
        predict_layerwise(model, ArrayCase("c", image), InputLayout(), slab=4, stats=stats)
        peaks[depth] = stats.peak_buffer_bytes
    # the retained rows span the receptive field, so doubling the depth keeps the peak
    assert peaks[128] <= peaks[64] * 1.05
    full_resolution_features = 4 * 128 * 8 * 8 * 4  # one 4-channel fp32 feature map
    assert peaks[128] < 2 * full_resolution_features


def test_bf16_stays_within_its_rounding() -> None:
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("bf16 on this CPU is emulated; the check would take minutes")
    model = make_model()
    image = volume((16, 8, 8))
    probs = predict_layerwise(model, ArrayCase("c", image), InputLayout(), precision="bf16")
    assert np.abs(probs - reference(model, image)).max() < 0.05


def test_auto_buffers_go_to_disk_when_the_rows_would_not_fit(monkeypatch) -> None:
    from partseg.infer import engine

    model = make_model()
    image = volume((16, 8, 8))
    chosen = []
    real = engine._buffer

    def spy(node, kind, *args):
        chosen.append(kind)
        return real(node, kind, *args)

    monkeypatch.setattr(engine, "_buffer", spy)
    monkeypatch.setattr(engine, "available_ram", lambda: 2 * engine.held_bytes(model, (16, 8, 8)))
    predict_layerwise(model, ArrayCase("c", image), InputLayout())
    assert set(chosen) == {"memory"}
    chosen.clear()
    monkeypatch.setattr(engine, "available_ram", lambda: engine.held_bytes(model, (16, 8, 8)))
    probs = predict_layerwise(model, ArrayCase("c", image), InputLayout())
    assert set(chosen) == {"zarr"}
    assert np.abs(probs - reference(model, image)).max() <= 1e-5
