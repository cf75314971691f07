"""Connected-component post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from partseg.errors import ConfigError
from partseg.infer.postprocess import keep_largest_component, postprocess, remove_small_components


def _labels() -> np.ndarray:
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[0:3, 0:4, 0:4] = 1  # 48 voxels, class 1
    labels[5, 7, 7] = 1  # 1 voxel, class 1
    labels[4:6, 0:2, 5:8] = 2  # 12 voxels, class 2
    labels[3, 4, 4] = 2  # 1 voxel touching the class-1 block diagonally
    return labels


def test_remove_small_components_per_class_and_foreground():
    labels = _labels()
    cleaned = remove_small_components(labels, 11)
    assert cleaned[5, 7, 7] == 0 and cleaned[3, 4, 4] == 0
    assert (cleaned == 1).sum() == 48 and (cleaned == 2).sum() == 12
    # over the whole foreground the lone class-2 voxel touches the class-1 block: kept
    fg = remove_small_components(labels, 11, per_class=False)
    assert fg[3, 4, 4] == 2 and fg[5, 7, 7] == 0
    face = remove_small_components(labels, 11, per_class=False, connectivity="face")
    assert face[3, 4, 4] == 0
    assert (remove_small_components(labels, 1) == labels).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_keep_largest_component(dims):
    labels = _labels() if dims == 3 else _labels()[1]
    largest = keep_largest_component(labels)
    # 3D: the class-1 block plus the diagonal class-2 voxel (49); 2D slice: the block (16)
    assert (largest > 0).sum() == (49 if dims == 3 else 16)
    per_class = keep_largest_component(labels, per_class=True)
    for c in (1, 2):
        assert (per_class == c).any() == (labels == c).any()


def test_postprocess_pipeline_and_bad_connectivity():
    labels = _labels()
    out = postprocess(labels, min_component_size=11, keep_largest=True)
    assert set(np.unique(out)) == {0, 1}
    with pytest.raises(ConfigError):
        remove_small_components(labels, 3, connectivity="diagonal")
