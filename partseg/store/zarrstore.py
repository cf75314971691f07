"""The partseg chunk store: a zarr v3 group of ingested cases, read one box at a time.

Layout (every array Blosc compressed, lz4hc by default, byte shuffle)::

    STORE/                      root group; attrs = dataset index (see below)
      cases/<id>/               one group per complete case; attrs = case metadata
        image      (C, Z, Y, X) int16 (attrs {"scale": [s, ...]}: value = stored * s per
                                channel, see :mod:`partseg.store.encoding`), float16 or float32;
                                chunks (k, cz, cy, cx), k channels per chunk
        label      (Z, Y, X)    uint8 class ids, chunks (cz, cy, cx); absent without a label
        locations  (N, 4)       int32 rows (class, z, y, x): a seeded sample of voxels per class
      cases/.tmp-<id>-<pid>/    a case being written; renamed to cases/<id> when complete

Dataset index (root attrs): ``format`` ("partseg-store"), ``format_version`` (2; version 1
stores, float only, read the same), ``case_ids`` (complete cases only), ``channels``,
``classes``, ``label_mapping`` (``[[value, class], ...]``), ``chunks`` (cz, cy, cx), ``dtype``,
``created_by``, the ``ingest`` settings and ``regions`` (region-based labels in class ids, or
null: :mod:`partseg.store.regions`). Case attrs:
``shape``, ``spacing``, ``original_spacing``, ``original_shape``, ``crop_box``, ``affine`` (NIfTI
convention, of the original file), ``channels``, ``classes``, ``label_mapping``,
``normalization``, ``voxel_counts``, ``location_counts``, ``source_files``, ``axis_order``,
``chunk_files`` (chunk files written per array; see :mod:`partseg.store.checks`). Everything
read from a store is checked where it is read (:mod:`partseg.store.checks`).

Reading follows the zero pad rule of :mod:`partseg.geometry`: a box may reach past the volume and
the outside voxels read as 0 in the image and the label. Only the chunks the box touches are
fetched (:mod:`partseg.store.chunks`). Stores are written by :mod:`partseg.store.writer`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from partseg.errors import GeometryError, StoreError
from partseg.geometry import Box
from partseg.store.checks import (
    check_array,
    check_case_attrs,
    check_index,
    count_chunk_files,
    label_mapping,
    store_regions,
)
from partseg.store.chunks import ChunkReader
from partseg.store.location import UrlLike, dir_size, filesystem, local_path, zarr_store

FORMAT = "partseg-store"
FORMAT_VERSION = 2
#: Default spatial chunk (Z, Y, X), clamped to each volume: rows span the whole width of volumes
#: up to 256 voxels wide (BraTS after the crop: 155-165), so a minicube row is copied in one
#: piece; 24 x 32 keeps the over-read of a 100 x 116 x 116 minicube at about 2.1x (2.7x with
#: 40 x 48 x 48 chunks). Against 40 x 48 x 48 chunks: about 25 % faster 3D reads, 1.8x faster
#: 2D slice reads, 3 % smaller (``tools/bench_io.py --tune``). Wider volumes (CT, 512) may read
#: faster with ``--chunks 24 32 64``.
DEFAULT_CHUNKS = (24, 32, 256)
#: Open cases a Store keeps (least recently used dropped first): bounds RAM for any dataset size.
CASE_CACHE = 32
AXIS_ORDER_NOTE = (
    "arrays are (C, Z, Y, X) and (Z, Y, X); the affine maps NIfTI voxel indices (x, y, z) of "
    "the original file to world coordinates; crop_box is in original (Z, Y, X) voxels"
)


class NewerStoreError(StoreError):
    """The store was written by a newer partseg (a newer store format)."""


def read_index(url: UrlLike, zstore: Any) -> dict:
    """Root attrs of a partseg store, checked (:func:`~partseg.store.checks.check_index`);
    StoreError when ``url`` is not a partseg store, NewerStoreError for a newer format."""
    import zarr

    try:
        root = zarr.open_group(zstore, mode="r")
        attrs = root.attrs.asdict()
    except (FileNotFoundError, KeyError, ValueError, TypeError) as err:
        raise StoreError(
            f"{os.fspath(url)} is not a partseg store ({type(err).__name__}: {err}); "
            "create one with `partseg ingest SRC STORE`"
        ) from err
    except Exception as err:  # zarr's own not-found errors differ between versions
        if type(err).__name__.endswith("NotFoundError"):
            raise StoreError(
                f"{os.fspath(url)} is not a partseg store (no zarr group there); "
                "create one with `partseg ingest SRC STORE`"
            ) from err
        raise
    if attrs.get("format") != FORMAT:
        raise StoreError(
            f"{os.fspath(url)} is a zarr group but not a partseg store (no format "
            f"{FORMAT!r} in its attributes); create one with `partseg ingest SRC STORE`"
        )
    version = attrs.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError(
            f"{os.fspath(url)}: store format_version {version!r} is not a version number; "
            "the store is damaged: re-ingest it"
        )
    if version > FORMAT_VERSION:
        raise NewerStoreError(
            f"{os.fspath(url)} was written by a newer partseg (store format {version}; this "
            f"partseg reads formats up to {FORMAT_VERSION}); upgrade partseg"
        )
    return check_index(os.fspath(url), attrs)


class Case:
    """One ingested case: metadata plus lazy, chunk-wise reads of boxes.

    Attributes:
        id: case identifier.
        shape: spatial shape (Z, Y, X) after crop (and resampling).
        n_channels: number of image channels.
        spacing: voxel size (Z, Y, X) in mm after resampling.
        has_label: whether the case has a label array.
        attrs: all case metadata (see the module docstring).
        voxel_counts: class id -> number of voxels (empty without a label).

    Example (needs a dataset on disk, so it is not run as a test)::

        store = open_store("memory://doc/brats.zarr")
        case = store["BraTS20_Training_001"]
        image, label = case.read(Box((-10, 0, 0), (100, 116, 116)))
        image.shape, label.dtype
        # -> ((4, 100, 116, 116), dtype('uint8'))
    """

    def __init__(self, group: Any, case_id: str, store: str = "") -> None:
        self._group = group
        self.id = case_id
        self.store = store or str(group.store_path)
        self.attrs: dict = group.attrs.asdict()
        check_case_attrs(self.store, case_id, self.attrs)
        self.shape: tuple[int, int, int] = tuple(int(s) for s in self.attrs["shape"])  # type: ignore[assignment]
        self.n_channels = len(self.attrs["channels"])
        self.spacing: tuple[float, float, float] = tuple(float(s) for s in self.attrs["spacing"])  # type: ignore[assignment]
        self.has_label = bool(self.attrs.get("has_label", False))
        self.voxel_counts = {int(k): int(v) for k, v in self.attrs.get("voxel_counts", {}).items()}
        self._arrays: dict[str, Any] = {}
        self._locations: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Case({self.id!r}, shape={self.shape}, channels={self.n_channels})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}  # reopened lazily in the worker process
        return state

    @property
    def crop_box(self) -> Box:
        """Where this case lies in the original (Z, Y, X) voxel grid (before resampling)."""
        box = self.attrs["crop_box"]
        return Box(tuple(box["start"]), tuple(box["size"]))

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) affine of the original file, NIfTI convention (voxel (x, y, z) -> world)."""
        return np.asarray(self.attrs["affine"], dtype=np.float64)

    def _array(self, name: str) -> Any:
        if name not in self._arrays:
            try:
                array = self._group[name]
            except KeyError as err:
                raise StoreError(
                    f"case {self.id!r} has no array {name!r} in the store {self.store}; delete "
                    "that case's folder (cases/<id>) and rerun the same `partseg ingest` command"
                ) from err
            except Exception as err:  # unreadable metadata: JSON or zarr errors of any kind
                raise StoreError(
                    f"store {self.store}, case {self.id!r}: the metadata of array {name!r} is "
                    f"unreadable ({type(err).__name__}: {err}); delete that case's folder "
                    "(cases/<id>) and rerun the same `partseg ingest` command"
                ) from err
            expected = {"image": (self.n_channels, *self.shape), "label": self.shape}.get(name)
            check_array(self.store, self.id, name, array, expected)
            self._arrays[name] = array
        return self._arrays[name]

    def _reader(self, name: str) -> ChunkReader:
        key = f"reader:{name}"
        if key not in self._arrays:
            recorded = self.attrs.get("chunk_files")
            complete = isinstance(recorded, dict) and name in recorded
            self._arrays[key] = ChunkReader(self._array(name), complete=complete)
        return self._arrays[key]

    def missing_chunk_files(self) -> dict[str, tuple[int, int]]:
        """Arrays whose chunk files on disk differ from the count recorded at ingest:
        ``{name: (recorded, found)}``; empty when all are there or nothing was recorded."""
        recorded = self.attrs.get("chunk_files")
        if not isinstance(recorded, dict):
            return {}
        problems = {}
        for name, count in recorded.items():
            if name in ("image", "label", "locations"):
                found = count_chunk_files(self._array(name))
                if found != count:
                    problems[name] = (int(count), found)
        return problems

    def read(self, box: Box, *, label: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Read the image (and label) inside ``box``, zero outside the volume.

        Only the chunks the box touches are fetched from the store.

        Args:
            box: a 3D box in (Z, Y, X) voxels; may start before 0 or reach past the volume.
            label: also read the label (``None`` is returned when False or when the case has none).

        Returns:
            image (C, *box.size) float32 and label (*box.size) uint8 or None.
        """
        if box.ndim != 3:
            raise GeometryError(f"case {self.id!r}: read needs a 3D box, got {box}")
        image = np.zeros((self.n_channels, *box.size), dtype=np.float32)  # (C, Z, Y, X)
        want_label = label and self.has_label
        out_label = np.zeros(box.size, dtype=np.uint8) if want_label else None  # (Z, Y, X)
        try:
            inside, where = box.clip(self.shape)
        except GeometryError:
            return image, out_label  # the box misses the volume: all padding
        source = inside.slices()
        channels = slice(0, self.n_channels)
        self._reader("image").read_into(image[(channels, *where)], (channels, *source))
        if out_label is not None:
            self._reader("label").read_into(out_label[where], source)
        return image, out_label

    def read_image(self) -> np.ndarray:
        """The whole (C, Z, Y, X) image as float32."""
        return self.read(Box.whole(self.shape), label=False)[0]

    def read_label(self) -> np.ndarray | None:
        """The whole (Z, Y, X) uint8 label, or None for a case without a label."""
        return self.read(Box.whole(self.shape))[1] if self.has_label else None

    def class_locations(self, cls: int) -> np.ndarray:
        """A seeded sample (at most ``per_class`` from ingest) of (z, y, x) voxels of class ``cls``.

        Returns:
            (N, 3) int64; (0, 3) when the case has no voxel of that class or no label.
        """
        if self._locations is None:
            if not self.has_label:
                self._locations = np.zeros((0, 4), dtype=np.int32)
            else:  # kept as stored (int32): 32 kB per class at the default 2000 locations
                array = self._array("locations")
                rows = np.zeros(array.shape, dtype=np.int32)  # (N, 4)
                if rows.size:
                    whole = tuple(slice(0, n) for n in array.shape)
                    self._reader("locations").read_into(rows, whole)
                self._locations = rows.reshape(-1, 4)
        rows = self._locations[self._locations[:, 0] == int(cls)]
        return rows[:, 1:].astype(np.int64)


class Store:
    """Read-only view of an ingested dataset; open it with :func:`open_store`.

    Attributes:
        url: where the store lives.
        case_ids: complete cases, in ingest order.
        channels: image channel names, e.g. ``("t1", "t1ce", "t2", "flair")``.
        classes: class names, index = class id, ``("background", ...)``.
        label_mapping: original label value -> class id, e.g. ``{0: 0, 1: 1, 2: 2, 4: 3}``.
        regions: region-based labels in class ids (nnU-Net's BraTS setting), or None.
        chunks: spatial chunk shape (Z, Y, X).
        attrs: the dataset index (root attributes).
    """

    def __init__(self, url: str, zstore: Any, attrs: dict) -> None:
        self.url = url
        self._zstore = zstore
        self.attrs = attrs
        self.case_ids: tuple[str, ...] = tuple(attrs.get("case_ids", ()))
        self.channels: tuple[str, ...] = tuple(attrs.get("channels", ()))
        self.classes: tuple[str, ...] = tuple(attrs.get("classes", ()))
        self.label_mapping = label_mapping(url, attrs.get("label_mapping", []))
        self.regions = store_regions(url, attrs.get("regions"), len(self.classes))
        self.chunks: tuple[int, int, int] = tuple(attrs.get("chunks", DEFAULT_CHUNKS))  # type: ignore[assignment]
        self._cases: OrderedDict[str, Case] = OrderedDict()  # LRU of CASE_CACHE cases
        self._root: Any = None

    def __repr__(self) -> str:
        return f"Store({self.url!r}, cases={len(self)}, channels={self.channels})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cases"], state["_root"] = OrderedDict(), None
        return state

    def __len__(self) -> int:
        return len(self.case_ids)

    def __iter__(self) -> Iterator[Case]:
        for case_id in self.case_ids:
            yield self[case_id]

    def __contains__(self, case_id: object) -> bool:
        return case_id in self.case_ids

    def __getitem__(self, case_id: str) -> Case:
        """The case ``case_id``; the store keeps the last :data:`CASE_CACHE` cases open.

        A bounded cache keeps memory independent of the number of cases (each open case holds
        its metadata and, once sampled, its class locations) while repeated reads of one case
        reuse its open arrays.
        """
        if case_id in self._cases:
            self._cases.move_to_end(case_id)
        else:
            if case_id not in self.case_ids:
                raise StoreError(
                    f"case {case_id!r} is not in the store {self.url} ({len(self)} cases, e.g. "
                    f"{list(self.case_ids[:3])}); check the id or ingest it"
                )
            import zarr

            if self._root is None:
                self._root = zarr.open_group(self._zstore, mode="r")
            try:
                group = self._root[f"cases/{case_id}"]
            except KeyError as err:
                raise StoreError(
                    f"case {case_id!r} is listed in {self.url} but its group is missing; "
                    "rerun `partseg ingest` to rewrite it"
                ) from err
            except Exception as err:  # a damaged zarr.json: JSON or zarr errors of any kind
                raise StoreError(
                    f"store {self.url}, case {case_id!r}: its metadata (cases/{case_id}/"
                    f"zarr.json) is unreadable ({type(err).__name__}: {err}); delete that "
                    "case's folder and rerun the same `partseg ingest` command"
                ) from err
            self._cases[case_id] = Case(group, case_id, self.url)
            while len(self._cases) > CASE_CACHE:
                self._cases.popitem(last=False)
        return self._cases[case_id]

    def size_on_disk(self) -> int:
        """Total bytes of the store's files (0 when the backend cannot tell)."""
        local = local_path(self.url)
        if local is not None:
            return dir_size(local)
        fs, root = filesystem(self.url)
        try:
            return int(fs.du(root))
        except (OSError, NotImplementedError):
            return 0


def open_store(url: UrlLike | Any) -> Store:
    """Open an ingested dataset read-only.

    Args:
        url: a local path, a ``file://`` or other fsspec URL (``memory://...``), or an already
            built zarr v3 store object (e.g. a wrapper that counts reads).

    Raises:
        StoreError: the path is not a partseg store.

    Example (needs a dataset on disk, so it is not run as a test)::

        store = open_store("data/brats.zarr")
        len(store), store.classes
        # -> (369, ('background', 'necrotic', 'edema', 'enhancing'))
    """
    if isinstance(url, str | os.PathLike):
        local = local_path(url)
        if local is not None and not os.path.isdir(local):
            raise StoreError(
                f"{os.fspath(url)} does not exist or is not a folder, so it is not a partseg "
                "store; create one with `partseg ingest SRC STORE`"
            )
        zstore = zarr_store(url, read_only=True)
        name = os.fspath(url)
    else:
        zstore, name = url, str(url)
    return Store(name, zstore, read_index(name, zstore))
