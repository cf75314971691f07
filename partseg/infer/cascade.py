"""Coarse-to-fine cascade (Chen et al., aneurysms in TOF-MRA).

1. A coarse model segments the whole case by minicubes (:func:`~partseg.infer.predictor.
   predict_case`, labels only).
2. Its connected foreground components become region proposals (:func:`propose_regions`):
   centre and bounding box of each.
3. A fine model segments a fixed-size volume of interest (VOI, 64^3 in the paper) centred on
   each proposal. The VOI is the fine model's *core*; its trained margin is read around it with
   the zero pad rule, so a VOI at the volume edge is handled like any minicube.
4. The fine probabilities are pasted back (averaged where VOIs overlap); everything outside the
   VOIs is background.

Derived input channels (the paper's Sobel vessel contour) come from :mod:`partseg.channels`
(``data.derived_channels``) through the ``derive`` argument, the same function the dataset
applies at training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from partseg.errors import GeometryError
from partseg.geometry import Box, Minicube, Partition
from partseg.infer.postprocess import components
from partseg.infer.predictor import (
    Derive,
    crop_output,
    forward,
    network_input,
    output_channels,
    predict_case,
)
from partseg.infer.stitch import (
    Stitcher,
    activate,
    default_activation,
    labels_from_probabilities,
)
from partseg.precision import Precision


@dataclass(frozen=True)
class Region:
    """One proposal of the coarse stage: a connected component."""

    size: int  # voxels
    centre: tuple[int, ...]  # rounded centroid (Z, Y, X)
    box: Box  # bounding box of the component


@dataclass(frozen=True)
class Stage:
    """A model and the geometry it was trained with."""

    model: torch.nn.Module
    partition: Partition
    layout: Any
    derive: Derive | None = None


@dataclass
class CascadeResult:
    labels: np.ndarray  # (Z, Y, X) uint8 class ids
    coarse: np.ndarray  # (Z, Y, X) uint8 labels of the coarse stage
    regions: list[Region]
    vois: list[Box]


def propose_regions(
    labels: np.ndarray, *, min_size: int = 1, max_regions: int | None = None
) -> list[Region]:
    """Connected foreground components of ``labels``, largest first.

    Example:
        >>> labels = np.zeros((1, 3, 8), np.uint8); labels[0, 1, 1:3] = 1; labels[0, :, 6] = 2
        >>> [(r.size, r.centre) for r in propose_regions(labels)]
        [(3, (0, 1, 6)), (2, (0, 1, 2))]
    """
    from scipy.ndimage import find_objects

    ids, sizes = components(labels > 0)
    regions: list[Region] = []
    for index, found in enumerate(find_objects(ids), start=1):
        if found is None or sizes[index] < min_size:
            continue
        coords = np.argwhere(ids[found] == index)
        offset = np.array([s.start for s in found])
        centre = tuple(int(v) for v in np.floor(coords.mean(0) + offset + 0.5))
        box = Box(tuple(s.start for s in found), tuple(s.stop - s.start for s in found))
        regions.append(Region(int(sizes[index]), centre, box))
    regions.sort(key=lambda r: (-r.size, r.centre))
    return regions[:max_regions] if max_regions is not None else regions


def voi_box(centre: Sequence[int], size: Sequence[int], shape: Sequence[int]) -> Box:
    """A ``size`` box centred on ``centre``, shifted inside the volume where it fits.

    Example:
        >>> voi_box((1, 30, 60), (4, 8, 8), (10, 64, 64))
        Box(start=(0, 26, 56), size=(4, 8, 8))
    """
    start = []
    for c, n, s in zip(centre, size, shape, strict=True):
        a = int(c) - n // 2
        if n <= s:
            a = min(max(a, 0), s - n)
        start.append(a)
    return Box(tuple(start), tuple(int(n) for n in size))


def predict_cascade(
    coarse: Stage,
    fine: Stage,
    case: Any,
    *,
    voi_size: int | Sequence[int] = 64,
    min_size: int = 1,
    max_regions: int | None = None,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    precision: Precision | None = None,
    tta: bool = False,
) -> CascadeResult:
    """Coarse proposals, fine segmentation of a VOI around each, pasted back.

    Args:
        coarse: the proposal model (any partseg model; predicted by minicubes).
        fine: a 3D model segmenting VOIs; its partition's margins are read around each VOI.
        case: a store ``Case`` or :class:`~partseg.infer.predictor.ArrayCase`.
        voi_size: VOI edge (per axis); a multiple of the fine model's stride.
        min_size: ignore coarse components smaller than this many voxels.
        max_regions: keep at most this many (largest) proposals.

    Example:
        >>> # result = predict_cascade(Stage(dm.model, dm.partition, dm.layout),
        >>> #                          Stage(unet.model, unet.partition, unet.layout,
        >>> #                                derive=add_sobel_channel), case)
    """
    shape = tuple(int(s) for s in case.shape)
    k = output_channels(coarse.model)
    stitcher = Stitcher(
        shape, coarse.partition, k, activation=default_activation(k), output="labels"
    )
    coarse_labels = predict_case(
        coarse.model, case, coarse.partition, coarse.layout, batch_size=batch_size,
        device=device, precision=precision, tta=tta, stitcher=stitcher, derive=coarse.derive,
    )  # fmt: skip
    regions = propose_regions(coarse_labels, min_size=min_size, max_regions=max_regions)
    size = (voi_size,) * 3 if isinstance(voi_size, int) else tuple(voi_size)
    _check_fine(fine, size)
    vois = [voi_box(r.centre, size, shape) for r in regions]
    outputs = _fine_outputs(fine, case, vois, batch_size, device, precision, tta)
    labels = _paste(outputs, vois, shape)
    return CascadeResult(labels, coarse_labels, regions, vois)


def _check_fine(fine: Stage, size: Sequence[int]) -> None:
    if int(fine.layout.spatial_dims) != 3:
        raise GeometryError("the cascade's fine model must be 3D (it segments cubic VOIs)")
    stride = fine.partition.stride
    if any(n % s for n, s in zip(size, stride, strict=True)):
        raise GeometryError(
            f"VOI size {tuple(size)} is not a multiple of the fine model's stride {stride}"
        )


def _fine_outputs(
    fine: Stage,
    case: Any,
    vois: list[Box],
    batch_size: int,
    device: str | torch.device,
    precision: Precision | None,
    tta: bool,
) -> list[np.ndarray]:
    """Fine probabilities (K, *voi) for every VOI, its trained margin read around it.

    Softmax over K > 1 channels, the sigmoid foreground probability for a one-channel model.
    """
    p = fine.partition
    activation = default_activation(output_channels(fine.model))
    cubes = [Minicube(v.start, v.size, p.margin_before, p.margin_after) for v in vois]
    outputs: list[np.ndarray] = []
    for start in range(0, len(cubes), batch_size):
        batch = cubes[start : start + batch_size]
        x = np.stack([network_input(case, c, fine.layout, fine.derive) for c in batch])
        logits = forward(fine.model, torch.from_numpy(x).to(device), precision=precision, tta=tta)
        for cube, out in zip(batch, logits, strict=True):
            core = crop_output(out, cube, cube.core_box)
            outputs.append(activate(core.cpu().numpy(), activation))
    return outputs


def _paste(outputs: list[np.ndarray], vois: list[Box], shape: Sequence[int]) -> np.ndarray:
    """Average overlapping VOI probabilities inside their union box; background elsewhere."""
    labels = np.zeros(shape, np.uint8)
    if not vois:
        return labels
    union = _union_inside(vois, shape)
    k = outputs[0].shape[0]
    total = np.zeros((k, *union.size), np.float32)
    count = np.zeros(union.size, np.float32)
    for probabilities, voi in zip(outputs, vois, strict=True):
        inside, where = voi.clip(shape)
        local = inside.shift(tuple(-a for a in union.start)).slices()
        total[(slice(None), *local)] += probabilities[(slice(None), *where)]
        count[local] += 1
    covered = count > 0
    mean = total / np.maximum(count, 1.0)  # (K, *union): the average where VOIs overlap
    region_labels = labels_from_probabilities(mean)
    labels[union.slices()] = np.where(covered, region_labels, 0)
    return labels


def _union_inside(boxes: list[Box], shape: Sequence[int]) -> Box:
    lo = [max(0, min(b.start[a] for b in boxes)) for a in range(len(shape))]
    hi = [min(int(shape[a]), max(b.stop[a] for b in boxes)) for a in range(len(shape))]
    return Box(tuple(lo), tuple(h - low for low, h in zip(lo, hi, strict=True)))
