"""What a store says about itself is untrusted: checks of the index, case metadata and arrays.

A store may be damaged, edited by hand or written by someone else, and its names and sizes
become paths and allocations (``OUT/<case id>.nii.gz``, arrays of the case shape). Everything
is checked where it is read, with the rule of :mod:`partseg.names`; a failed check is a
:class:`~partseg.errors.StoreError` naming the store, the case and the field.

Chunk files: zarr does not write a chunk equal to the fill value, so a missing chunk file used
to read as zeros, whether it was never written or lost later. Cases written by this version
write every chunk and record how many files each array has (case attribute ``chunk_files``,
e.g. ``{"image": 42, "label": 42, "locations": 1}``); for those arrays a missing chunk is an
error at read time (:class:`~partseg.store.chunks.ChunkReader`) and :func:`count_chunk_files`
lets ``partseg info`` compare the files on disk with the record. Older cases have no record:
their missing chunks cannot be told from empty ones, and ``info`` says so.

Example:
    >>> check_index("s.zarr", {"case_ids": ["c1"], "channels": ["t1"], "classes": ["bg", "t"],
    ...                        "chunks": [24, 32, 256]})["case_ids"]
    ['c1']
    >>> check_index("s.zarr", {"case_ids": ["../x"]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    partseg.errors.StoreError: store s.zarr: case id '../x' is not a safe name: ...
    >>> expected_chunk_files((4, 10, 10), (1, 4, 8))
    24
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from partseg.errors import StoreError
from partseg.names import check_name, check_shape
from partseg.store.regions import Regions

_DAMAGED = "the store is damaged or was not written by partseg; re-ingest it"
_CASE_HINT = "delete that case's folder (cases/<id>) and rerun the same `partseg ingest` command"


def check_index(url: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset index (root attrs) when its names and sizes are sane, else StoreError."""
    where = f"store {url}:"
    ids = attrs.get("case_ids", [])
    if not isinstance(ids, list):
        raise StoreError(f"{where} case_ids is not a list; {_DAMAGED}")
    for case_id in ids:
        check_name(case_id, f"{where} case id", StoreError, _DAMAGED)
    duplicates = sorted(c for c, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise StoreError(f"{where} case id {duplicates[0]!r} is listed twice; {_DAMAGED}")
    for key in ("channels", "classes"):
        values = attrs.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise StoreError(f"{where} {key} must be a list of names, got {values!r}; {_DAMAGED}")
    if "chunks" in attrs:
        check_shape(attrs["chunks"], f"{where} chunks", StoreError, ndim=3)
    return dict(attrs)


def label_mapping(url: str, pairs: Any) -> dict[int, int]:
    """Label mapping from its JSON form ``[[value, class], ...]`` (or ``{"value": class}``)."""
    try:
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        return {int(k): int(v) for k, v in items}
    except (TypeError, ValueError) as err:
        raise StoreError(
            f"store {url}: label_mapping {pairs!r} is not a list of [value, class] pairs; "
            f"{_DAMAGED}"
        ) from err


def store_regions(url: str, data: Any, n_classes: int) -> Regions | None:
    """The store's region declaration (None without one), checked against its classes."""
    try:
        regions = Regions.from_json(data)
    except ValueError as err:
        raise StoreError(f"store {url}: {err}; {_DAMAGED}") from None
    if regions is not None and any(not 0 < v < n_classes for v in regions.values):
        raise StoreError(
            f"store {url}: regions use class ids {list(regions.values)} outside 1..{n_classes - 1}"
            f"; {_DAMAGED}"
        )
    return regions


def check_case_attrs(url: str, case_id: str, attrs: Mapping[str, Any]) -> None:
    """Raise StoreError when a case's metadata lacks a field or has an unusable value."""
    where = f"store {url}, case {case_id!r}:"
    missing = [k for k in ("shape", "channels", "spacing") if k not in attrs]
    if missing:
        raise StoreError(f"{where} its metadata has no {missing[0]!r}; {_CASE_HINT}")
    check_shape(attrs["shape"], f"{where} shape", StoreError, ndim=3)
    channels = attrs["channels"]
    if not isinstance(channels, list) or not channels:
        raise StoreError(f"{where} channels must be a non-empty list; {_CASE_HINT}")
    try:
        spacing = [float(s) for s in attrs["spacing"]]
    except (TypeError, ValueError):
        spacing = []
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise StoreError(f"{where} spacing {attrs['spacing']!r} is not 3 sizes > 0; {_CASE_HINT}")
    counts = attrs.get("voxel_counts", {})
    try:
        assert isinstance(counts, Mapping)
        [(int(k), int(v)) for k, v in counts.items()]
    except (AssertionError, TypeError, ValueError):
        raise StoreError(
            f"{where} voxel_counts {counts!r} is not a map class -> count; {_CASE_HINT}"
        ) from None


def check_array(
    url: str, case_id: str, name: str, array: Any, expected: Sequence[int] | None
) -> None:
    """Raise StoreError when an array's shape or chunks do not fit the case metadata."""
    where = f"store {url}, case {case_id!r}, array {name!r}:"
    shape = check_shape(array.shape, f"{where} shape", StoreError, allow_zero=True)
    check_shape(array.chunks, f"{where} chunk shape", StoreError)
    if expected is not None and tuple(shape) != tuple(expected):
        raise StoreError(
            f"{where} shape {list(shape)} does not match the case metadata {list(expected)}; "
            f"{_CASE_HINT}"
        )


def expected_chunk_files(shape: Sequence[int], chunks: Sequence[int]) -> int:
    """Chunk files of an array of ``shape`` when every chunk is written (0 for an empty one)."""
    if not all(shape):
        return 0
    return math.prod(-(-int(s) // int(c)) for s, c in zip(shape, chunks, strict=True))


def count_chunk_files(array: Any) -> int:
    """Chunk files of ``array`` present in its store (one listing, local or remote)."""
    from zarr.core.sync import sync

    store, path = array.store_path.store, array.store_path.path
    prefix = f"{path}/c/" if path else "c/"

    async def count() -> int:
        return sum([1 async for _ in store.list_prefix(prefix)])

    return int(sync(count()))


__all__ = [
    "check_array",
    "check_case_attrs",
    "check_index",
    "count_chunk_files",
    "expected_chunk_files",
    "label_mapping",
    "store_regions",
]
