"""Coarse-to-fine cascade (Chen et al., aneurysms in TOF-MRA).

1. A coarse model segments the whole case through its
   :class:`~partseg.infer.pipeline.CasePredictor` (labels only): the same mode, precision,
   flips, channel order, region rule and post-processing as ``partseg predict``.
2. Its connected foreground components become region proposals (:func:`propose_regions`):
   centre and bounding box of each.
3. A fine model segments a fixed-size volume of interest (VOI, 64^3 in the paper) centred on
   each proposal. The VOI is the fine model's *core*; its trained margin is read around it with
   the zero pad rule, so a VOI at the volume edge is handled like any minicube.
4. The fine probabilities are pasted back (averaged where VOIs overlap) and labelled by the fine
   model's rule (argmax, ``p > 0.5`` for one channel, or the region order); everything outside
   the VOIs is background. The fine predictor's post-processing (nonzero mask, small
   components, largest component) then applies to the pasted labels.

Derived input channels (the paper's Sobel vessel contour) come from :mod:`partseg.channels`
(``data.derived_channels``) through each predictor's ``derive``, the same function the dataset
applies at training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from partseg.errors import GeometryError
from partseg.geometry import Box, Minicube
from partseg.infer.postprocess import components
from partseg.infer.predictor import crop_output, forward, network_input
from partseg.infer.stitch import activate, default_activation, labels_from_probabilities

if TYPE_CHECKING:
    from partseg.infer.pipeline import CasePredictor


@dataclass(frozen=True)
class Region:
    """One proposal of the coarse stage: a connected component."""

    size: int  # voxels
    centre: tuple[int, ...]  # rounded centroid (Z, Y, X)
    box: Box  # bounding box of the component


@dataclass
class CascadeResult:
    labels: np.ndarray  # (Z, Y, X) uint8 class ids
    coarse: np.ndarray  # (Z, Y, X) uint8 labels of the coarse stage
    regions: list[Region]
    vois: list[Box]
    masked_voxels: int | None = None  # fine foreground the nonzero mask removed (None: no mask)


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
    coarse: CasePredictor,
    fine: CasePredictor,
    case: Any,
    *,
    voi_size: int | Sequence[int] = 64,
    min_size: int = 1,
    max_regions: int | None = None,
) -> CascadeResult:
    """Coarse proposals, fine segmentation of a VOI around each, pasted back.

    Args:
        coarse: the proposal model's predictor (any partseg model, in its settings' mode).
        fine: a 3D model's predictor; the VOIs are read with its trained margins, on its
            device, precision, flips and batch size.
        case: a store ``Case`` or :class:`~partseg.infer.predictor.ArrayCase`.
        voi_size: VOI edge (per axis); a multiple of the fine model's stride.
        min_size: ignore coarse components smaller than this many voxels.
        max_regions: keep at most this many (largest) proposals.

    Example:
        >>> # settings = PredictSettings(mode="exact")
        >>> # result = predict_cascade(CasePredictor.from_checkpoints(["runs/coarse"], settings),
        >>> #                          CasePredictor.from_checkpoints(["runs/fine"], settings),
        >>> #                          store["case_001"], voi_size=64)
    """
    shape = tuple(int(s) for s in case.shape)
    coarse_labels = coarse.predict(case, probabilities=False).labels
    regions = propose_regions(coarse_labels, min_size=min_size, max_regions=max_regions)
    size = (voi_size,) * 3 if isinstance(voi_size, int) else tuple(voi_size)
    _check_fine(fine, size)
    vois = [voi_box(r.centre, size, shape) for r in regions]
    outputs = _fine_outputs(fine, fine.in_model_order(case), vois)
    labels, masked = fine.finish(_paste(outputs, vois, shape, fine.region_order), case)
    return CascadeResult(labels, coarse_labels, regions, vois, masked)


def _check_fine(fine: CasePredictor, size: Sequence[int]) -> None:
    if int(fine.layout.spatial_dims) != 3:
        raise GeometryError("the cascade's fine model must be 3D (it segments cubic VOIs)")
    stride = fine.trained_partition.stride
    if any(n % s for n, s in zip(size, stride, strict=True)):
        raise GeometryError(
            f"VOI size {tuple(size)} is not a multiple of the fine model's stride {stride}"
        )


def _fine_outputs(fine: CasePredictor, case: Any, vois: list[Box]) -> list[np.ndarray]:
    """Fine probabilities (K, *voi) for every VOI, its trained margin read around it.

    Softmax over K > 1 classes, the sigmoid of a one-channel model or of every region.
    """
    p, batch_size = fine.trained_partition, fine.settings.batch_size
    activation = default_activation(fine.out_channels, regions=fine.regions is not None)
    cubes = [Minicube(v.start, v.size, p.margin_before, p.margin_after) for v in vois]
    outputs: list[np.ndarray] = []
    with fine.evaluating():
        for start in range(0, len(cubes), batch_size):
            batch = cubes[start : start + batch_size]
            x = np.stack([network_input(case, c, fine.layout, fine.derive) for c in batch])
            logits = forward(
                fine.model, torch.from_numpy(x).to(fine.device), precision=fine.precision,
                tta=fine.settings.tta,
            )  # fmt: skip
            for cube, out in zip(batch, logits, strict=True):
                core = crop_output(out, cube, cube.core_box)
                outputs.append(activate(core.cpu().numpy(), activation))
    return outputs


def _paste(
    outputs: list[np.ndarray],
    vois: list[Box],
    shape: Sequence[int],
    region_order: Sequence[int] | None = None,
) -> np.ndarray:
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
    region_labels = labels_from_probabilities(mean, region_order)
    labels[union.slices()] = np.where(covered, region_labels, 0)
    return labels


def _union_inside(boxes: list[Box], shape: Sequence[int]) -> Box:
    lo = [max(0, min(b.start[a] for b in boxes)) for a in range(len(shape))]
    hi = [min(int(shape[a]), max(b.stop[a] for b in boxes)) for a in range(len(shape))]
    return Box(tuple(lo), tuple(h - low for low, h in zip(lo, hi, strict=True)))
