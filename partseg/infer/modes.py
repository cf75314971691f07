"""Prediction modes: the ways one case can be run through a model, as a registry.

:data:`MODES` maps a name (``partseg predict --partition NAME``) to a :class:`Mode`: a function
``predict(job) -> output`` and a check ``unsupported(model, layout) -> reason | None``. The
:class:`~partseg.infer.pipeline.CasePredictor` builds one :class:`CaseJob` per case (model,
case, geometry, device, precision, activation, output kind, output backend) and hands it to
the mode; what the mode returns is what :meth:`Stitcher.finalize
<partseg.infer.stitch.Stitcher.finalize>` returns: activated values (K, Z, Y, X) in
``job.dtype`` or labels (Z, Y, X) uint8, in the backend from :meth:`CaseJob.backend`.

* ``grid``: the training minicube grid, stitched per core (``crop``) or blended with an
  overlap (``average`` / ``gaussian`` / ``hann``); ``--margin N|exact`` sets the context.
* ``none``: the reference ``model(volume)``: the volume padded with zeros only at the end of
  each axis, up to a multiple of the stride, run once (2D models: whole slices).

* ``exact`` (the default): the layer-wise engine of :mod:`partseg.infer.engine`, which equals
  ``none`` at about its cost with bounded memory.

A new mode is one module defining a :class:`Mode` plus one line here (``exact`` is registered
lazily as ``"partseg.infer.engine:EXACT"``). When a mode cannot run a model
(``unsupported`` returns a reason, e.g. instance norm for a tiled engine),
:func:`select_mode` falls back to :data:`FALLBACK` and says why.

Example:
    >>> MODES.names()
    ('exact', 'grid', 'none')
    >>> MODES.get("none").unsupported(object(), None) is None
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from partseg.registry import Registry

if TYPE_CHECKING:
    import torch

    from partseg.channels import Derive
    from partseg.geometry import Partition
    from partseg.infer.stitch import Backend
    from partseg.precision import Precision

Shape = tuple[int, ...]
#: Makes the output backend: (output shape, chunk shape, dtype) -> Backend (e.g. a zarr array).
SinkFactory = Callable[[Shape, Shape, np.dtype], "Backend"]

#: The mode used when the requested one cannot run a model.
FALLBACK = "grid"


@dataclass(frozen=True)
class CaseJob:
    """One case to predict and everything about how; built by the CasePredictor.

    Attributes:
        model: network in eval mode on ``device``; ``forward(x)`` -> logits (B, K, *spatial).
        case: a store ``Case`` or ``ArrayCase`` (``id``, ``shape``, ``read(box, label=False)``).
        layout: the ``InputLayout`` (2D/3D, slice axis).
        partition: the grid partition: core, context margins grown by ``overlap``, stride.
            Other modes take the stride and (2D) the context slices from it.
        derive: derived-channel function applied to every read box (None without).
        device: where the model runs.
        precision: the resolved autocast mode (``off`` = fp32).
        tta: average the logits of all flips of the spatial axes.
        blend: the grid's blend mode (``crop`` keeps each core once).
        overlap: voxels each predicted region reaches beyond its core, per side and axis.
        batch_size: minicubes (or slices) per forward pass.
        activation: ``softmax``, ``sigmoid`` or ``none``, applied to the final logits.
        output: ``values`` (activated, K channels) or ``labels`` (uint8 class ids).
        dtype: dtype of stored values.
        sink: makes the output backend; None keeps the output in memory.
        region_order: the class id each output channel writes for region outputs
            (:func:`~partseg.infer.labels.labels_from_regions`); None for class outputs.
        progress: called with the share of the case written so far (0..1), for progress
            within long volumes; None: not reported.
    """

    model: torch.nn.Module
    case: Any
    layout: Any
    partition: Partition
    derive: Derive | None
    device: torch.device
    precision: Precision
    tta: bool
    blend: str
    overlap: Shape
    batch_size: int
    activation: str
    output: str
    dtype: np.dtype
    sink: SinkFactory | None = None
    region_order: tuple[int, ...] | None = None
    progress: Callable[[float], None] | None = None

    @property
    def shape(self) -> Shape:
        """Spatial shape (Z, Y, X) of the case."""
        return tuple(int(s) for s in self.case.shape)

    @property
    def channels(self) -> int:
        """K, the number of output channels of the model."""
        return int(self.model.out_channels)

    @property
    def output_shape(self) -> Shape:
        """(K, Z, Y, X) for values, (Z, Y, X) for labels."""
        return self.shape if self.output == "labels" else (self.channels, *self.shape)

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.output == "labels" else np.dtype(self.dtype)

    def backend(self, chunks: Shape) -> Backend:
        """The output backend, chunked ``chunks`` (Z, Y, X) on disk; in memory without a sink.

        Chunks are clipped to the volume; values chunks hold all K channels.
        """
        from partseg.infer.stitch import MemoryBackend

        if self.sink is None:
            backend = MemoryBackend(self.output_shape, self.output_dtype)
        else:
            spatial = tuple(min(int(c), s) for c, s in zip(chunks, self.shape, strict=True))
            full = spatial if self.output == "labels" else (self.channels, *spatial)
            backend = self.sink(self.output_shape, full, self.output_dtype)
        if self.progress is None:
            return backend
        return ReportingBackend(backend, int(np.prod(self.shape)), self.progress)


class ReportingBackend:
    """A backend that reports the share of the volume written after every write.

    Every mode writes each output voxel once (the stitcher emits finished chunks, the engine
    finished rows), so the share of voxels written is the share of the case done.

    Example:
        >>> from partseg.infer.stitch import MemoryBackend
        >>> shares = []
        >>> backend = ReportingBackend(MemoryBackend((2, 2, 2), np.uint8), 8, shares.append)
        >>> backend.write((slice(0, 1),), np.ones((1, 2, 2), np.uint8))
        >>> shares
        [0.5]
    """

    def __init__(self, backend: Backend, voxels: int, report: Callable[[float], None]) -> None:
        self.backend, self.voxels, self.report = backend, max(1, voxels), report
        self.written = 0

    def write(self, index: tuple[slice, ...], array: np.ndarray) -> None:
        self.backend.write(index, array)
        self.written += int(np.prod(array.shape[-3:]))  # (K, z, y, x) or (z, y, x)
        self.report(min(1.0, self.written / self.voxels))

    def result(self) -> Any:
        return self.backend.result()


def _any_model(model: Any, layout: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Mode:
    """A prediction mode.

    Attributes:
        predict: ``job -> output``: values (K, Z, Y, X) or labels (Z, Y, X) as
            ``Stitcher.finalize()`` returns them, written through ``job.backend(chunks)``.
        unsupported: ``(model, layout) -> reason or None``: why this mode cannot run the model
            (the predictor then falls back to :data:`FALLBACK`).
    """

    predict: Callable[[CaseJob], Any]
    unsupported: Callable[[Any, Any], str | None] = _any_model


def predict_grid(job: CaseJob) -> Any:
    """The ``grid`` mode: minicubes of ``job.partition``, stitched (chunk = core)."""
    return _stitched(job, job.partition, blend=job.blend, overlap=job.overlap)


def predict_reference(job: CaseJob) -> Any:
    """The ``none`` mode: ``model(volume)``, zeros only at the end of each axis (to the stride)."""
    from partseg.infer.partitions import whole_partition

    return _stitched(job, whole_partition(job.partition, job.shape, job.layout))


def _stitched(
    job: CaseJob, partition: Partition, *, blend: str = "crop", overlap: Shape | None = None
) -> Any:
    """Run ``job`` over the minicubes of ``partition`` into a Stitcher chunked on its cores."""
    from partseg.infer.predictor import predict_case
    from partseg.infer.stitch import Stitcher

    stitcher = Stitcher(
        job.shape, partition, job.channels, blend=blend, overlap=overlap,
        activation=job.activation, output=job.output, dtype=job.dtype,
        backend=job.backend(partition.core), region_order=job.region_order,
    )  # fmt: skip
    return predict_case(
        job.model, job.case, partition, job.layout, batch_size=job.batch_size, device=job.device,
        precision=job.precision, tta=job.tta, stitcher=stitcher, derive=job.derive,
    )  # fmt: skip


GRID = Mode(predict_grid)
REFERENCE = Mode(predict_reference)

MODES: Registry[Mode] = Registry("prediction mode")
MODES.add(
    "exact",
    "partseg.infer.engine:EXACT",
    help="the layer-wise engine: equals model(volume) at about its cost, memory bounded "
    "(2D models: whole slices; instance/group norm falls back to grid)",
)
MODES.add(
    "grid",
    GRID,
    help="the training minicube grid, stitched per core (crop) or blended with an overlap",
)
MODES.add(
    "none",
    REFERENCE,
    help="the whole volume in one pass, zeros only at the end up to the stride (the reference)",
)


def select_mode(name: str, model: Any, layout: Any) -> tuple[str, Mode, str | None]:
    """The mode ``name`` if it can run ``model``, else :data:`FALLBACK`, and a note saying why.

    Returns:
        (name used, mode, note or None).
    """
    mode = MODES.get(name, key="partition")
    reason = mode.unsupported(model, layout)
    if reason is None:
        return name, mode, None
    note = f"prediction mode {name!r} cannot run this model: {reason}; using {FALLBACK!r}"
    return FALLBACK, MODES.get(FALLBACK), note
