"""Output shapes, strides, parameter counts and deep supervision of every variant, 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from partseg.models import ModelConfig, SegmentationModel, build_model
from partseg.models.blocks import ConvNormAct

VARIANTS = ["unet", "dilated_unet", "residual_se_unet", "deepmedic"]


def tiny(name: str, spatial_dims: int, **kwargs) -> ModelConfig:
    values = {
        "name": name,
        "spatial_dims": spatial_dims,
        "in_channels": 2,
        "out_channels": 3,
        "depth": 3,
        "base_width": 4,
        "se_reduction": 2,
        "deepmedic_widths": (4, 4, 6, 6),
        "deepmedic_fc_width": 8,
        "deepmedic_factor": 2,
    }
    values.update(kwargs)
    return ModelConfig(**values)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("upsample", ["transpose", "interpolate"])
def test_output_shape_stride_and_parameters(name, spatial_dims, upsample):
    torch.manual_seed(0)
    model = build_model(tiny(name, spatial_dims, upsample=upsample))
    assert isinstance(model, SegmentationModel)
    assert (model.spatial_dims, model.in_channels, model.out_channels) == (spatial_dims, 2, 3)
    assert model.total_stride == (2 if name == "deepmedic" else 4)
    size = 16 if spatial_dims == 3 else 32
    x = torch.randn(2, 2, *([size] * spatial_dims))  # (B, C, *S)
    out = model(x)
    assert out.shape == (2, 3, *([size] * spatial_dims))
    assert torch.isfinite(out).all()
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert model.num_parameters() > 0


def test_parameter_count_of_a_plain_unet_by_hand():
    # depth 2, base 4, no norm (convs carry a bias), 2D, in 1, out 2
    model = build_model(ModelConfig(spatial_dims=2, in_channels=1, out_channels=2, depth=2,
                                    base_width=4, norm="none"))  # fmt: skip

    def conv(c_in, c_out, k):
        return c_in * c_out * k * k + c_out

    expected = (
        conv(1, 4, 3) + conv(4, 4, 3)  # level 0
        + conv(4, 8, 3) + conv(8, 8, 3)  # bottleneck after max-pool
        + conv(8, 4, 2)  # transposed conv 8 -> 4
        + conv(8, 4, 3) + conv(4, 4, 3)  # decoder on the concatenation
        + conv(4, 2, 1)  # head
    )  # fmt: skip
    assert model.num_parameters() == expected


@pytest.mark.parametrize(("norm", "has_bias"), [("batch", False), ("none", True)])
def test_conv_bias_only_without_norm(norm, has_bias):
    model = build_model(tiny("unet", 2, norm=norm))
    blocks = [m for m in model.modules() if isinstance(m, ConvNormAct)]
    assert len(blocks) == 10  # 2 per level x 3 levels + 2 per decoder level x 2
    assert all((block[0].bias is not None) == has_bias for block in blocks)
    model.head.weight.requires_grad_(False)
    frozen = model.head.weight.numel()
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - frozen


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", ["unet", "dilated_unet", "residual_se_unet"])
def test_deep_supervision_list_in_train_single_in_eval(name, spatial_dims):
    model = build_model(tiny(name, spatial_dims, depth=4, deep_supervision=True))
    size = 16 if spatial_dims == 3 else 32
    x = torch.randn(2, 2, *([size] * spatial_dims))
    outs = model.train()(x)
    assert isinstance(outs, list)
    assert [o.shape[2:] for o in outs] == [
        torch.Size([size // 2**k] * spatial_dims) for k in range(3)
    ]
    assert all(o.shape[:2] == (2, 3) for o in outs)
    sum(o.sum() for o in outs).backward()
    with torch.no_grad():
        single = model.eval()(x)
    assert isinstance(single, torch.Tensor)
    assert single.shape == (2, 3, *([size] * spatial_dims))


def test_locality_flag():
    assert build_model(tiny("unet", 2)).is_local
    assert build_model(tiny("deepmedic", 2)).is_local
    assert not build_model(tiny("unet", 2, norm="instance")).is_local
    assert not build_model(tiny("residual_se_unet", 2)).is_local
    assert build_model(tiny("residual_se_unet", 2, se_reduction=0)).is_local


@pytest.mark.parametrize("name", VARIANTS)
def test_channels_last_gives_same_output(name):
    torch.manual_seed(0)
    plain = build_model(tiny(name, 3)).eval()
    fast = build_model(tiny(name, 3, channels_last=True)).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        expected, got = plain(x), fast(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
