"""Partitioned prediction: the training grid, batched through the model, stitched per core.

The low-level engine of the ``grid`` and ``none`` prediction modes (:mod:`partseg.infer.modes`;
:class:`~partseg.infer.pipeline.CasePredictor` is the one pipeline around them). Inference uses
the same :class:`~partseg.geometry.Partition` grid and the same zero pad rule as training:
every minicube's input box is read with ``case.read(box)`` (zeros outside the volume), run
through the network, and the core (plus the blend overlap) of the output goes to a
:class:`~partseg.infer.stitch.Stitcher`. :func:`predict_whole` is the reference,
``model(volume)``: one minicube covering the volume padded with zeros only at the end of each
axis, up to a multiple of the stride (:func:`~partseg.infer.partitions.whole_partition`).

Exactness: with eval-mode BatchNorm (or no norm) and margins of at least half the receptive
field, each a multiple of the stride (:func:`~partseg.infer.partitions.exact_partition`),
crop-mode stitched logits equal the whole-volume logits up to float rounding wherever a voxel's
receptive field lies inside the (stride-padded) volume. Near the volume border they differ:
the grid reads a full margin of zero *input* there, the reference pads each layer's features
with zeros (see ``docs/stitching.md``). Instance and group norm compute statistics per input,
so no margin makes them exact; :func:`norm_warning` says so.

2D models run through the same code: their partition has core 1 along the layout's slice axis
and the layout folds the neighbouring slices into channels, so every "minicube" is one slice.

Activation: a model with K > 1 output channels gives softmax probabilities; a one-channel model
(binary task trained with a sigmoid, ``model.out_channels: 1``) gives the sigmoid foreground
probability (1, Z, Y, X). Labels come from
:func:`~partseg.infer.stitch.labels_from_probabilities` (argmax, or ``p > 0.5`` for one channel).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from partseg.channels import Derive  # (C, *box) -> (C', *box), applied after every read
from partseg.errors import CheckpointError, GeometryError
from partseg.geometry import Box, Minicube, Partition
from partseg.infer.partitions import whole_partition
from partseg.infer.stitch import Stitcher, default_activation
from partseg.precision import Precision


@dataclass
class ArrayCase:
    """An in-memory case with the store's ``Case.read`` contract (zero pad outside the volume).

    Useful to predict a NumPy array without a store, and for the cascade's volumes of interest.

    Example:
        >>> case = ArrayCase("a", np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
        >>> image, _ = case.read(Box((1, 1, 1), (2, 2, 2)), label=False)
        >>> image[0, 0, 0].tolist(), image[0, 1].sum()
        ([7.0, 0.0], np.float32(0.0))
    """

    id: str
    image: np.ndarray  # (C, Z, Y, X) float32
    label: np.ndarray | None = None  # (Z, Y, X) uint8
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    attrs: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.image.shape[1:])

    @property
    def n_channels(self) -> int:
        return int(self.image.shape[0])

    @property
    def has_label(self) -> bool:
        return self.label is not None

    def read(self, box: Box, *, label: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Image (C, *box.size) float32 and label (*box.size) uint8 or None, zero outside."""
        image = np.zeros((self.n_channels, *box.size), np.float32)
        labels = np.zeros(box.size, np.uint8) if label and self.label is not None else None
        try:
            inside, where = box.clip(self.shape)
        except GeometryError:
            return image, labels
        image[(slice(None), *where)] = self.image[(slice(None), *inside.slices())]
        if labels is not None:
            labels[where] = self.label[inside.slices()]
        return image, labels


def norm_warning(model: torch.nn.Module) -> str | None:
    """A warning text when outputs depend on the whole input (instance/group norm, SE), else None.

    Uses the model's ``is_local`` flag when it has one (partseg models), else looks for
    per-input normalisation layers.
    """
    kinds = (torch.nn.modules.instancenorm._InstanceNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)
    found = sorted({type(m).__name__ for m in model.modules() if isinstance(m, kinds)})
    members = getattr(model, "members", [model])
    nonlocal_members = [m for m in members if getattr(m, "is_local", True) is False]
    if not found and not nonlocal_members:
        return None
    what = ", ".join(found) if found else "layers with whole-input statistics (e.g. SE blocks)"
    return (
        f"the model uses {what}: statistics are computed per partition, so stitched "
        "predictions cannot equal whole-volume inference exactly; use a blend mode "
        "(--blend gaussian) and check the seam index"
    )


def predict_case(
    model: torch.nn.Module,
    case: Any,
    partition: Partition,
    layout: Any,
    *,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    precision: Precision | None = None,
    blend: str = "crop",
    tta: bool = False,
    stitcher: Stitcher | None = None,
    derive: Derive | None = None,
    cubes: Sequence[Minicube] | None = None,
):
    """Predict one case by minicubes and stitch the cores.

    Args:
        model: network in eval mode; ``forward(x)`` -> logits (B, K, *spatial).
        case: a store ``Case`` (or :class:`ArrayCase`): ``shape``, ``read(box, label=False)``.
        partition: the grid (core, margins, stride); the training partition or a wider one.
        layout: ``InputLayout`` turning a (C, *box) read into a network input and back.
        batch_size: minicubes per forward pass.
        device: torch device of the model.
        precision: autocast mode (:func:`~partseg.precision.resolve_precision`); None or
            ``off`` runs fp32. Outputs are cast back to float32.
        blend: stitching mode when ``stitcher`` is None (``crop`` | ``average`` | ``gaussian``
            | ``hann``).
        tta: average the logits of every flip combination of the spatial axes.
        stitcher: where outputs go; default an in-memory float32 probability volume (softmax
            for K > 1 channels, sigmoid for one channel).
        derive: optional derived-channel function applied to each read box (e.g. Sobel contour).
        cubes: the minicubes to run (default the whole grid; a shard for parallel writers).

    Returns:
        ``stitcher.finalize()``; with the default stitcher the probabilities float32
        (K, Z, Y, X) over the case's volume: the softmax of the stitched logits, or for a
        one-channel model their sigmoid (the foreground probability).

    Example:
        >>> # probs = predict_case(loaded.model, store["BraTS_001"], loaded.partition,
        >>> #                      loaded.layout, blend="gaussian")
    """
    shape = tuple(int(s) for s in case.shape)
    if stitcher is None:
        k = output_channels(model)
        activation = default_activation(k)  # sigmoid for one channel, softmax otherwise
        stitcher = Stitcher(
            shape, partition, k, blend=blend, activation=activation, dtype=np.float32
        )
    if stitcher.partition.core != partition.core:
        raise GeometryError(
            f"stitcher core {stitcher.partition.core} differs from partition core "
            f"{partition.core}; build the stitcher from the same partition"
        )
    grid = list(cubes) if cubes is not None else partition.grid(shape)
    device = torch.device(device)
    for batch in _batches(grid, batch_size):
        inputs = np.stack([network_input(case, cube, layout, derive) for cube in batch])
        logits = forward(model, torch.from_numpy(inputs).to(device), precision=precision, tta=tta)
        for cube, out in zip(batch, logits, strict=True):
            region = stitcher.region(cube)
            values = crop_output(layout.output_to_volume(out), cube, region)
            stitcher.aggregate(values.cpu().numpy(), cube)
    return stitcher.finalize(complete=cubes is None)


def predict_whole(
    model: torch.nn.Module,
    case: Any,
    partition: Partition,
    layout: Any,
    *,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    precision: Precision | None = None,
    tta: bool = False,
    stitcher: Stitcher | None = None,
    derive: Derive | None = None,
):
    """The reference ``model(volume)`` (``--partition none``): zeros only at the end, run once.

    Same arguments and return value as :func:`predict_case`; of ``partition`` only the stride
    (and, for 2D models, the context slices) matter. A given ``stitcher`` must be built on
    :func:`~partseg.infer.partitions.whole_partition`. 2D models run whole slices, ``batch_size``
    at a time.
    """
    whole = whole_partition(partition, case.shape, layout)
    return predict_case(
        model,
        case,
        whole,
        layout,
        batch_size=batch_size,
        device=device,
        precision=precision,
        tta=tta,
        stitcher=stitcher,
        derive=derive,
    )


def output_channels(model: torch.nn.Module) -> int:
    """K of a partseg model (``out_channels``)."""
    k = getattr(model, "out_channels", None)
    if k is None:
        raise CheckpointError(
            f"model {type(model).__name__} has no out_channels; build it with partseg.models"
        )
    return int(k)


def forward(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    precision: Precision | None = None,
    tta: bool = False,
) -> torch.Tensor:
    """Logits float32 (B, K, *spatial) of ``x`` (B, C, *spatial), optionally flip-averaged.

    With ``tta`` every combination of flips of the spatial axes (2^d passes) is run, flipped
    back and averaged (logits, so the stitcher's softmax or sigmoid still applies once).
    ``precision`` (None: fp32) sets the autocast dtype.
    """
    dims = tuple(range(2, x.ndim))
    flips = _flip_sets(dims) if tta else [()]
    autocast = precision.autocast() if precision is not None else nullcontext()
    total: torch.Tensor | None = None
    with torch.inference_mode(), autocast:
        for flip in flips:
            out = model(x.flip(flip) if flip else x)
            if isinstance(out, list | tuple):
                out = out[0]
            out = out.float()
            out = out.flip(flip) if flip else out
            total = out if total is None else total + out
    assert total is not None
    return total / len(flips)


def crop_output(values: torch.Tensor, cube: Minicube, region: Box) -> torch.Tensor:
    """Cut ``region`` (volume coordinates) out of a network output over ``cube``.

    ``values`` is (K, *out) with, per axis, ``out`` equal to the input box size (3D models) or
    to the core size (the slice axis of 2D models, whose output is the centre slice).
    """
    box = cube.input_box
    index: list[slice] = [slice(None)]
    for a, n in enumerate(values.shape[1:]):
        if n == box.size[a]:
            start = box.start[a]
        elif n == cube.core[a]:
            start = cube.origin[a]
        else:
            raise GeometryError(
                f"network output size {tuple(values.shape[1:])} matches neither the input box "
                f"{box.size} nor the core {cube.core} on axis {a}; the model must keep the "
                "spatial size of its input"
            )
        offset = region.start[a] - start
        if offset < 0 or offset + region.size[a] > n:
            raise GeometryError(f"region {region} lies outside the output of minicube {cube}")
        index.append(slice(offset, offset + region.size[a]))
    return values[tuple(index)]


def network_input(case: Any, cube: Minicube, layout: Any, derive: Derive | None) -> np.ndarray:
    image, _ = case.read(cube.input_box, label=False)  # (C, *input_size)
    if derive is not None:
        image = derive(image)
    return np.ascontiguousarray(layout.image_to_network(image), dtype=np.float32)


def _batches(items: Sequence[Minicube], size: int) -> Iterator[list[Minicube]]:
    if size < 1:
        raise GeometryError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _flip_sets(dims: Sequence[int]) -> list[tuple[int, ...]]:
    sets: list[tuple[int, ...]] = [()]
    for d in dims:
        sets += [(*s, d) for s in sets]
    return sets
