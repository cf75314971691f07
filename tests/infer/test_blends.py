"""Blend modes and their overlap setting (independent of the margin)."""

from __future__ import annotations

import numpy as np
import pytest

from partseg.errors import ConfigError
from partseg.infer.blends import (
    BLENDS,
    blend_weights,
    check_overlap,
    overlap_per_side,
    parse_overlap,
)


def test_registry_lists_the_modes_and_weights_are_positive():
    assert BLENDS.names() == ("crop", "average", "gaussian", "hann")
    for name in BLENDS:
        weights = blend_weights((5, 4), name)
        assert weights.shape == (5, 4) and (weights > 0).all()
    gaussian = blend_weights((9,), "gaussian")
    assert gaussian[4] == gaussian.max() and gaussian[0] < gaussian[4]


@pytest.mark.parametrize(
    ("text", "value"), [("0.5", 0.5), ("1.0", 1.0), ("16", 16), ("0", 0), (None, None)]
)
def test_parse_overlap_tells_fractions_from_voxels(text, value):
    parsed = parse_overlap(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_overlap_rejects_words():
    with pytest.raises(ConfigError, match="fraction of the core"):
        parse_overlap("half")


@pytest.mark.parametrize(
    ("overlap", "core", "expected"),
    [
        (None, (8, 8, 8), (2, 2, 2)),  # default 0.5: neighbours share 4 voxels, 2 per side
        (0.5, (1, 80, 96), (0, 20, 24)),  # the slice axis of a 2D model never overlaps
        (1.0, (8, 8, 8), (4, 4, 4)),  # nnU-Net's half-window step: regions of two cores
        (0.1, (8, 8, 8), (1, 1, 1)),  # any positive fraction overlaps by at least a voxel
        (6, (8, 16, 16), (3, 3, 3)),
    ],
)
def test_overlap_per_side(overlap, core, expected):
    assert overlap_per_side(overlap, "gaussian", core) == expected
    assert overlap_per_side(None, "crop", core) == (0,) * len(core)


@pytest.mark.parametrize(
    ("blend", "overlap", "match"),
    [
        ("crop", 0.25, "crop keeps each core once"),
        ("gaussian", 0, "equals crop"),
        ("average", 0.0, "equals crop"),
        ("hann", 7, "even"),
        ("hann", -2, "even and >= 0"),
        ("hann", 2.0, r"\[0, 1\]"),
        ("gausian", None, "did you mean .gaussian."),
    ],
)
def test_check_overlap_names_the_key(blend, overlap, match):
    with pytest.raises(ConfigError, match=match) as err:
        check_overlap(blend, overlap, key="evaluation.overlap", blend_key="evaluation.blend")
    assert "evaluation." in str(err.value)


def test_crop_without_overlap_and_blends_with_one_are_fine():
    check_overlap("crop", None)
    check_overlap("crop", 0)
    check_overlap("hann", 0.5)
    check_overlap("average", 16)
    assert np.isclose(blend_weights((3,), "hann")[1], 1.0)
