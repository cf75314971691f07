"""The analytic receptive field bounds, and nearly matches, the measured one."""

from __future__ import annotations

import pytest
import torch

from partseg.models import ModelConfig, build_model
from partseg.models.receptive import LayerSpec, receptive_field, receptive_halo


def test_textbook_chain():
    # 3-conv x2 (5), 2-max-pool (6, jump 2), 3-conv (10): output p (on input 2p) reads 2p-4..2p+5
    chain = [LayerSpec(3), LayerSpec(3), LayerSpec(2, stride=2, padding=0), LayerSpec(3)]
    assert receptive_halo(chain) == (4, 5)
    assert receptive_field(chain) == 11  # centred: 2 * 5 + 1
    assert receptive_field([LayerSpec(3, dilation=4)]) == 9
    assert receptive_halo([LayerSpec(5)]) == (2, 2)


def test_stride_phase_is_accounted_for():
    # a 3-kernel stride-2 conv then x2 nearest: even outputs read [o-1, o+1], odd [o-2, o]
    chain = [LayerSpec(3, stride=2), LayerSpec(1, upsample=2)]
    assert receptive_halo(chain) == (2, 1)
    assert receptive_field(chain) == 5


def test_plain_unet_depth4_value():
    # textbook recursion: 5, 6, 14, 16, 32, 36, 68 (bottleneck), 84, 92, 96 ... plus the phase
    # spread of the three 2-pool / 2-transposed-conv pairs
    model = build_model(ModelConfig(spatial_dims=3, depth=4, in_channels=4, out_channels=4))
    assert model.receptive_field == 103
    assert model.receptive_halo == (51, 51)


def measured_extent(model, spatial_dims: int, size: int) -> list[int]:
    """Extent, per axis, of the outputs that change when the centre input voxel changes."""
    model = model.double().eval()
    x = torch.randn(1, model.in_channels, *([size] * spatial_dims), dtype=torch.float64)
    y = x.clone()
    y[(0, 0) + (size // 2,) * spatial_dims] += 10.0
    with torch.no_grad():
        changed = (model(x) != model(y)).any(dim=1)[0]  # (*S) bool
    extents = []
    for axis in range(spatial_dims):
        others = tuple(a for a in range(spatial_dims) if a != axis)
        hits = changed.any(dim=others).nonzero().flatten()
        extents.append(int(hits.max() - hits.min() + 1))
    return extents


CASES = [
    ("unet", 2, {}, 128),
    ("unet", 2, {"upsample": "interpolate"}, 128),
    ("unet", 2, {"downsample": "strided"}, 128),
    ("dilated_unet", 2, {"dilations": (1, 2, 4)}, 192),
    ("residual_se_unet", 2, {"se_reduction": 0}, 128),
    ("deepmedic", 2, {"deepmedic_widths": (2,) * 8, "deepmedic_fc_width": 2}, 108),
    ("unet", 3, {"base_width": 1}, 56),
    ("deepmedic", 3, {"deepmedic_widths": (1, 1, 1, 1), "deepmedic_fc_width": 1}, 39),
]


@pytest.mark.parametrize(("name", "spatial_dims", "extra", "size"), CASES)
def test_receptive_field_bounds_the_measured_extent(name, spatial_dims, extra, size):
    torch.manual_seed(0)
    values = {"base_width": 2, "depth": 3, "norm": "none", "activation": "leaky_relu"}
    values.update(extra)
    cfg = ModelConfig(name=name, spatial_dims=spatial_dims, in_channels=1, out_channels=2,
                      **values)  # fmt: skip
    model = build_model(cfg)
    assert model.is_local
    rf = model.receptive_field
    assert rf == 2 * max(model.receptive_halo) + 1
    assert size >= rf + 8  # the perturbation's footprint stays away from the borders
    for extent in measured_extent(model, spatial_dims, size):
        assert 0.8 * rf <= extent <= rf


def test_eval_batch_norm_is_local_too():
    torch.manual_seed(0)
    cfg = ModelConfig(spatial_dims=2, in_channels=1, out_channels=2, depth=3, base_width=2,
                      activation="gelu")  # fmt: skip
    model = build_model(cfg)
    for extent in measured_extent(model, 2, 96):
        assert 0.8 * model.receptive_field <= extent <= model.receptive_field
