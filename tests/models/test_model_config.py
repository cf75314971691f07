"""ModelConfig validation and build_model dispatch."""

from __future__ import annotations

import pytest
import torch

from partseg.errors import ConfigError, GeometryError
from partseg.models import MODELS, ModelConfig, build_model


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", "vnet"),
        ("spatial_dims", 4),
        ("in_channels", 0),
        ("out_channels", -1),
        ("depth", 1),
        ("depth", 9),
        ("base_width", 0),
        ("max_width", 2),
        ("norm", "layer"),
        ("activation", "tanh"),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("upsample", "pixelshuffle"),
        ("downsample", "avgpool"),
        ("se_reduction", -1),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        ModelConfig(**{key: value})


def test_bad_dilations_raise():
    with pytest.raises(ConfigError, match="dilations"):
        ModelConfig(name="dilated_unet", dilations=(1, 0))
    with pytest.raises(ConfigError, match="dilations"):
        ModelConfig(name="dilated_unet", dilations=())


def test_deepmedic_specific_checks():
    with pytest.raises(ConfigError, match="deep_supervision"):
        ModelConfig(name="deepmedic", deep_supervision=True)
    with pytest.raises(ConfigError, match="deepmedic_factor"):
        ModelConfig(name="deepmedic", deepmedic_factor=1)
    with pytest.raises(ConfigError, match="deepmedic_widths"):
        ModelConfig(name="deepmedic", deepmedic_widths=())


def test_from_dict_rejects_unknown_keys_and_converts_lists():
    cfg = ModelConfig.from_dict({"name": "dilated_unet", "dilations": [1, 2]})
    assert cfg.dilations == (1, 2)
    assert hash(cfg) == hash(ModelConfig(name="dilated_unet", dilations=(1, 2)))
    with pytest.raises(ConfigError, match="base_widht"):
        ModelConfig.from_dict({"base_widht": 8})


def test_widths_double_and_cap():
    cfg = ModelConfig(depth=5, base_width=32, max_width=200)
    assert cfg.widths == (32, 64, 128, 200, 200)
    assert cfg.total_stride == 16
    assert ModelConfig(name="deepmedic", deepmedic_factor=3).total_stride == 3


def test_downsample_default_depends_on_variant():
    assert ModelConfig(name="unet").downsample_mode == "maxpool"
    assert ModelConfig(name="residual_se_unet").downsample_mode == "strided"
    assert ModelConfig(name="residual_se_unet", downsample="maxpool").downsample_mode == "maxpool"


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_input_not_divisible_by_stride_raises(spatial_dims):
    cfg = ModelConfig(spatial_dims=spatial_dims, in_channels=1, out_channels=2, depth=3,
                      base_width=2)  # fmt: skip
    model = build_model(cfg)
    bad = torch.zeros(1, 1, *([12] * (spatial_dims - 1)), 10)
    with pytest.raises(GeometryError, match=r"multiple of the total stride 4"):
        model(bad)


def test_wrong_channels_or_rank_raise():
    model = build_model(ModelConfig(spatial_dims=2, in_channels=2, out_channels=2, depth=2,
                                    base_width=2))  # fmt: skip
    with pytest.raises(ConfigError, match="in_channels"):
        model(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="spatial_dims"):
        model(torch.zeros(1, 2, 8, 8, 8))


@pytest.mark.parametrize("name", MODELS.names())
def test_build_model_looks_the_name_up_in_the_registry(name):
    cfg = ModelConfig(name=name, spatial_dims=3, in_channels=1, out_channels=2, depth=2,
                      base_width=2, deepmedic_widths=(2, 2), deepmedic_fc_width=2)  # fmt: skip
    model = build_model(cfg)
    family = MODELS.get(name)
    assert type(model) is family.load()
    assert model.total_stride == cfg.total_stride  # the torch-free stride is the model's
    assert cfg.downsample_mode == (cfg.downsample or family.downsample)


def test_unknown_model_name_is_refused_not_built_as_unet():
    with pytest.raises(ConfigError, match=r"model\.name='unett'; did you mean 'unet'\?"):
        ModelConfig(name="unett")
    cfg = ModelConfig(in_channels=4, out_channels=4)
    object.__setattr__(cfg, "name", "vnet")  # bypass validation: the lookup still refuses
    with pytest.raises(ConfigError, match="choose one of: unet, dilated_unet"):
        build_model(cfg)


def test_unet_variants_differ_only_in_their_level_blocks():
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "depth": 3, "base_width": 4}
    plain = build_model(ModelConfig(name="unet", **kwargs))
    dilated = build_model(ModelConfig(name="dilated_unet", **kwargs))
    residual = build_model(ModelConfig(name="residual_se_unet", **kwargs))
    assert [type(m).__name__ for m in (plain, dilated, residual)] == [
        "UNet", "DilatedUNet", "ResidualSEUNet"
    ]  # fmt: skip
    assert type(dilated.encoder[-1].body[-1]).__name__ == "DilatedCascade"
    assert type(plain.encoder[-1].body[-1]).__name__ == "DoubleConv"
    assert type(residual.encoder[1].body[-1]).__name__ == "ResidualContext"
    assert plain.is_local and not residual.is_local  # squeeze-and-excitation is global


def test_unset_channels_are_taken_from_the_store_and_refuse_to_build_without_one():
    cfg = ModelConfig()
    assert cfg.in_channels is None and cfg.out_channels is None  # training fills them in
    with pytest.raises(ConfigError, match=r"model\.in_channels is not set.*data\.store"):
        build_model(cfg)
    with pytest.raises(ConfigError, match=r"set model\.out_channels to build"):
        build_model(ModelConfig(in_channels=2))
