"""Tests of partseg.channels: the derived-channel spec, its callable and its config key."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from partseg.channels import (
    build_derive,
    derived_channel_names,
    parse_derived,
    sobel_contour,
)
from partseg.config import apply_overrides, config_from_dict
from partseg.errors import ConfigError


def _image() -> np.ndarray:
    """(2, Z, Y, X): channel 0 an arange ramp, channel 1 a cube of ones."""
    ramp = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    cube = np.zeros((4, 5, 6), np.float32)
    cube[1:3, 1:4, 2:5] = 1
    return np.stack([ramp, cube])


def test_build_derive_appends_each_contour_in_order() -> None:
    image = _image()
    derive = build_derive(["sobel:1", "sobel:0"])
    out = derive(image)  # (2 + 2, Z, Y, X)
    assert out.shape == (4, 4, 5, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:2], image)
    np.testing.assert_array_equal(out[2], sobel_contour(image[1]))
    np.testing.assert_array_equal(out[3], sobel_contour(image[0]))
    assert len(derive) == 2
    clone = pickle.loads(pickle.dumps(derive))  # DataLoader workers get a copy
    np.testing.assert_array_equal(clone(image), out)


def test_empty_spec_means_no_derive_and_bare_name_means_channel_0() -> None:
    assert build_derive([]) is None
    assert parse_derived(["sobel"]) == (("sobel", 0),)
    assert parse_derived("sobel:2") == (("sobel", 2),)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (["edges:0"], r"unknown derived channel 'edges' in 'edges:0'; valid names: sobel"),
        (["sobel:x"], r"'sobel:x' needs a source channel index"),
        (["sobel:-1"], r"'sobel:-1' needs a source channel index"),
    ],
)
def test_bad_spec_is_a_config_error(spec: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_derive(spec)


def test_names_check_the_source_channel_against_the_store() -> None:
    assert derived_channel_names(["sobel:0", "sobel:1"], ("t1", "tof")) == (
        "sobel(t1)",
        "sobel(tof)",
    )
    with pytest.raises(ConfigError, match=r"reads channel 2 but the store has 2 channels"):
        derived_channel_names(["sobel:2"], ("t1", "tof"))


def test_config_key_is_validated_and_round_trips() -> None:
    cfg = apply_overrides(config_from_dict({}), ["data.derived_channels=[sobel:0]"])
    assert cfg.data.derived_channels == ("sobel:0",)
    assert config_from_dict(cfg.to_dict()).data.derived_channels == ("sobel:0",)
    single = apply_overrides(config_from_dict({}), ["data.derived_channels=sobel:1"])
    assert single.data.derived_channels == ("sobel:1",)
    with pytest.raises(ConfigError, match=r"unknown derived channel 'canny'.*valid names: sobel"):
        config_from_dict({"data": {"derived_channels": ["canny:0"]}})
