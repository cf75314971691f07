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


def test_nonzero_mask_fills_holes_and_masks_outside():
    from partseg.infer.postprocess import mask_outside, nonzero_mask

    image = np.zeros((2, 5, 6, 6), np.float32)
    image[0, 1:4, 1:5, 1:5] = 1.5
    image[0, 2, 2, 2] = 0  # a voxel of the head that is 0 in every channel: a hole, filled
    mask = nonzero_mask(image)
    assert mask.sum() == 3 * 4 * 4 and mask[2, 2, 2]
    labels = np.ones((5, 6, 6), np.uint8)
    assert (mask_outside(labels, mask) == mask).all()
    assert postprocess(labels, inside=mask).sum() == mask.sum()
    with pytest.raises(ConfigError, match="differ in shape"):
        mask_outside(labels, mask[:2])


def test_prediction_on_a_realistic_phantom_has_no_foreground_in_the_air(tmp_path):
    """A model that calls every voxel tumour: the nonzero mask keeps its labels in the head."""
    import torch

    from partseg.dataset import InputLayout
    from partseg.geometry import make_partition
    from partseg.infer.pipeline import CasePredictor
    from partseg.infer.postprocess import case_nonzero_mask
    from partseg.infer.settings import PredictSettings
    from partseg.models import ModelConfig, build_model
    from partseg.phantom import write_phantoms
    from partseg.store.ingest import IngestSettings, ingest
    from partseg.store.zarrstore import open_store

    write_phantoms(tmp_path / "raw", 1, (24, 40, 40), seed=3, progress=False)
    ingest(tmp_path / "raw", tmp_path / "s.zarr", IngestSettings(), progress=False)
    case = open_store(tmp_path / "s.zarr")["Phantom_001"]
    model = build_model(ModelConfig(depth=2, base_width=2, in_channels=4, out_channels=4))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv3d):
                last = module
        last.bias[:] = torch.tensor([-10.0, 10.0, -10.0, -10.0])  # class 1 everywhere
        last.weight.zero_()
    partition, layout = make_partition(8, 0, 4, 3), InputLayout(spatial_dims=3)
    head = case_nonzero_mask(case)
    assert 0 < head.mean() < 1  # the cropped phantom still holds air around the head
    for masked in (False, True):
        settings = PredictSettings(device="cpu", nonzero_mask=masked)
        prediction = CasePredictor.from_model(model, partition, layout, settings).predict(case)
        labels = prediction.labels
        assert (labels[head] == 1).all()  # inside the head: as predicted
        assert (labels[~head] > 0).any() != masked  # in the air: background only when masked
        assert prediction.masked_voxels == (int((~head).sum()) if masked else None)
