"""Preprocessing applied once at ingest: crop, resample, z-score, label remapping.

Pure numpy functions on partseg arrays: images (C, Z, Y, X), labels (Z, Y, X). Every step
returns what it did (box, stats, mapping) so ingest can record it and predictions can be put
back into the original geometry:

1. crop to a :class:`~partseg.geometry.Box` (the foreground of the case, the union of all cases'
   foregrounds, or the whole volume);
2. optionally resample to a target spacing (image trilinear, label nearest);
3. normalise (:func:`normalize`): z-score each channel over the foreground (voxels nonzero in
   any channel), background kept at exactly 0 (``zscore-nonzero``, nnU-Net's
   ``use_mask_for_norm`` of BraTS), or over every voxel (``zscore-all``), or not at all;
4. remap the label's declared values to contiguous class ids (BraTS {0, 1, 2, 4} -> {0..3}).

Undoing it for a prediction of shape ``shape``: resample back to ``crop_box.size`` (nearest),
paste at ``crop_box.start`` into zeros of ``original_shape``, map class ids back through the
inverse label mapping, transpose (Z, Y, X) -> (X, Y, Z) and save with the original affine.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from partseg.geometry import Box


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """Voxels nonzero in any channel: (C, Z, Y, X) -> (Z, Y, X) bool.

    Example:
        >>> image = np.zeros((2, 3, 3, 3), np.float32); image[1, 1, 2, 0] = 5
        >>> int(foreground_mask(image).sum())
        1
    """
    return np.any(image != 0, axis=0)


def foreground_box(image: np.ndarray) -> Box:
    """Bounding box of the voxels nonzero in any channel of a (C, Z, Y, X) image.

    Raises:
        ValueError: the image is all zero.

    Example:
        >>> image = np.zeros((1, 4, 5, 6), np.float32); image[0, 1:3, 2, 3:5] = 1
        >>> foreground_box(image)
        Box(start=(1, 2, 3), size=(2, 1, 2))
    """
    mask = foreground_mask(image)
    if not mask.any():
        raise ValueError("the image is all zero: no foreground to crop to")
    start, stop = [], []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        start.append(int(hits[0]))
        stop.append(int(hits[-1]) + 1)
    return Box(tuple(start), tuple(b - a for a, b in zip(start, stop, strict=True)))


def union_box(boxes: Iterable[Box]) -> Box:
    """Smallest box containing every box (the dataset crop of the BraTS paper).

    Example:
        >>> union_box([Box((1, 2, 3), (2, 2, 2)), Box((0, 3, 4), (1, 3, 1))])
        Box(start=(0, 2, 3), size=(3, 4, 2))
    """
    boxes = list(boxes)
    if not boxes:
        raise ValueError("no boxes to unite")
    start = tuple(min(b.start[i] for b in boxes) for i in range(boxes[0].ndim))
    stop = tuple(max(b.stop[i] for b in boxes) for i in range(boxes[0].ndim))
    return Box(start, tuple(b - a for a, b in zip(start, stop, strict=True)))


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    """The trailing ``box.ndim`` axes of ``array`` cut to ``box`` (a copy; box inside the array).

    Example:
        >>> crop(np.arange(24).reshape(2, 3, 4), Box((1, 1), (2, 2))).tolist()
        [[[5, 6], [9, 10]], [[17, 18], [21, 22]]]
    """
    lead = (slice(None),) * (array.ndim - box.ndim)
    return np.ascontiguousarray(array[(*lead, *box.slices())])


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, ...]:
    """Shape after resampling ``shape`` from ``spacing`` to ``target`` spacing (at least 1).

    Example:
        >>> resampled_shape((10, 20, 20), (2.0, 1.0, 1.0), (1.0, 2.0, 2.0))
        (20, 10, 10)
    """
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def resample(
    image: np.ndarray,
    label: np.ndarray | None,
    spacing: Sequence[float],
    target: Sequence[float],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample a (C, Z, Y, X) image trilinearly and a (Z, Y, X) label nearest to ``target``.

    Example:
        >>> image = np.ones((1, 4, 4, 4), np.float32)
        >>> resample(image, None, (2.0, 1.0, 1.0), (1.0, 1.0, 1.0))[0].shape
        (1, 8, 4, 4)
    """
    from scipy.ndimage import zoom

    shape = resampled_shape(image.shape[1:], spacing, target)
    if shape == tuple(image.shape[1:]):
        return image, label
    factors = tuple(n / o for n, o in zip(shape, image.shape[1:], strict=True))
    channels = [zoom(c, factors, order=1, output=np.float32, grid_mode=False) for c in image]
    new_label = None
    if label is not None:
        new_label = zoom(label, factors, order=0, grid_mode=False)
    return np.stack(channels), new_label


def zscore(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, list[dict]]:
    """Z-score each channel over ``mask`` (default: the foreground); voxels outside -> 0.

    A channel with zero spread inside the mask is only centred (std recorded as 1). The mean of
    a channel of whole numbers (every scan stored as integers) is rounded to a whole number, a
    shift of at most half a grey level, so the z-scores lie on the lattice ``k / std`` and an
    int16 store keeps them exactly (:mod:`partseg.store.encoding`).

    Returns:
        The normalised (C, Z, Y, X) float32 image and ``[{"mean": m, "std": s}, ...]`` per channel.

    Example:
        >>> image = np.array([[[[0.0, 2.0, 4.0]]]], np.float32)
        >>> out, stats = zscore(image)
        >>> out.tolist(), stats
        ([[[[0.0, -1.0, 1.0]]]], [{'mean': 3.0, 'std': 1.0}])
        >>> zscore(np.array([[[[0.0, 2.0, 5.0]]]]))[1]  # mean 3.5 of whole numbers -> 4
        [{'mean': 4.0, 'std': 1.5}]
    """
    mask = foreground_mask(image) if mask is None else mask
    out = np.zeros(image.shape, dtype=np.float32)
    stats = []
    for c, channel in enumerate(image):
        values = channel[mask].astype(np.float64)
        mean = float(values.mean()) if values.size else 0.0
        if np.array_equal(values, np.rint(values)):
            mean = float(np.rint(mean))
        std = float(values.std()) if values.size else 1.0
        std = std if std > 1e-8 else 1.0
        out[c][mask] = ((values - mean) / std).astype(np.float32)
        stats.append({"mean": mean, "std": std})
    return out, stats


#: Ingest normalisations (``partseg ingest --normalize``); ``auto`` resolves per dataset.
NORMALIZATIONS = ("auto", "zscore-nonzero", "zscore-all", "none")


def resolve_normalization(method: str, channels: Sequence[str]) -> str:
    """The normalisation ``auto`` stands for with these channels; other methods unchanged.

    ``auto`` is ``zscore-nonzero`` (z-scores over the head, outside kept at 0), the choice of
    nnU-Net for BraTS-like MRI: their outside is exactly 0 (skull-stripped, or air set to 0),
    statistics of the head are not swamped by air, and the outside reads the same 0 as the
    zero padding boxes get beyond the volume. A CT channel (named ``CT``, as in nnU-Net /
    MSD ``dataset.json`` files) makes it ``zscore-all``: 0 HU is water inside the body, not
    outside, so CT has no zero background to mask.

    Example:
        >>> resolve_normalization("auto", ["t1", "flair"]), resolve_normalization("auto", ["CT"])
        ('zscore-nonzero', 'zscore-all')
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {method!r}")
    if method != "auto":
        return method
    return "zscore-all" if any(c.strip().lower() == "ct" for c in channels) else "zscore-nonzero"


def normalize(image: np.ndarray, method: str) -> tuple[np.ndarray, dict]:
    """Normalise a (C, Z, Y, X) image by a resolved ``method`` (see :data:`NORMALIZATIONS`).

    Returns:
        The image (float32 for the z-scores, unchanged for ``none``) and the case's
        ``normalization`` attrs: ``{"method": "zscore", "region": "nonzero" | "all",
        "stats": [...]}`` or ``{"method": "none", "stats": []}``. The z-scores of an integer
        scan lie on the lattice ``k / std`` in both regions (the outside is 0, or the whole
        number ``-mean`` over ``std``), so an int16 store keeps them exactly.

    Example:
        >>> image = np.array([[[[0.0, 2.0, 4.0]]]], np.float32)
        >>> normalize(image, "zscore-nonzero")[0].ravel().tolist()
        [0.0, -1.0, 1.0]
        >>> out, attrs = normalize(image, "zscore-all")
        >>> [round(v, 3) for v in out.ravel().tolist()], attrs["region"], attrs["stats"][0]["mean"]
        ([-1.225, 0.0, 1.225], 'all', 2.0)
    """
    if method == "none":
        return image, {"method": "none", "stats": []}
    if method == "zscore-nonzero":
        out, stats = zscore(image)
        return out, {"method": "zscore", "region": "nonzero", "stats": stats}
    if method == "zscore-all":
        out, stats = zscore(image, np.ones(image.shape[1:], dtype=bool))
        return out, {"method": "zscore", "region": "all", "stats": stats}
    raise ValueError(f"cannot normalise by {method!r}: resolve it first (resolve_normalization)")


def label_mapping(values: Iterable[int]) -> dict[int, int]:
    """Map declared label values, sorted, to contiguous class ids; 0 must be among them.

    Example:
        >>> label_mapping([4, 0, 2, 1])
        {0: 0, 1: 1, 2: 2, 4: 3}
    """
    values = sorted({int(v) for v in values} | {0})
    if len(values) > 256:
        raise ValueError(f"{len(values)} label values do not fit uint8 class ids")
    return {v: i for i, v in enumerate(values)}


def remap_labels(label: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Original label values -> class ids (uint8); unknown values raise ValueError.

    Example:
        >>> remap_labels(np.array([0, 4, 2]), {0: 0, 1: 1, 2: 2, 4: 3}).tolist()
        [0, 3, 2]
    """
    values = np.unique(label)
    unknown = [int(v) for v in values if int(v) not in mapping]
    if unknown:
        raise ValueError(
            f"label values {unknown} are not among the declared values {sorted(mapping)}"
        )
    out = np.zeros(label.shape, dtype=np.uint8)
    for value in values:
        out[label == value] = mapping[int(value)]
    return out


def class_counts(label: np.ndarray, n_classes: int) -> dict[int, int]:
    """Voxels per class id, every class listed.

    Example:
        >>> class_counts(np.array([[0, 2], [2, 2]], np.uint8), 3)
        {0: 1, 1: 0, 2: 3}
    """
    counts = np.bincount(label.ravel(), minlength=n_classes)
    return {c: int(counts[c]) for c in range(n_classes)}


def sample_locations(
    label: np.ndarray, n_classes: int, per_class: int, seed: int | str
) -> np.ndarray:
    """A seeded random sample of at most ``per_class`` voxel locations per class.

    Returns:
        (N, 4) int32 rows ``(class, z, y, x)``, grouped by class in increasing order.

    Example:
        >>> label = np.zeros((2, 2, 2), np.uint8); label[1, 0, 1] = 1
        >>> sample_locations(label, 2, 3, seed=0)[-1].tolist()
        [1, 1, 0, 1]
    """
    if isinstance(seed, str):
        seed = zlib.crc32(seed.encode())
    rng = np.random.default_rng(seed)
    flat = label.ravel()
    rows = []
    for cls in range(n_classes):
        where = np.flatnonzero(flat == cls)
        if where.size > per_class:
            where = np.sort(rng.choice(where, size=per_class, replace=False))
        coords = np.stack(np.unravel_index(where, label.shape), axis=1)  # (n, 3)
        rows.append(np.concatenate([np.full((len(where), 1), cls), coords], axis=1))
    return np.concatenate(rows).astype(np.int32).reshape(-1, 4)
