"""Seam-free prediction at whole-volume cost: the network run layer by layer, slab by slab.

``model(volume)`` on a BraTS volume needs every feature map of the volume at once; tiling the
volume into overlapping minicubes bounds memory but recomputes, per tile, a halo of half the
receptive field (52 voxels per side for the default model: ~10x the compute). This engine does
neither. It lowers the network into one node per layer (:mod:`partseg.infer.lowering`) and
streams the volume through them in **slabs** of rows along Z (whole Y-X planes):

* a node computes its next slab from exactly the input rows it reads (a 3-kernel conv: one row
  more on each side), fetched from its inputs' row buffers (:mod:`partseg.infer.rows`); rows
  outside the volume are zeros, as the whole-volume forward pads them; nothing is recomputed;
* demand drives the order: the logits ask the last decoder conv for rows, which asks its
  inputs, down to the image rows read from the store; each buffer drops rows no consumer will
  read again, so a skip feature holds the rows between where its encoder level is and where
  its decoder level is (about the receptive field), not the whole volume;
* squeeze-and-excitation needs the mean of its whole input: that input is computed over the
  whole volume first and kept (the "first pass"), then streamed on.

The result equals ``model(volume)`` of the volume zero-padded at the end of each axis to a
multiple of the network stride (:func:`stride_padded`), up to float rounding, everywhere,
border included: that padded whole-volume forward is the reference (``--partition none``).

As the ``exact`` prediction mode (:data:`EXACT`, ``partseg predict --partition exact``, the
default), 2D models run whole slices in batches (a slice's feature maps are small): that is
their whole-volume forward, the ``none`` mode. Instance and group norm cannot be run exactly
slab by slab (:class:`~partseg.errors.NotTileableError`); the mode then falls back to the grid.

Example:
    >>> import torch
    >>> from partseg.dataset import InputLayout
    >>> from partseg.infer.predictor import ArrayCase
    >>> from partseg.models import ModelConfig, build_model
    >>> model = build_model(ModelConfig(depth=3, base_width=4, in_channels=1, out_channels=2))
    >>> case = ArrayCase("a", np.random.default_rng(0).normal(size=(1, 13, 10, 9)).astype("f4"))
    >>> probs = predict_layerwise(model.eval(), case, InputLayout(), slab=4)
    >>> x = torch.zeros(1, 1, 16, 12, 12); x[0, :, :13, :10, :9] = torch.from_numpy(case.image)
    >>> with torch.no_grad():
    ...     ref = torch.softmax(model(x), 1)[0, :, :13, :10, :9].numpy()
    >>> probs.shape, bool(np.abs(probs - ref).max() < 1e-5)
    ((2, 13, 10, 9), True)
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partseg.errors import GeometryError
from partseg.geometry import Box
from partseg.infer import nodes as N
from partseg.infer.lowering import Graph, lower_model, not_tileable_reason
from partseg.infer.modes import CaseJob, Mode, predict_reference
from partseg.infer.rows import MemoryRows, Rows, ZarrRows
from partseg.infer.stitch import (
    Backend,
    MemoryBackend,
    activate,
    default_activation,
    labels_from_probabilities,
)
from partseg.models import blocks
from partseg.precision import Precision, resolve_precision

BUFFERS = ("auto", "memory", "zarr")


def stride_padded(shape: Sequence[int], stride: int) -> tuple[int, ...]:
    """The reference's input size: each axis rounded up to a multiple of ``stride``.

    Example:
        >>> stride_padded((13, 10, 9), 4)
        (16, 12, 12)
    """
    return tuple(-(-int(s) // stride) * stride for s in shape)


@dataclass
class EngineStats:
    """What one run of the engine held and did (for benchmarks and logs).

    Attributes:
        peak_buffer_bytes: largest total of the row buffers in RAM at any time.
        slabs: node slabs computed.
        nodes: nodes in the lowered graph.
        passes: graph runs (2**d with test-time flips).
    """

    peak_buffer_bytes: int = 0
    slabs: int = 0
    nodes: int = 0
    passes: int = 0


@dataclass(eq=False)
class _Stream:
    """The run-time state of one node: its buffer and what its consumers still read."""

    node: N.Node
    buffer: Rows
    slab: int
    inputs: list[_Stream] = field(default_factory=list)
    marks: dict[tuple[int, int], int] = field(default_factory=dict)  # (consumer, i) -> row
    prepared: bool = False

    def release_to(self, key: tuple[int, int], row: int) -> None:
        self.marks[key] = max(self.marks.get(key, row), row)
        self.buffer.release(min(self.marks.values()))


class _Runner:
    """Pulls slabs of the graph's output; see the module docstring."""

    def __init__(
        self,
        graph: Graph,
        *,
        device: torch.device,
        slab: int,
        buffers: str,
        scratch: Path | None,
        stats: EngineStats,
    ) -> None:
        self.device = device
        self.stats = stats
        self.streams: dict[int, _Stream] = {}
        pin = device.type == "cuda"
        for i, node in enumerate(graph.nodes):
            rows = _buffer(node, buffers, scratch, i, pin)
            stream = _Stream(node, rows, max(1, slab // node.scale))
            stream.inputs = [self.streams[id(x)] for x in node.inputs]
            for k, x in enumerate(stream.inputs):
                x.marks[(id(stream), k)] = 0  # nothing released before every reader started
            self.streams[id(node)] = stream
        self.output = self.streams[id(graph.output)]
        self.output.marks[(0, 0)] = 0  # the caller reads the output

    def slabs(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(lo, hi, logits rows)`` of the output, in order."""
        out = self.output
        rows = out.node.rows
        for lo in range(0, rows, out.slab):
            hi = min(rows, lo + out.slab)
            self._ensure(out, hi)
            yield lo, hi, out.buffer.fetch(lo, hi)
            out.release_to((0, 0), hi)

    def _ensure(self, stream: _Stream, hi: int) -> None:
        node = stream.node
        hi = min(hi, node.rows)
        if node.needs_all and not stream.prepared:
            for x in stream.inputs:
                self._ensure(x, x.node.rows)
            node.prepare(lambda i: stream.inputs[i].buffer.slabs())
            stream.prepared = True
        while stream.buffer.end < hi:
            lo = stream.buffer.end
            top = min(hi, lo + stream.slab)  # what is asked, a slab at a time: no lag builds up
            xs = []
            for x, (a, b) in zip(stream.inputs, node.needs(lo, top), strict=True):
                self._ensure(x, b)
                xs.append(x.buffer.fetch(a, b, self.device))
            stream.buffer.append(node.compute(lo, top, xs))
            del xs
            self.stats.slabs += 1
            for k, (x, (a, _)) in enumerate(
                zip(stream.inputs, node.needs(top, top + 1), strict=True)
            ):
                x.release_to((id(stream), k), a)  # the next slab starts reading at row a
            self._account()

    def _account(self) -> None:
        held = sum(s.buffer.nbytes for s in self.streams.values())
        self.stats.peak_buffer_bytes = max(self.stats.peak_buffer_bytes, held)


def _buffer(node: N.Node, kind: str, scratch: Path | None, index: int, pin: bool) -> Rows:
    if kind == "zarr" and not isinstance(node, N.Source):
        assert scratch is not None
        return ZarrRows(node.rows, scratch / f"{index:03d}.zarr")
    return MemoryRows(node.rows, pin=pin)


def predict_layerwise(
    model: torch.nn.Module,
    case: Any,
    layout: Any,
    *,
    derive: Any = None,
    device: str | torch.device = "cpu",
    precision: Precision | str = "off",
    tta: bool = False,
    activation: str | None = None,
    output: str = "values",
    dtype: np.dtype | type = np.float32,
    backend: Backend | None = None,
    slab: int = 8,
    buffers: str = "auto",
    stats: EngineStats | None = None,
    border: Sequence[tuple[int, int]] | None = None,
    region_order: Sequence[int] | None = None,
):
    """Predict a whole case with the layer-wise engine; equals the padded whole-volume forward.

    Args:
        model: a partseg network (put in eval mode here).
        case: a store ``Case`` or :class:`~partseg.infer.predictor.ArrayCase` (``shape``,
            ``read(box, label=False)`` with zeros outside the volume).
        layout: the training ``InputLayout`` (3D; the ``exact`` mode runs 2D models as whole
            slices, their whole-volume forward).
        derive: the run's derived-channel function (e.g. the Sobel contour), or None.
        device: where the layers run; buffers stay in (pinned) host memory.
        precision: a :class:`~partseg.precision.Precision` or a mode (``off`` = fp32).
        tta: average the logits of every flip combination of the spatial axes.
        activation: ``softmax`` / ``sigmoid`` / ``none``; default by the output channels.
        output: ``values`` (K, Z, Y, X) in ``dtype`` or ``labels`` (Z, Y, X) uint8.
        dtype: dtype of stored values.
        backend: where rows of the output go (default an in-memory array).
        slab: rows per slab at full resolution (coarser levels take proportionally fewer).
        buffers: ``memory``, ``zarr`` (feature rows in a scratch folder on disk) or ``auto``
            (zarr when :func:`held_bytes` exceeds half the available RAM).
        stats: filled with what the run held and did.
        border: zero voxels (before, after) around the case per axis in the network input,
            e.g. the trained context margin (what :data:`EXACT` passes): a model trained on
            minicubes saw zero *input* beyond the volume, not zero-padded features.
        region_order: for region outputs, the class id each channel writes (labels by
            :func:`~partseg.infer.labels.labels_from_regions`); None for class outputs.

    Returns:
        ``backend.result()``: activated values (K, Z, Y, X) or labels (Z, Y, X).
    """
    if int(layout.spatial_dims) != 3:
        raise GeometryError("predict_layerwise runs 3D models; 2D models run whole slices")
    if buffers not in BUFFERS:
        raise GeometryError(f"unknown buffers {buffers!r}; use one of {', '.join(BUFFERS)}")
    if buffers == "auto":
        fits = held_bytes(model, case.shape) <= available_ram() // 2
        buffers = "memory" if fits else "zarr"
    device = torch.device(device)
    if isinstance(precision, str):
        precision = resolve_precision(precision, device)
    model.eval()
    k = int(model.out_channels)
    activation = activation or default_activation(k, regions=region_order is not None)
    shape = tuple(int(s) for s in case.shape)
    out_shape = shape if output == "labels" else (k, *shape)
    out_dtype = np.uint8 if output == "labels" else dtype
    backend = backend or MemoryBackend(out_shape, out_dtype)
    stats = stats if stats is not None else EngineStats()
    writer = _Writer(backend, activation, output, dtype, shape, region_order)
    with torch.inference_mode(), precision.autocast():
        _run_volume(model, case, derive, device, tta, slab, buffers, stats, writer, border)
    return backend.result()


class _Writer:
    """Crops output rows to the volume, activates them and writes them (or sums TTA logits)."""

    def __init__(
        self, backend: Backend, activation: str, output: str, dtype, shape, region_order=None
    ) -> None:
        self.backend, self.activation, self.output = backend, activation, output
        self.dtype, self.shape, self.region_order = np.dtype(dtype), shape, region_order

    def write(self, axis: int, lo: int, logits: np.ndarray) -> None:
        """``logits`` (K, *shape with rows [lo, lo + n) along ``axis``) -> the output."""
        values = activate(logits, self.activation)
        rows = [slice(None)] * len(self.shape)
        rows[axis] = slice(lo, lo + logits.shape[1 + axis])
        if self.output == "labels":
            self.backend.write(tuple(rows), labels_from_probabilities(values, self.region_order))
        else:
            self.backend.write((slice(None), *rows), values.astype(self.dtype, copy=False))


def _flips(ndim: int, tta: bool) -> list[tuple[int, ...]]:
    """Spatial axes (0-based) to flip in each pass: every combination with ``tta``."""
    sets: list[tuple[int, ...]] = [()]
    if tta:
        for axis in range(ndim):
            sets += [(*s, axis) for s in sets]
    return sets


def _run_volume(model, case, derive, device, tta, slab, buffers, stats, writer, border) -> None:
    """3D: stream the padded volume through the lowered graph, once per flip set."""
    shape = writer.shape
    pairs = [(0, 0)] * 3 if border is None else [(int(b), int(a)) for b, a in border]
    grown = tuple(b + n + a for n, (b, a) in zip(shape, pairs, strict=True))
    padded = stride_padded(grown, int(model.total_stride))
    offset = tuple(b for b, _ in pairs)  # where the case starts in the network input
    flips = _flips(3, tta)
    total = None  # summed logits of the flip passes (K, *shape), only with tta
    with tempfile.TemporaryDirectory(prefix="partseg-rows-") as scratch:
        for flip in flips:
            read = _reader(case, derive, padded, offset, flip, device)
            source = N.Source("input", (), read=read)
            graph = lower_model(model, rows=padded[0], source=source)
            stats.nodes, stats.passes = len(graph.nodes), stats.passes + 1
            folder = Path(scratch) / f"pass{stats.passes}"
            runner = _Runner(graph, device=device, slab=slab, buffers=buffers,
                             scratch=folder, stats=stats)  # fmt: skip
            for lo, hi, rows in runner.slabs():
                logits = rows[0].float().cpu().numpy()  # (K, hi - lo, *padded plane)
                lo, hi, logits = _unflip(lo, hi, logits, flip, padded, offset, shape)
                if hi <= lo:
                    continue
                if not tta:
                    writer.write(0, lo, logits)
                    continue
                if total is None:
                    total = np.zeros((logits.shape[0], *shape), np.float32)
                total[:, lo:hi] += logits
    if total is not None:
        total /= len(flips)
        for lo in range(0, shape[0], max(1, slab)):
            writer.write(0, lo, total[:, lo : lo + slab])


def _unflip(lo: int, hi: int, logits: np.ndarray, flip, padded, offset, shape):
    """Rows of a (flipped) pass -> rows of the volume, flipped back and cropped to it."""
    for axis in (1, 2):
        if axis in flip:
            logits = np.flip(logits, axis + 1)  # back in the padded volume's own orientation
    if 0 in flip:
        logits = np.flip(logits, 1)
        lo, hi = padded[0] - hi, padded[0] - lo
    lo, hi = lo - offset[0], hi - offset[0]  # network-input rows -> volume rows
    first, last = max(lo, 0), min(hi, shape[0])
    plane = tuple(slice(o, o + n) for o, n in zip(offset[1:], shape[1:], strict=True))
    logits = logits[(slice(None), slice(first - lo, last - lo), *plane)]
    return first, last, np.ascontiguousarray(logits)


def _reader(case, derive, padded, offset, flip, device):
    """``read(lo, hi)``: image rows of the padded (flipped) volume as (1, C, n, Y, X); the
    case starts at ``offset`` in it, zeros elsewhere."""
    halo = int(getattr(derive, "halo", 0)) if derive is not None else 0
    rows = padded[0]

    def read(lo: int, hi: int) -> torch.Tensor:
        a, b = (rows - hi, rows - lo) if 0 in flip else (lo, hi)
        start = (a - halo - offset[0], -offset[1], -offset[2])
        box = Box(start, (b - a + 2 * halo, padded[1], padded[2]))
        image, _ = case.read(box, label=False)  # (C, n + 2 halo, Y, X), zeros outside
        if derive is not None:
            image = derive(image)[:, halo : halo + b - a]
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        dims = [d + 2 for d in flip]
        return (x.flip(dims) if dims else x).to(device)

    return read


def held_bytes(model: torch.nn.Module, shape: Sequence[int]) -> int:
    """A generous estimate of the feature rows the engine holds for a volume of ``shape``.

    The skip features of the full-resolution level dominate: about a receptive field of rows
    (plus slabs) of the widest full-resolution features, twice (skip and decoder); each
    squeeze-and-excitation block keeps its whole input. Measured at the default model it
    overestimates 2.5-2.6x (0.33 GiB held against 0.82 GiB estimated for 4 x 144 x 176 x 144,
    3.4 GiB against 8.4 GiB for 4 x 256 x 512 x 512).

    Example:
        >>> from partseg.models import ModelConfig, build_model
        >>> model = build_model(ModelConfig(in_channels=4, out_channels=4))  # the default model
        >>> round(held_bytes(model, (256, 512, 512)) / 2**30, 1)
        8.4
    """
    plane = math.prod(int(s) for s in shape[1:])
    full = int(getattr(model.config, "base_width", 32))  # channels at full resolution
    rows = int(model.receptive_field) + 4 * SLAB
    held = 2 * rows * plane * full * 4
    se = sum(isinstance(m, blocks.SqueezeExcitation) for m in model.modules())
    return held + se * math.prod(int(s) for s in shape) * full * 4


def available_ram() -> int:
    """Bytes of RAM available now (physical pages free; 4 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


#: Rows per slab at full resolution: 8 kept the default model's buffers and transients at
#: 0.38x the whole-volume forward's peak RSS on 4 x 144 x 176 x 144 (docs/stitching.md).
SLAB = 8


def _predict_exact(job: CaseJob) -> Any:
    """The ``exact`` mode: the engine for 3D models, whole slices (the reference) for 2D."""
    if int(job.layout.spatial_dims) == 2:
        return predict_reference(job)
    backend = job.backend((SLAB, *job.shape[1:]))  # output chunks = the engine's slabs
    return predict_layerwise(
        job.model, job.case, job.layout, derive=job.derive, device=job.device,
        precision=job.precision, tta=job.tta, activation=job.activation, output=job.output,
        dtype=job.dtype, backend=backend, slab=SLAB, region_order=job.region_order,
        border=trained_border(job.partition),
    )  # fmt: skip


def trained_border(partition: Any) -> list[tuple[int, int]]:
    """The zeros around a case in the network input: the trained context margin per side.

    Training reads minicubes whose context beyond the volume is zero input; a volume run
    whole with no such border would put each layer's zero padding right at its edge, which a
    model trained with context never saw (it predicts false bands along the border).
    """
    return list(zip(partition.margin_before, partition.margin_after, strict=True))


def _unsupported(model: torch.nn.Module, layout: Any) -> str | None:
    if int(layout.spatial_dims) == 2:
        return None
    return not_tileable_reason(model)


#: The ``exact`` prediction mode (registered in :data:`partseg.infer.modes.MODES`).
EXACT = Mode(_predict_exact, unsupported=_unsupported)


__all__ = [
    "BUFFERS",
    "EXACT",
    "SLAB",
    "EngineStats",
    "predict_layerwise",
    "stride_padded",
]
