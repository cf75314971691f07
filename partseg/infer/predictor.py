"""Partitioned prediction: the training grid, batched through the model, stitched per core.

Inference uses the same :class:`~partseg.geometry.Partition` grid and the same zero pad rule as
training: every minicube's input box is read with ``case.read(box)`` (zeros outside the
volume), run through the network, and the core (plus the blend overlap) of the output goes to a
:class:`~partseg.infer.stitch.Stitcher`. ``predict_whole`` is the reference: one minicube whose
core covers the whole (padded) volume, i.e. the volume padded per
:func:`~partseg.geometry.padded_shape`, run once and cropped back.

Exactness: with eval-mode BatchNorm (or no norm), aligned boxes and a margin of at least half
the receptive field (:func:`exact_partition`), crop-mode stitched logits equal whole-volume
logits up to float rounding. Instance and group norm compute statistics per input, so no margin
makes them exact; :func:`norm_warning` says so.

2D models run through the same code: their partition has core 1 along the layout's slice axis
and the layout folds the neighbouring slices into channels, so every "minicube" is one slice.

Activation: a model with K > 1 output channels gives softmax probabilities; a one-channel model
(binary task trained with a sigmoid, ``model.out_channels: 1``) gives the sigmoid foreground
probability (1, Z, Y, X). Labels come from
:func:`~partseg.infer.stitch.labels_from_probabilities` (argmax, or ``p > 0.5`` for one channel).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from partseg.channels import Derive  # (C, *box) -> (C', *box), applied after every read
from partseg.errors import CheckpointError, GeometryError
from partseg.geometry import Box, Minicube, Partition, make_partition
from partseg.infer.stitch import Stitcher, default_activation
from partseg.precision import resolve_precision


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


def exact_partition(
    model: torch.nn.Module,
    core: int | Sequence[int] | None,
    layout: Any,
    *,
    base: Partition | None = None,
) -> Partition:
    """A partition whose margin is half the model's receptive field: seam-free crop stitching.

    Args:
        model: a partseg ``SegmentationModel`` (``receptive_field``, ``total_stride``).
        core: core size (Z, Y, X); None takes ``base.core``. 2D models need 1 on the slice axis.
        layout: the ``InputLayout`` (``spatial_dims``, ``slice_axis``).
        base: the trained partition; 2D models keep its slice-axis margin (the context slices
            folded into channels, which the network's input width depends on).

    Example:
        >>> # exact_partition(model, (64, 64, 64), InputLayout()).margin_before
        >>> # (44, 44, 44) for a receptive field of 88 and stride 8
    """
    if core is None:
        if base is None:
            raise GeometryError("exact_partition needs a core size or a base partition")
        core = base.core
    cores = (core,) * 3 if isinstance(core, int) else tuple(int(c) for c in core)
    half = math.ceil(int(model.receptive_field) / 2)
    stride = int(model.total_stride)
    margins: list[tuple[int, int]] = [(half, half)] * len(cores)
    strides = [stride] * len(cores)
    if int(layout.spatial_dims) == 2:
        axis = int(layout.slice_axis)
        context = (0, 0) if base is None else (base.margin_before[axis], base.margin_after[axis])
        margins[axis] = context
        strides[axis] = 1
    return make_partition(cores, margins, tuple(strides), ndim=len(cores))


def whole_partition(partition: Partition, shape: Sequence[int]) -> Partition:
    """The one-minicube partition of the whole-volume reference (same margins and stride).

    Its core is the grid's extent ``grid_shape * core`` (a multiple of the stride), so its input
    box is exactly the padded volume of :func:`~partseg.geometry.padded_shape`. Axes whose core
    is 1 (the slice axis of 2D models) keep core 1: the reference runs whole slices.
    """
    counts = partition.grid_shape(shape)
    core = tuple(1 if c == 1 else n * c for n, c in zip(counts, partition.core, strict=True))
    return replace(partition, core=core, notes=())


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
    amp: bool = False,
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
        amp: autocast as training picks it (bfloat16 on CPU and on GPUs that support it, else
            float16); outputs are cast back to float32.
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
        logits = forward(model, torch.from_numpy(inputs).to(device), amp=amp, tta=tta)
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
    amp: bool = False,
    blend: str = "crop",
    tta: bool = False,
    stitcher: Stitcher | None = None,
    derive: Derive | None = None,
):
    """Whole-volume reference (``--partition none``): pad per ``padded_shape``, run, crop back.

    Same arguments and return value as :func:`predict_case`; ``blend`` is moot (one minicube).
    A given ``stitcher`` must be built on :func:`whole_partition` of ``partition``.
    """
    whole = whole_partition(partition, case.shape)
    return predict_case(
        model,
        case,
        whole,
        layout,
        batch_size=batch_size,
        device=device,
        amp=amp,
        blend="crop",
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
    model: torch.nn.Module, x: torch.Tensor, *, amp: bool = False, tta: bool = False
) -> torch.Tensor:
    """Logits float32 (B, K, *spatial) of ``x`` (B, C, *spatial), optionally flip-averaged.

    With ``tta`` every combination of flips of the spatial axes (2^d passes) is run, flipped
    back and averaged (logits, so the stitcher's softmax or sigmoid still applies once).
    """
    dims = tuple(range(2, x.ndim))
    flips = _flip_sets(dims) if tta else [()]
    precision = resolve_precision("auto" if amp else "off", x.device)  # training's dtype choice
    total: torch.Tensor | None = None
    with torch.inference_mode(), precision.autocast():
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


def warn_if_inexact(model: torch.nn.Module) -> None:
    """Emit :func:`norm_warning` as a UserWarning when it applies."""
    message = norm_warning(model)
    if message:
        warnings.warn(message, stacklevel=2)
