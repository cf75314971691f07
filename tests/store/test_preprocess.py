"""Pure preprocessing functions: crop boxes, z-score, resampling, label remapping, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from partseg.geometry import Box
from partseg.store import preprocess as pp


def test_foreground_box_and_crop() -> None:
    image = np.zeros((2, 6, 7, 8), np.float32)
    image[0, 1, 2, 3] = 1
    image[1, 4, 5, 6] = -2  # negative values are foreground too
    box = pp.foreground_box(image)
    assert box == Box((1, 2, 3), (4, 4, 4))
    cropped = pp.crop(image, box)
    assert cropped.shape == (2, 4, 4, 4)
    assert cropped[0, 0, 0, 0] == 1 and cropped[1, -1, -1, -1] == -2
    with pytest.raises(ValueError, match="all zero"):
        pp.foreground_box(np.zeros((1, 2, 2, 2)))


def test_union_box() -> None:
    boxes = [Box((2, 3, 4), (5, 5, 5)), Box((1, 6, 4), (2, 9, 1))]
    assert pp.union_box(boxes) == Box((1, 3, 4), (6, 12, 5))


def test_zscore_over_foreground_only() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((2, 5, 6, 7), np.float32)
    image[:, 1:4, 1:5, 2:6] = rng.normal(50, 10, size=(2, 3, 4, 4))
    out, stats = pp.zscore(image)
    mask = pp.foreground_mask(image)
    for c in range(2):
        assert out[c][mask].mean() == pytest.approx(0, abs=1e-5)
        assert out[c][mask].std() == pytest.approx(1, abs=1e-4)
        assert stats[c]["mean"] == pytest.approx(image[c][mask].mean(), rel=1e-5)
    assert not out[:, ~mask].any()


def test_resample_shapes_and_nearest_labels() -> None:
    image = np.arange(2 * 4 * 6 * 8, dtype=np.float32).reshape(2, 4, 6, 8)
    label = (np.arange(4 * 6 * 8).reshape(4, 6, 8) % 3).astype(np.uint8)
    new_image, new_label = pp.resample(image, label, (2.0, 1.0, 1.0), (1.0, 2.0, 2.0))
    assert new_image.shape == (2, 8, 3, 4) and new_label is not None
    assert new_label.shape == (8, 3, 4)
    assert set(np.unique(new_label)) <= {0, 1, 2}
    assert new_image[0, 0, 0, 0] == image[0, 0, 0, 0]  # corners are kept exactly
    assert new_image[1, -1, -1, -1] == pytest.approx(image[1, -1, -1, -1])


def test_label_mapping_and_remap() -> None:
    mapping = pp.label_mapping([0, 1, 2, 4])
    assert mapping == {0: 0, 1: 1, 2: 2, 4: 3}
    label = np.array([[0, 4], [2, 1]], np.int16)
    np.testing.assert_array_equal(pp.remap_labels(label, mapping), [[0, 3], [2, 1]])
    assert pp.remap_labels(label, mapping).dtype == np.uint8
    with pytest.raises(ValueError, match=r"\[3\]"):
        pp.remap_labels(np.array([0, 3]), mapping)


def test_counts_and_locations_are_seeded_samples_of_each_class() -> None:
    label = np.zeros((6, 7, 8), np.uint8)
    label[1:5, 2:6, 3:7] = 1  # 64 voxels
    label[0, 0, 0] = 2
    counts = pp.class_counts(label, 4)
    assert counts == {0: 6 * 7 * 8 - 65, 1: 64, 2: 1, 3: 0}
    rows = pp.sample_locations(label, 4, per_class=10, seed="case-a")
    assert rows.dtype == np.int32 and rows.shape[1] == 4
    assert [int((rows[:, 0] == c).sum()) for c in range(4)] == [10, 10, 1, 0]
    for cls, z, y, x in rows:
        assert label[z, y, x] == cls
    np.testing.assert_array_equal(rows, pp.sample_locations(label, 4, 10, "case-a"))
    assert not np.array_equal(rows, pp.sample_locations(label, 4, 10, "case-b"))


# ---------------------------------------------------------------------------- normalisation


def _head(rng: np.random.Generator) -> np.ndarray:
    """Two integer channels, 0 outside a (3, 4, 4) head, 1..900 inside (like a scan)."""
    image = np.zeros((2, 5, 6, 7), np.float32)
    image[:, 1:4, 1:5, 2:6] = rng.integers(1, 900, size=(2, 3, 4, 4))
    return image


def test_zscore_nonzero_keeps_the_outside_exactly_zero() -> None:
    image = _head(np.random.default_rng(1))
    out, attrs = pp.normalize(image, "zscore-nonzero")
    head = pp.foreground_mask(image)
    assert attrs["method"] == "zscore" and attrs["region"] == "nonzero"
    assert np.all(out[:, ~head] == 0.0)  # exactly: the padding beyond the volume is 0 too
    for c in range(2):
        stats = attrs["stats"][c]
        assert stats["mean"] == np.rint(image[c][head].mean())  # a whole number
        expected = (image[c][head] - stats["mean"]) / stats["std"]
        np.testing.assert_allclose(out[c][head], expected, rtol=1e-5, atol=1e-6)
        assert abs(out[c][head].mean()) < 0.01 and out[c][head].std() == pytest.approx(1, 1e-3)


def test_zscore_all_includes_the_outside() -> None:
    image = _head(np.random.default_rng(2))
    out, attrs = pp.normalize(image, "zscore-all")
    head = pp.foreground_mask(image)
    assert attrs["region"] == "all"
    for c in range(2):
        stats = attrs["stats"][c]
        assert stats["mean"] == np.rint(image[c].mean())
        np.testing.assert_allclose(out[c][~head], -stats["mean"] / stats["std"], rtol=1e-6)
        assert abs(out[c].mean()) < 0.01 and out[c].std() == pytest.approx(1, 1e-3)
    assert np.all(out[:, ~head] < out[:, head].min(axis=1)[:, None])  # air below every tissue


def test_normalize_none_returns_the_image() -> None:
    image = _head(np.random.default_rng(3))
    out, attrs = pp.normalize(image, "none")
    assert out is image and attrs == {"method": "none", "stats": []}
    with pytest.raises(ValueError, match="resolve"):
        pp.normalize(image, "auto")


@pytest.mark.parametrize(
    ("channels", "method"),
    [(("t1", "t1ce", "t2", "flair"), "zscore-nonzero"), (("CT",), "zscore-all"),
     (("ct", "pet"), "zscore-all"), (("tof",), "zscore-nonzero")],
)  # fmt: skip
def test_auto_normalisation_per_dataset(channels: tuple[str, ...], method: str) -> None:
    assert pp.resolve_normalization("auto", channels) == method
    assert pp.resolve_normalization("zscore-all", ("t1",)) == "zscore-all"  # explicit wins
    with pytest.raises(ValueError, match="zscore"):
        pp.resolve_normalization("zscore", channels)


@pytest.mark.parametrize("method", ["zscore-nonzero", "zscore-all"])
def test_int16_counts_keep_both_zscores_exactly(method: str) -> None:
    from partseg.store.encoding import candidate_steps, decode, encode

    image = _head(np.random.default_rng(4))
    out, attrs = pp.normalize(image, method)
    counts, scale = encode(out, "int16", candidate_steps(attrs, 2))
    for c in range(2):  # counts are the scan's own integers minus the whole-number mean
        assert scale[c] == pytest.approx(1 / attrs["stats"][c]["std"])
        np.testing.assert_array_equal(counts[c], image[c] - attrs["stats"][c]["mean"] * (
            1 if method == "zscore-all" else pp.foreground_mask(image)))  # fmt: skip
    np.testing.assert_allclose(decode(counts, scale), out, atol=1e-5)
    head = pp.foreground_mask(image)
    if method == "zscore-nonzero":
        assert np.all(decode(counts, scale)[:, ~head] == 0.0)
