"""How raw cases become store arrays: the :class:`IngestSettings` of an ingest run.

The settings that shape the stored data (:meth:`IngestSettings.recorded`: crop, normalisation,
spacing, dtype, chunks, channel renames) are written into the store index; a resumed ingest
must use the same ones, and every checkpoint copies them so ``partseg predict --input``
preprocesses raw cases the way the training store was made.

Example:
    >>> IngestSettings(crop="none", channel_map=[["t1n", "t1"]]).recorded()["channel_map"]
    [['t1n', 't1']]
    >>> IngestSettings(crop="middle")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    partseg.errors.ConfigError: ingest: crop must be one of ('foreground', 'dataset', ...
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from partseg.errors import ConfigError
from partseg.store import preprocess as pp
from partseg.store.encoding import DTYPES
from partseg.store.preprocess import NORMALIZATIONS
from partseg.store.writer import CLEVEL, CODEC, CODECS
from partseg.store.zarrstore import DEFAULT_CHUNKS

__all__ = ["CROPS", "IngestSettings"]

CROPS = ("foreground", "dataset", "none")


@dataclass(frozen=True)
class IngestSettings:
    """How raw cases become store arrays.

    Attributes:
        layout: ``"auto"`` or a name of :data:`~partseg.store.sources.LAYOUTS`.
        crop: ``"foreground"`` (per case, nonzero box of all channels), ``"dataset"`` (the union
            of every case's foreground box) or ``"none"``.
        normalize: ``"auto"`` (default: ``"zscore-nonzero"``, or ``"zscore-all"`` for CT
            channels; :func:`~partseg.store.preprocess.resolve_normalization` gives the
            reason), ``"zscore-nonzero"`` (per channel over the voxels nonzero in any channel,
            the outside kept at 0), ``"zscore-all"`` (over every voxel) or ``"none"``. A
            store records the resolved method.
        spacing: target voxel size (Z, Y, X) in mm, or None to keep the original grid.
        dtype: stored image dtype: ``"int16"`` (default: whole counts of a per-channel step,
            exact for integer scans, see :mod:`~partseg.store.encoding`), ``"float16"`` or
            ``"float32"``.
        chunks: spatial chunk shape (Z, Y, X).
        channels_per_chunk: channels stored together in one chunk (clamped to the number of
            channels). Every read takes all channels, so 4 (BraTS: one chunk file for the four
            modalities) read 15-35 % faster than 1 in ``tools/bench_io.py``: fewer files.
        codec: Blosc compressor (``"lz4hc"`` default: minicubes read 1.5-2x faster than with
            ``"zstd"`` level 5, whose files are 5-8 % smaller).
        clevel: compression level 1-9 (lz4hc 9: 3 % smaller than 5 and reads at least as fast;
            compressing takes about 1.6 s per BraTS case).
        shuffle: Blosc filter: ``"shuffle"``, ``"bitshuffle"`` or ``"noshuffle"``.
        labels: declared label values; None uses the layout's or the first case's.
        label_names: ``(value, name)`` pairs naming classes the layout does not name
            (otherwise ``label_<value>``), e.g. ``((1, "aneurysm"),)``.
        image_key: HDF5 dataset / ``.npz`` key of the image.
        label_key: HDF5 dataset / ``.npz`` key of the label.
        split: MSD/nnU-Net: ``"train"`` (imagesTr), ``"test"`` (imagesTs) or ``"all"``.
        channel_map: ``(old, new)`` channel renames applied right after discovery
            (``--channel-map t1n=t1,t1c=t1ce``, :func:`~partseg.store.editions.rename_channels`);
            the store records them, so a resume with another map is refused.
        images_only: read no label files (``partseg predict --input``: the input's labels, of
            whatever convention, play no part in a prediction).
        locations_per_class: size of the per-class voxel sample kept for samplers.
        seed: seed of that sample (mixed with the case id).
    """

    layout: str = "auto"
    crop: str = "foreground"
    normalize: str = "auto"
    spacing: tuple[float, float, float] | None = None
    dtype: str = "int16"
    chunks: tuple[int, int, int] = DEFAULT_CHUNKS
    channels_per_chunk: int = 4
    codec: str = CODEC
    clevel: int = CLEVEL
    shuffle: str = "shuffle"
    labels: tuple[int, ...] | None = None
    label_names: tuple[tuple[int, str], ...] = ()
    image_key: str = "image"
    label_key: str = "label"
    split: str = "train"
    locations_per_class: int = 2000
    seed: int = 0
    channel_map: tuple[tuple[str, str], ...] = ()
    images_only: bool = False

    def __post_init__(self) -> None:
        pairs = tuple((str(old), str(new)) for old, new in self.channel_map)  # JSON gives lists
        object.__setattr__(self, "channel_map", pairs)
        checks = [
            (self.crop in CROPS, f"crop must be one of {CROPS}, got {self.crop!r}"),
            (self.normalize in NORMALIZATIONS, f"normalize must be one of {NORMALIZATIONS}"),
            (self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}"),
            (len(self.chunks) == 3 and all(int(c) > 0 for c in self.chunks),
             f"chunks must be 3 positive sizes (Z, Y, X), got {self.chunks}"),
            (self.spacing is None or (len(self.spacing) == 3 and all(s > 0 for s in self.spacing)),
             f"spacing must be 3 positive sizes in mm (Z, Y, X), got {self.spacing}"),
            (self.codec in CODECS, f"codec must be one of {CODECS}, got {self.codec!r}"),
            (1 <= self.clevel <= 9, f"clevel must be 1..9, got {self.clevel}"),
            (self.shuffle in ("shuffle", "bitshuffle", "noshuffle"), "bad shuffle filter"),
            (self.channels_per_chunk >= 1, "channels_per_chunk must be >= 1"),
            (len({old for old, _ in pairs}) == len(pairs),
             f"channel_map renames a channel twice: {pairs}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"ingest: {message}")

    def compression(self) -> dict[str, Any]:
        """The writer's compression settings (``codec``, ``clevel``, ``shuffle``)."""
        return {"codec": self.codec, "clevel": self.clevel, "shuffle": self.shuffle}

    def resolved(self, channels: Sequence[str]) -> IngestSettings:
        """These settings with ``normalize="auto"`` resolved for a dataset's ``channels``."""
        return replace(self, normalize=pp.resolve_normalization(self.normalize, channels))

    def recorded(self) -> dict[str, Any]:
        """The settings that shape the stored data, as JSON; they must match on resume.

        ``channel_map`` is recorded only when given, so stores ingested before it existed
        resume as before.
        """
        keep = ["crop", "normalize", "spacing", "dtype", "chunks", "channels_per_chunk"]
        if self.channel_map:
            keep.append("channel_map")
        return json.loads(json.dumps({k: getattr(self, k) for k in keep}))
