"""The ingest normalisation setting: resolved per dataset, recorded, enforced on resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from partseg.errors import StoreError
from partseg.store import open_store
from partseg.store.ingest import IngestSettings, ingest
from partseg.store.preprocess import foreground_mask
from partseg.store.reading import read_case
from partseg.store.sources import ReadOptions, discover


def _ingest(src: Path, store: Path, normalize: str, **kwargs: object):
    settings = IngestSettings(chunks=(4, 8, 8), normalize=normalize, crop="none")
    return ingest(src, store, settings, progress=False, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["auto", "zscore-nonzero", "zscore-all"])
def test_stored_zscores_and_recorded_method(tmp_path: Path, brats_dir: Path, method: str) -> None:
    _ingest(brats_dir, tmp_path / "s.zarr", method)
    store = open_store(tmp_path / "s.zarr")
    resolved = "zscore-nonzero" if method == "auto" else method  # BraTS MRI channels
    assert store.attrs["ingest"]["normalize"] == resolved
    case = store["B_001"]
    image = case.read_image()
    raw = read_case(discover(brats_dir).cases[0], ReadOptions()).image
    outside = ~foreground_mask(raw)  # no crop: the background around the head is kept
    assert outside.any()
    attrs = case.attrs["normalization"]
    assert attrs["region"] == resolved.removeprefix("zscore-")
    for c, stats in enumerate(attrs["stats"]):  # int16 store: the exact z-scores
        mask = ~outside if resolved == "zscore-nonzero" else np.ones_like(outside)
        expected = np.where(mask, (raw[c] - stats["mean"]) / stats["std"], 0.0)
        np.testing.assert_allclose(image[c], expected, atol=1e-5)
    if resolved == "zscore-nonzero":
        assert np.all(image[:, outside] == 0.0)
    else:
        assert np.all(image[:, outside] != 0.0)


def test_resume_with_another_normalisation_is_refused(tmp_path: Path, brats_dir: Path) -> None:
    _ingest(brats_dir, tmp_path / "s.zarr", "auto")
    _ingest(brats_dir, tmp_path / "s.zarr", "zscore-nonzero")  # what auto meant: resumes
    with pytest.raises(StoreError, match=r"zscore-nonzero.*zscore-all.*--overwrite"):
        _ingest(brats_dir, tmp_path / "s.zarr", "zscore-all")
    _ingest(brats_dir, tmp_path / "s.zarr", "zscore-all", overwrite=True)
    assert open_store(tmp_path / "s.zarr").attrs["ingest"]["normalize"] == "zscore-all"
