"""Stored dtypes: int16 keeps integer scans exactly, quantises the rest within half a step."""

from __future__ import annotations

import numpy as np
import pytest

from partseg.store import preprocess as pp
from partseg.store.encoding import candidate_steps, decode, encode


def _scan(seed: int = 0) -> np.ndarray:
    """Two int16-like channels of a (6, 7, 8) scan with a zero background border."""
    rng = np.random.default_rng(seed)
    image = np.zeros((2, 6, 7, 8), np.float32)
    image[:, 1:5, 1:6, 2:7] = rng.integers(1, 3000, (2, 4, 5, 5))
    return image


def test_zscored_integer_scan_is_stored_exactly() -> None:
    image = _scan()
    z, stats = pp.zscore(image)
    steps = candidate_steps({"method": "zscore", "stats": stats}, 2)
    counts, scale = encode(z, "int16", steps)
    assert counts.dtype == np.int16 and scale == pytest.approx([1 / s["std"] for s in stats])
    fg = pp.foreground_mask(image)
    for c, s in enumerate(stats):  # the counts are the scan's integers minus the whole mean
        np.testing.assert_array_equal(counts[c][fg], image[c][fg] - s["mean"])
        assert not counts[c][~fg].any()  # background stays 0
    np.testing.assert_allclose(decode(counts, scale), z, rtol=1e-6, atol=1e-6)


def test_raw_integers_without_normalisation_keep_step_one() -> None:
    image = _scan()
    counts, scale = encode(image, "int16", candidate_steps({"method": "none"}, 2))
    assert scale == [1.0, 1.0]
    np.testing.assert_array_equal(counts, image)


@pytest.mark.parametrize("values", ["resampled", "too_large"])
def test_off_lattice_values_are_quantised_within_half_a_step(values: str) -> None:
    image = _scan()
    if values == "resampled":  # trilinear resampling leaves the integer lattice
        image = pp.resample(image, None, (1.0, 1.0, 1.0), (0.7, 0.9, 1.3))[0]
    else:  # whole numbers, but beyond int16 with step 1
        image = image * 20
    counts, scale = encode(image, "int16", candidate_steps({"method": "none"}, 2))
    for c in range(2):
        peak = np.abs(image[c]).max()
        assert scale[c] == pytest.approx(peak / 32767)
        assert np.abs(counts[c]).max() == 32767  # the full int16 range is used
    error = np.abs(decode(counts, scale) - image)
    assert (error.max(axis=(1, 2, 3)) <= np.asarray(scale) * 0.5 + 1e-6 * image.max()).all()


def test_all_zero_channel_and_float_dtypes() -> None:
    image = np.zeros((1, 2, 2, 2), np.float32)
    counts, scale = encode(image, "int16", [None])
    assert scale == [1.0] and not counts.any()
    small = _scan() % 2048  # whole numbers below 2048 are exact in float16
    stored, none = encode(small, "float16")
    assert stored.dtype == np.float16 and none is None
    np.testing.assert_array_equal(decode(stored, None), small)
    with pytest.raises(ValueError, match="int8"):
        encode(image, "int8")


def test_whole_mean_only_for_whole_numbers() -> None:
    whole = np.array([[[[0.0, 1.0, 2.0, 4.0]]]])  # foreground mean 7/3
    assert pp.zscore(whole)[1][0]["mean"] == 2.0
    fractional = whole + 0.5 * (whole > 0)
    assert pp.zscore(fractional)[1][0]["mean"] == pytest.approx(17 / 6)
