"""The one rule for untrusted names and sizes (:mod:`partseg.names`)."""

from __future__ import annotations

import pytest

from partseg.errors import ConfigError, StoreError
from partseg.names import MAX_NAME_BYTES, check_name, check_shape, name_problem, safe_child

BAD_NAMES = [
    "/any/where/ESCAPE",
    "../x",
    "..",
    ".",
    "a/b",
    "a\\b",
    ".hidden",
    "..case2",
    "",
    "tab\there",
    "new\nline",
    "nul\x00byte",
    "x" * (MAX_NAME_BYTES + 1),
    "é" * (MAX_NAME_BYTES // 2 + 1),  # 2 bytes each in UTF-8
    None,
    42,
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_bad_names_are_refused_with_the_callers_error(name: object) -> None:
    assert name_problem(name) is not None
    with pytest.raises(StoreError, match=r"store s\.zarr: case id .* is not a safe name"):
        check_name(name, "store s.zarr: case id", StoreError, "re-ingest")


@pytest.mark.parametrize("name", ["BraTS20_Training_001", "case-2.v1", "x" * MAX_NAME_BYTES, "ü"])
def test_good_names_pass_unchanged(name: str) -> None:
    assert check_name(name, "case id") == name


def test_safe_child_stays_inside_the_folder(tmp_path) -> None:
    assert safe_child(tmp_path, "c1.nii.gz") == tmp_path / "c1.nii.gz"
    for name in ("../c1.nii.gz", "/abs.nii.gz", ".c1.nii.gz"):
        with pytest.raises(ConfigError, match="output name"):
            safe_child(tmp_path, name)


@pytest.mark.parametrize(
    "shape", [[0, 4, 4], [-1, 4, 4], [2**21, 1, 1], [2**20, 2**20, 2], ["a", 1, 1], [1.5, 2, 2], 7]
)
def test_bad_shapes_are_refused(shape: object) -> None:
    with pytest.raises(StoreError, match="case shape"):
        check_shape(shape, "case shape", StoreError)


def test_shape_axes_and_zero_extents() -> None:
    assert check_shape((4.0, 5, 6), "s", ndim=3) == (4, 5, 6)
    assert check_shape([0, 4], "rows", allow_zero=True) == (0, 4)
    with pytest.raises(ConfigError, match="2 axes, expected 3"):
        check_shape([4, 4], "s", ndim=3)
