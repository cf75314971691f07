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
stores, float only, read the same), ``case_ids``
(complete cases only), ``channels``, ``classes``, ``label_mapping`` (``[[value, class], ...]``),
``chunks`` (cz, cy, cx), ``dtype``, ``created_by`` and the ``ingest`` settings. Case attrs:
``shape``, ``spacing``, ``original_spacing``, ``original_shape``, ``crop_box``, ``affine`` (NIfTI
convention, of the original file), ``channels``, ``classes``, ``label_mapping``,
``normalization``, ``voxel_counts``, ``location_counts``, ``source_files``, ``axis_order``.

Reading follows the zero pad rule of :mod:`partseg.geometry`: a box may reach past the volume and
the outside voxels read as 0 in the image and the label. Only the chunks the box touches are
fetched.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partseg.errors import GeometryError, StoreError
from partseg.geometry import Box
from partseg.store.encoding import candidate_steps, encode

FORMAT = "partseg-store"
FORMAT_VERSION = 2
#: Default spatial chunk (Z, Y, X): a 100 x 116 x 116 minicube touches 3-4 chunks per axis.
DEFAULT_CHUNKS = (40, 48, 48)
#: Blosc compressors a store may use, and the default with its level: int16 scans with lz4hc 9
#: are 0.82x the .nii.gz size and decode 2-3x faster than with zstd (``tools/bench_io.py``).
CODECS = ("lz4hc", "zstd", "lz4", "blosclz", "zlib")
CODEC = "lz4hc"
CLEVEL = 9
#: Open cases a Store keeps (least recently used dropped first): bounds RAM for any dataset size.
CASE_CACHE = 32
TMP_PREFIX = ".tmp-"
AXIS_ORDER_NOTE = (
    "arrays are (C, Z, Y, X) and (Z, Y, X); the affine maps NIfTI voxel indices (x, y, z) of "
    "the original file to world coordinates; crop_box is in original (Z, Y, X) voxels"
)

UrlLike = str | os.PathLike


def _is_url(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _local_path(url: UrlLike) -> str | None:
    """The local path of ``url``, or None for a remote/in-memory fsspec URL."""
    text = os.fspath(url)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if _is_url(text):
        return None
    return os.path.abspath(text)


def _zarr_store(url: UrlLike, read_only: bool) -> Any:
    from zarr.storage import FsspecStore, LocalStore

    local = _local_path(url)
    if local is not None:
        return LocalStore(local, read_only=read_only)
    return FsspecStore.from_url(os.fspath(url), read_only=read_only)


def _filesystem(url: UrlLike) -> tuple[Any, str]:
    """(fsspec filesystem, root path inside it) for ``url``."""
    import fsspec

    local = _local_path(url)
    if local is not None:
        return fsspec.filesystem("file"), local
    return fsspec.core.url_to_fs(os.fspath(url))


def _read_index(url: UrlLike, zstore: Any) -> dict:
    """Root attrs of a partseg store; StoreError when ``url`` is not one."""
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
    if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
        raise StoreError(
            f"{os.fspath(url)} has store format version {attrs.get('format_version')}, newer "
            f"than this partseg reads ({FORMAT_VERSION}); upgrade partseg"
        )
    return attrs


def _mapping(pairs: Any) -> dict[int, int]:
    """Label mapping from its JSON form ``[[value, class], ...]`` (or ``{"value": class}``)."""
    if isinstance(pairs, Mapping):
        return {int(k): int(v) for k, v in pairs.items()}
    return {int(k): int(v) for k, v in pairs}


# ------------------------------------------------------------------------------------ reader


class _ChunkReader:
    """Reads a box of a zarr v3 array by fetching and decoding exactly the chunks it touches.

    zarr's own indexing spends about 0.5 ms of Python/async bookkeeping per chunk, which is most
    of the time of a minicube read (about 300 chunks for 4 x 100 x 116 x 116 with 40 x 48 x 48
    chunks). This reader handles the arrays partseg writes (regular grid, default chunk keys,
    little-endian bytes + Blosc) directly: it lists the touched chunk keys, fetches them in one
    batch (plain file reads for a local store, one gathered async ``get`` otherwise), decodes
    them with Blosc and copies the overlaps. Missing chunks (zarr skips chunks equal to the fill
    value) read as the fill value. Any other array goes through zarr's indexing.

    An int16 image with a ``scale`` attribute (:mod:`partseg.store.encoding`) is decoded in the
    same copy: ``out = stored * scale[channel]``, written straight into the float32 output.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        scale = array.attrs.get("scale")
        self.scale = None if scale is None else np.asarray(scale, np.float32)
        self.fast = self._supported(array)
        if self.fast:
            meta = array.metadata
            self.chunks = tuple(int(c) for c in meta.chunk_grid.chunk_shape)
            self.dtype = np.dtype(array.dtype)
            self.fill = meta.fill_value
            self.prefix = f"{array.store_path.path}/" if array.store_path.path else ""
            store = array.store_path.store
            root = getattr(store, "root", None)
            self.local_root = root if type(store).__name__ == "LocalStore" else None

    @staticmethod
    def _supported(array: Any) -> bool:
        try:
            from zarr.codecs import BloscCodec, BytesCodec
            from zarr.core.chunk_grids import RegularChunkGrid
            from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding

            meta = array.metadata
            codecs = meta.codecs
            little = len(codecs) == 2 and isinstance(codecs[0], BytesCodec)
            little = little and (codecs[0].endian is None or codecs[0].endian.value == "little")
            return (
                meta.zarr_format == 3
                and isinstance(meta.chunk_grid, RegularChunkGrid)
                and isinstance(meta.chunk_key_encoding, DefaultChunkKeyEncoding)
                and little
                and isinstance(codecs[1], BloscCodec)
                and np.dtype(array.dtype).byteorder in "=<|"
                and np.little_endian
            )
        except Exception:  # an unexpected zarr version or metadata: use zarr's indexing
            return False

    def read_into(self, out: np.ndarray, source: tuple[slice, ...]) -> None:
        """``out[...] = array[source]`` (decoded) for a box ``source`` inside the array.

        Chunks are decompressed into one reusable buffer. An int16 image is copied into the
        float32 ``out`` and then scaled in place, channel by channel (3x faster than numpy's
        mixed int16 x float32 multiply); other dtypes are copied into a staging array of the
        stored dtype, and a float16 store is then converted in one torch copy (numpy's float16
        -> float32 conversion is 5-30x slower).
        """
        if not self.fast:
            stored = self.array[source]
            out[...] = stored if self.scale is None else stored * self._factors(source[0])
            return
        from numcodecs import blosc

        ranges = [
            range(s.start // c, (s.stop - 1) // c + 1)
            for s, c in zip(source, self.chunks, strict=True)
        ]
        coords = list(itertools.product(*ranges))
        keys = [self.prefix + self.array.metadata.encode_chunk_key(c) for c in coords]
        buffer = np.empty(self.chunks, dtype=self.dtype)
        scaled = self.scale is not None
        stage = out if scaled or out.dtype == self.dtype else np.empty(out.shape, self.dtype)
        for coord, raw in zip(coords, self._fetch(keys), strict=True):
            src, dst = [], []
            for s, i, c in zip(source, coord, self.chunks, strict=True):
                a = i * c
                x0, x1 = max(s.start, a), min(s.stop, a + c)
                src.append(slice(x0 - a, x1 - a))
                dst.append(slice(x0 - s.start, x1 - s.start))
            if raw is None:
                stage[tuple(dst)] = self.fill  # 0 for every array partseg writes
            else:
                blosc.decompress(raw, buffer)
                stage[tuple(dst)] = buffer[tuple(src)]
        if scaled:
            for k, factor in enumerate(self._factors(source[0]).ravel()):
                out[k] *= factor
        elif stage is not out:
            _convert(stage, out)

    def _factors(self, channels: slice) -> np.ndarray:
        """The scale of ``channels`` shaped to broadcast over (C, Z, Y, X)."""
        assert self.scale is not None
        return self.scale[channels].reshape(-1, 1, 1, 1)

    def _fetch(self, keys: list[str]) -> Iterable[memoryview | bytes | None]:
        """The stored bytes of each key (None: no such chunk), in order.

        Local chunk files are read one at a time into one buffer reused for the whole read (each
        view is valid until the next one is produced; a buffer per call keeps reads from
        several threads apart): a fresh bytes object per chunk doubled the time spent reading
        files. Other stores get one gathered async ``get``.
        """
        if self.local_root is not None:
            return self._read_local(keys)
        import asyncio

        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        store, prototype = self.array.store_path.store, default_buffer_prototype()

        async def gather() -> list[Any]:
            return await asyncio.gather(*(store.get(key, prototype) for key in keys))

        return [None if b is None else b.to_bytes() for b in sync(gather())]

    def _read_local(self, keys: list[str]) -> Iterator[memoryview | None]:
        assert self.local_root is not None
        buffer = np.empty(0, np.uint8)
        for key in keys:
            try:
                fd = os.open(os.path.join(self.local_root, key), os.O_RDONLY)
            except FileNotFoundError:
                yield None
                continue
            try:
                size = os.fstat(fd).st_size
                if size > len(buffer):
                    buffer = np.empty(size, np.uint8)
                view = memoryview(buffer)[:size]
                done = 0
                while done < size:  # more than one call only on a short read (network file systems)
                    got = os.readv(fd, [view[done:]])
                    if got == 0:
                        raise StoreError(
                            f"chunk file {key} of {self.local_root} ended after {done} of {size} "
                            "bytes while being read; re-ingest the case if this repeats"
                        )
                    done += got
            finally:
                os.close(fd)
            yield view


#: torch parallelises copies above this many elements (``at::internal::GRAIN_SIZE``).
_TORCH_GRAIN = 32768


def _convert(source: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = source`` with a dtype conversion, vectorised by torch where it can be.

    The copy goes in slabs below torch's parallel grain size, so it stays on the calling thread:
    a parallel region per read costs more than it saves when the loader's worker processes
    already use every core (and a lot more on a busy machine).
    """
    try:
        import torch
    except ImportError:
        out[...] = source
        return
    target, src = torch.from_numpy(out), torch.from_numpy(source)
    inner = int(np.prod(source.shape[2:])) if source.ndim > 2 else 1  # elements per row
    if torch.get_num_threads() == 1 or source.ndim < 2 or inner > _TORCH_GRAIN:
        target.copy_(src)
        return
    step = max(1, _TORCH_GRAIN // inner)  # rows of the second axis per copy
    for i in range(source.shape[0]):  # views only: out may be a strided window
        for j in range(0, source.shape[1], step):
            target[i, j : j + step].copy_(src[i, j : j + step])


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

    def __init__(self, group: Any, case_id: str) -> None:
        self._group = group
        self.id = case_id
        self.attrs: dict = group.attrs.asdict()
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
                self._arrays[name] = self._group[name]
            except KeyError as err:
                raise StoreError(
                    f"case {self.id!r} has no array {name!r} in the store; re-ingest the case"
                ) from err
        return self._arrays[name]

    def _reader(self, name: str) -> _ChunkReader:
        key = f"reader:{name}"
        if key not in self._arrays:
            self._arrays[key] = _ChunkReader(self._array(name))
        return self._arrays[key]

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
                self._locations = np.asarray(self._array("locations")[...], dtype=np.int32)
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
        self.label_mapping = _mapping(attrs.get("label_mapping", []))
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
            self._cases[case_id] = Case(group, case_id)
            while len(self._cases) > CASE_CACHE:
                self._cases.popitem(last=False)
        return self._cases[case_id]

    def size_on_disk(self) -> int:
        """Total bytes of the store's files (0 when the backend cannot tell)."""
        local = _local_path(self.url)
        if local is not None:
            return _dir_size(local)
        fs, root = _filesystem(self.url)
        try:
            return int(fs.du(root))
        except (OSError, NotImplementedError):
            return 0


def _dir_size(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(folder, name))
    return total


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
        local = _local_path(url)
        if local is not None and not os.path.isdir(local):
            raise StoreError(
                f"{os.fspath(url)} does not exist or is not a folder, so it is not a partseg "
                "store; create one with `partseg ingest SRC STORE`"
            )
        zstore = _zarr_store(url, read_only=True)
        name = os.fspath(url)
    else:
        zstore, name = url, str(url)
    return Store(name, zstore, _read_index(name, zstore))


# ------------------------------------------------------------------------------------ writer


def store_state(url: UrlLike) -> str:
    """What is at ``url``: ``"missing"``, ``"empty"`` (folder), ``"store"`` or ``"other"``."""
    fs, root = _filesystem(url)
    if not fs.exists(root):
        return "missing"
    if not fs.isdir(root):
        return "other"
    if not fs.ls(root, detail=False):
        return "empty"
    try:
        _read_index(url, _zarr_store(url, read_only=True))
    except StoreError:
        return "other"
    return "store"


class StoreWriter:
    """Writes cases atomically into a partseg store (used by ingest; one per process).

    Each case is written under ``cases/.tmp-<id>-<pid>`` and renamed to ``cases/<id>`` when
    complete; the dataset index is only rewritten by the coordinating process, with
    :meth:`write_index`, after each completed case.

    Example (needs a dataset on disk, so it is not run as a test)::

        writer = create_store("memory://doc/w.zarr", {"channels": ["t1"]})
        writer.write_case("c1", image, label, attrs, locations, (40, 48, 48))
    """

    def __init__(
        self, url: UrlLike, *, codec: str = CODEC, clevel: int = CLEVEL, shuffle: str = "shuffle"
    ) -> None:
        self.url = os.fspath(url)
        self.codec = codec
        self.clevel = clevel
        self.shuffle = shuffle
        self._zstore = _zarr_store(url, read_only=False)
        self._fs, self._root = _filesystem(url)

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in ("url", "codec", "clevel", "shuffle")}

    def __setstate__(self, state: dict) -> None:
        url = state.pop("url")
        self.__init__(url, **state)  # type: ignore[misc]

    def index(self) -> dict:
        """The current dataset index (root attrs)."""
        return _read_index(self.url, self._zstore)

    def write_index(self, attrs: Mapping[str, Any]) -> None:
        """Replace the dataset index (an atomic rewrite of the root ``zarr.json``)."""
        import zarr

        json.dumps(dict(attrs))  # fail before writing if something is not JSON
        zarr.open_group(self._zstore, mode="r+").attrs.put(dict(attrs))

    def case_dirs(self) -> list[str]:
        """Names of the entries under ``cases/`` (complete cases and leftover tmp folders)."""
        path = f"{self._root}/cases"
        if not self._fs.exists(path):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(path, detail=False)]
        return sorted(n for n in names if n != "zarr.json")

    def remove_case_dir(self, name: str) -> None:
        """Delete ``cases/<name>`` (a leftover tmp folder or an unindexed case)."""
        path = f"{self._root}/cases/{name}"
        if _local_path(self.url) is not None:
            shutil.rmtree(path, ignore_errors=True)
        elif self._fs.exists(path):
            self._fs.rm(path, recursive=True)

    def write_case(
        self,
        case_id: str,
        image: np.ndarray,
        label: np.ndarray | None,
        attrs: Mapping[str, Any],
        locations: np.ndarray,
        chunks: Sequence[int],
        *,
        dtype: str = "float32",
        channels_per_chunk: int = 1,
    ) -> None:
        """Write one case under a tmp name, then rename it into place.

        Args:
            case_id: the case's id (no ``/``, not starting with ``.``).
            image: (C, Z, Y, X) float values, stored as ``dtype``.
            label: (Z, Y, X) uint8 class ids, or None.
            attrs: case metadata (JSON-serialisable); for int16 its ``normalization`` gives
                each channel's candidate step (:func:`~partseg.store.encoding.candidate_steps`).
            locations: (N, 4) int32 rows (class, z, y, x).
            chunks: spatial chunk (Z, Y, X), clamped to the volume.
            dtype: ``"int16"``, ``"float16"`` or ``"float32"``.
            channels_per_chunk: channels stored together in a chunk (clamped to C).
        """
        import zarr

        tmp = f"{TMP_PREFIX}{case_id}-{os.getpid()}"
        self.remove_case_dir(tmp)
        group = zarr.open_group(self._zstore, path=f"cases/{tmp}", mode="w")
        spatial = tuple(
            max(1, min(int(c), int(s))) for c, s in zip(chunks, image.shape[1:], strict=True)
        )
        cpc = max(1, min(int(channels_per_chunk), image.shape[0]))
        steps = candidate_steps(attrs.get("normalization") or {}, image.shape[0])
        stored, scale = encode(image, dtype, steps)
        array = self._array(group, "image", stored, (cpc, *spatial))
        if scale is not None:
            array.attrs.put({"scale": scale})
        if label is not None:
            self._array(group, "label", label.astype(np.uint8, copy=False), spatial)
        locations = np.asarray(locations, dtype=np.int32).reshape(-1, 4)
        self._array(group, "locations", locations, (max(1, len(locations)), 4))
        group.attrs.put(dict(attrs))
        self._rename(f"cases/{tmp}", f"cases/{case_id}")

    def _array(self, group: Any, name: str, data: np.ndarray, chunks: Sequence[int]) -> Any:
        from zarr.codecs import BloscCodec

        compressor = BloscCodec(cname=self.codec, clevel=self.clevel, shuffle=self.shuffle)
        array = group.create_array(
            name,
            shape=data.shape,
            chunks=tuple(chunks),
            dtype=data.dtype,
            compressors=compressor,
            fill_value=0,
        )
        if data.size:
            array[...] = data
        return array

    def _rename(self, src: str, dst: str) -> None:
        self.remove_case_dir(dst.rsplit("/", 1)[-1])
        source, target = f"{self._root}/{src}", f"{self._root}/{dst}"
        if _local_path(self.url) is not None:
            os.rename(source, target)  # atomic on one filesystem
        else:
            self._fs.mv(source, target, recursive=True)


def create_store(
    url: UrlLike,
    index: Mapping[str, Any],
    *,
    overwrite: bool = False,
    codec: str = CODEC,
    clevel: int = CLEVEL,
    shuffle: str = "shuffle",
) -> StoreWriter:
    """Create (or, with ``overwrite``, recreate) an empty store with ``index`` as root attrs.

    Args:
        url: local path or fsspec URL.
        index: dataset index (``format`` and ``format_version`` are added).
        overwrite: replace an existing partseg store (never anything else).
        codec: Blosc compressor of the returned writer (:data:`CODECS`).
        clevel: its compression level (1-9).
        shuffle: Blosc filter of the returned writer: ``"shuffle"``, ``"bitshuffle"`` or
            ``"noshuffle"``.

    Raises:
        StoreError: ``url`` exists and is not an empty folder or a partseg store, or it is a
            partseg store and ``overwrite`` is False.
    """
    import zarr

    state = store_state(url)
    if state == "other":
        raise StoreError(
            f"{os.fspath(url)} exists and is not a partseg store; refusing to write into it. "
            "Pick a new STORE path or remove it yourself"
        )
    if state == "store" and not overwrite:
        raise StoreError(f"{os.fspath(url)} is already a partseg store; pass --overwrite")
    if state == "store":
        fs, root = _filesystem(url)
        local = _local_path(url)
        if local is not None:
            shutil.rmtree(local)
        else:
            fs.rm(root, recursive=True)
    if _local_path(url) is not None:
        Path(_local_path(url)).mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
    zstore = _zarr_store(url, read_only=False)
    root_group = zarr.open_group(zstore, mode="w")
    root_group.create_group("cases")
    root_group.attrs.put({**dict(index), "format": FORMAT, "format_version": FORMAT_VERSION})
    return StoreWriter(url, codec=codec, clevel=clevel, shuffle=shuffle)
