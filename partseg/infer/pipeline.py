"""The one prediction pipeline: checkpoints -> ensemble -> mode -> probabilities / labels.

:class:`CasePredictor` is built once (from checkpoint paths, or from an in-memory model during
training) and predicts any number of cases. ``partseg predict``, ``partseg compare`` and
training's validation all call it, so the geometry, the checks, the device and precision rules
and the post-processing are written once:

1. **Checkpoints**: one, or several averaged as an ensemble
   (:class:`~partseg.infer.ensemble.EnsembleModel`); members must agree on layout, channels,
   classes, regions and derived channels (every disagreement is reported in one error).
   Channels match by alias (BraTS 2020 ``t1, t1ce, t2, flair`` = 2023 ``t1n, t1c, t2w, t2f``,
   :mod:`partseg.store.editions`); a store holding the model's modalities in another order is
   read in the model's order (every box read is reordered).
2. **Mode** (:data:`~partseg.infer.modes.MODES`): ``grid`` (the minicube grid, ``--margin``
   context, ``--blend`` with its ``--overlap``) or ``none`` (``model(volume)``); a mode that
   cannot run the model falls back to ``grid`` with a note.
3. **Probabilities / labels**: softmax (or the sigmoid of a one-channel model, or one sigmoid
   per region of a region model), in memory or streamed to a zarr backend; labels by argmax
   (``p > 0.5`` for one channel, nnU-Net's region rule for regions:
   :func:`~partseg.infer.labels.labels_from_regions`).
4. **Post-processing**: foreground outside the head's nonzero mask, small components removed,
   largest component kept, if asked.

Export to the original geometry and the resumable batch over a store's cases are in
:mod:`partseg.infer.outputs` and :mod:`partseg.infer.runs`.

Example (needs a trained run and a store, so it is not run as a test)::

    predictor = CasePredictor.from_checkpoints(["runs/3d"], PredictSettings(margin="exact"))
    predictor.check_store(store)
    prediction = predictor.predict(store["BraTS20_Training_001"])
    prediction.labels.shape, prediction.probabilities.shape   # (Z, Y, X), (K, Z, Y, X)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from partseg.channels import Derive
from partseg.checkpoint import LoadedModel, checkpoint_key, load_model
from partseg.devices import resolve_device
from partseg.errors import CheckpointError, ConfigError
from partseg.geometry import Partition
from partseg.infer.blends import overlap_per_side
from partseg.infer.ensemble import EnsembleModel, check_members, ensemble_partition
from partseg.infer.modes import CaseJob, SinkFactory, select_mode
from partseg.infer.partitions import blend_partition, context_partition
from partseg.infer.postprocess import case_nonzero_mask, postprocess
from partseg.infer.predictor import norm_warning, output_channels
from partseg.infer.settings import PredictSettings
from partseg.infer.stitch import default_activation, labels_from_probabilities
from partseg.precision import resolve_precision
from partseg.store.editions import channel_order, channels_problem
from partseg.store.regions import Regions

Log = Callable[[str], None]


def _to_stderr(message: str) -> None:
    print(f"partseg: {message}", file=sys.stderr)


@dataclass
class Prediction:
    """One predicted case.

    Attributes:
        case_id: the case.
        labels: (Z, Y, X) uint8 class ids over the stored case, post-processed.
        probabilities: (K, Z, Y, X) probabilities (numpy, or the zarr array they were streamed
            to), or None when only labels were asked for.
        regions: the probabilities are one sigmoid per region (a region model), not softmax
            classes.
        masked_voxels: foreground voxels the model predicted outside the head, which the
            nonzero mask set to background (None without ``nonzero_mask``): whether the model
            itself learned that the air is background.
    """

    case_id: str
    labels: np.ndarray
    probabilities: Any | None = None
    regions: bool = False
    masked_voxels: int | None = None


class CasePredictor:
    """Predict whole cases with one model or an ensemble; see the module docstring.

    Build it with :meth:`from_checkpoints` or :meth:`from_model`.

    Args:
        model: the network (an :class:`EnsembleModel` for several checkpoints).
        partition: the trained partition (the ensemble's shared one).
        layout: the ``InputLayout`` of training.
        settings: how to predict.
        derive: derived-channel function of training (None without).
        members: the loaded checkpoints (empty for an in-memory model).
        key: identifies the checkpoints (for resume manifests and caches).
        log: where notes and warnings go (default: stderr).
        regions: the region-based labels the model predicts (one sigmoid output per region),
            or None for class outputs.
        channels: the channel names the model was trained on (empty: unknown, read as is).

    Attributes:
        mode_name: the mode used (the requested one, or the fallback).
        trained_partition: the partition the model was trained on (``partition`` argument).
        partition: the grid partition used: context margins grown by ``overlap``.
        overlap: voxels each predicted region reaches beyond its core, per side and axis.
        device, precision: resolved from the settings.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        partition: Partition,
        layout: Any,
        settings: PredictSettings,
        *,
        derive: Derive | None = None,
        members: Sequence[LoadedModel] = (),
        key: str = "in-memory",
        log: Log | None = None,
        regions: Regions | None = None,
        channels: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.regions = regions
        self.channels = tuple(channels)
        self.log = log or _to_stderr
        self.device = resolve_device(settings.device, key="device")
        self.precision = resolve_precision(settings.precision, self.device, key="amp")
        self.model = model.to(self.device)
        self.layout = layout
        self.derive = derive
        self.members = tuple(members)
        self.key = key
        self.out_channels = output_channels(model)
        self.mode_name, self.mode, note = select_mode(settings.mode, model, layout)
        if note:
            self.log(f"note: {note}")
        if self.mode_name != "grid" and (settings.margin is not None or settings.blend != "crop"):
            self.log(f"note: margin, blend and overlap shape the grid; mode {self.mode_name!r} "
                     "ignores them")  # fmt: skip
        self.trained_partition = partition
        context = context_partition(model, partition, layout, settings.margin)
        self.overlap = overlap_per_side(settings.overlap, settings.blend, context.core)
        self.partition = blend_partition(context, self.overlap, per_side=settings.margin == "exact")
        for message in dict.fromkeys((*context.notes, *self.partition.notes)):
            self.log(f"note: {message}")
        warning = norm_warning(model)
        if warning and self.mode_name == "grid" and settings.blend == "crop":
            self.log(f"warning: {warning}")

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | os.PathLike],
        settings: PredictSettings | None = None,
        *,
        log: Log | None = None,
    ) -> CasePredictor:
        """Load one checkpoint (or run directory), or several as an ensemble.

        Raises:
            CheckpointError: an unreadable checkpoint, or members that disagree (all
                disagreements in one message).
        """
        settings = settings or PredictSettings()
        if not paths:
            raise ConfigError("give at least one checkpoint or run directory")
        device = resolve_device(settings.device, key="device")
        loaded = [load_model(path, device=device) for path in paths]
        check_members(loaded)
        first = loaded[0]
        if len(loaded) == 1:
            model, partition = first.model, first.partition
        else:
            model = EnsembleModel([m.model for m in loaded], sigmoid=first.regions is not None)
            partition = ensemble_partition([m.partition for m in loaded])
        return cls(
            model.eval(), partition, first.layout, settings, derive=first.derive, members=loaded,
            key=checkpoint_key(paths), log=log, regions=first.regions, channels=first.channels,
        )  # fmt: skip

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        partition: Partition,
        layout: Any,
        settings: PredictSettings | None = None,
        *,
        derive: Derive | None = None,
        log: Log | None = None,
        regions: Regions | None = None,
    ) -> CasePredictor:
        """Wrap an in-memory model (validation during training); it is not copied.

        The model is moved to ``settings.device`` (default settings: the device its parameters
        are on, so it stays where it is). :meth:`predict` puts the model in eval mode and
        restores its previous mode afterwards.
        """
        if settings is None:
            first = next(model.parameters(), None)
            settings = PredictSettings(device=str(first.device) if first is not None else "cpu")
        return cls(model, partition, layout, settings, derive=derive, log=log, regions=regions)

    # ---------------------------------------------------------------------------- checks
    def check_store(self, store: Any) -> None:
        """Raise CheckpointError listing every way a checkpoint does not fit ``store``.

        Checks channels (names by alias; another order is read in the model's, with a note),
        derived channels (their source channel exists), the network's input channels under the
        layout, classes and regions.
        """
        problems = [p for member in self.members for p in store_problems(member, store)]
        if problems:
            raise CheckpointError(
                f"the model does not fit store {store.url}: " + "; ".join(problems)
            )
        order = channel_order(self.channels, store.channels) if self.channels else None
        if order is not None:
            self.log(f"note: store {store.url} holds channels {list(store.channels)}; they are "
                     f"read in the model's order {list(self.channels)}")  # fmt: skip

    @property
    def identity(self) -> dict[str, Any]:
        """What makes two predictions equal: the checkpoints and the output-shaping settings.

        Device and batch size are left out: a run resumed elsewhere gives the same outputs.
        """
        return {"checkpoints": self.key, **self.settings.recorded()}

    # ---------------------------------------------------------------------------- predict
    def job(
        self,
        case: Any,
        *,
        output: str = "values",
        dtype: np.dtype | type = np.float32,
        sink: SinkFactory | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> CaseJob:
        """The :class:`CaseJob` of ``case`` for the mode (see :meth:`predict`)."""
        s = self.settings
        return CaseJob(
            model=self.model, case=case, layout=self.layout, partition=self.partition,
            derive=self.derive, device=self.device, precision=self.precision, tta=s.tta,
            blend=s.blend, overlap=self.overlap, batch_size=s.batch_size,
            activation=default_activation(self.out_channels, regions=self.regions is not None),
            output=output, dtype=np.dtype(dtype), sink=sink, region_order=self.region_order,
            progress=progress,
        )  # fmt: skip

    @property
    def region_order(self) -> tuple[int, ...] | None:
        """The class id each output channel writes (region models), else None."""
        return self.regions.order if self.regions is not None else None

    def in_model_order(self, case: Any) -> Any:
        """``case``, or a view of it reading its channels in the model's order.

        A store case names its channels (``case.attrs["channels"]``); when they are the model's
        modalities in another order (:func:`~partseg.store.editions.channel_order`), every
        box is read reordered. Cases without channel names are read as they are.
        """
        found = getattr(case, "attrs", {}).get("channels")
        order = channel_order(self.channels, found) if self.channels and found else None
        return case if order is None else ReorderedCase(case, order)

    def predict(
        self,
        case: Any,
        *,
        probabilities: bool = True,
        dtype: np.dtype | type = np.float32,
        sink: SinkFactory | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> Prediction:
        """Predict one case.

        Args:
            case: a store ``Case`` or :class:`~partseg.infer.predictor.ArrayCase`.
            probabilities: keep the (K, Z, Y, X) probabilities; False finalises labels chunk
                by chunk and never holds a float volume.
            dtype: dtype of the probabilities (float16 halves their RAM or disk).
            sink: where the mode's output goes (e.g. a zarr array, see
                :func:`~partseg.infer.outputs.zarr_sink`); default memory.
            progress: called with the share of the case done (0..1) as it is written.

        Returns:
            labels (post-processed) and, if asked, the probabilities.
        """
        output = "values" if probabilities else "labels"
        job = self.job(
            self.in_model_order(case), output=output, dtype=dtype, sink=sink, progress=progress
        )
        with self.evaluating():
            result = self.mode.predict(job)
        labels = labels_of(result, self.region_order) if probabilities else np.asarray(result)
        labels, masked = self.finish(labels, case)
        kept = result if probabilities else None
        regions = self.regions is not None
        return Prediction(str(case.id), labels, kept, regions=regions, masked_voxels=masked)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The model in eval mode within the context, its previous mode restored after."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def finish(self, labels: np.ndarray, case: Any) -> tuple[np.ndarray, int | None]:
        """The settings' post-processing of ``case``'s labels: nonzero mask, small components
        removed, largest component kept (each if asked); with the foreground voxels the mask
        removed (None without it)."""
        inside = case_nonzero_mask(case) if self.settings.nonzero_mask else None
        masked = None if inside is None else int(np.count_nonzero(labels[~inside]))
        finished = postprocess(
            labels,
            min_component_size=self.settings.min_component_size,
            keep_largest=self.settings.keep_largest,
            inside=inside,
        )
        return finished, masked


def labels_of(
    probabilities: Any, region_order: Sequence[int] | None = None, slab: int = 16
) -> np.ndarray:
    """Labels (Z, Y, X) uint8 of (K, Z, Y, X) probabilities, slab by slab (zarr larger than RAM).

    Argmax over classes, ``p > 0.5`` for one channel, or nnU-Net's region rule with
    ``region_order`` (:func:`~partseg.infer.stitch.labels_from_probabilities`).

    Example:
        >>> labels_of(np.array([[[[0.2, 0.7]]], [[[0.8, 0.3]]]]), slab=1).tolist()
        [[[1, 0]]]
        >>> labels_of(np.array([[[[0.9, 0.7]]], [[[0.8, 0.3]]]]), region_order=(1, 2)).tolist()
        [[[2, 1]]]
    """
    depth = probabilities.shape[1]
    labels = np.zeros(probabilities.shape[1:], np.uint8)
    for z in range(0, depth, slab):
        part = np.asarray(probabilities[:, z : z + slab])
        labels[z : z + slab] = labels_from_probabilities(part, region_order)
    return labels


class ReorderedCase:
    """A case whose image channels are read in another order; everything else is the case's.

    Args:
        case: a store ``Case`` (or anything with its ``read(box, label=...)`` contract).
        order: index of the case channel that feeds each model channel.

    Example:
        >>> from partseg.geometry import Box
        >>> from partseg.infer.predictor import ArrayCase
        >>> case = ArrayCase("a", np.stack([np.zeros((1, 1, 1)), np.ones((1, 1, 1))]))
        >>> image, _ = ReorderedCase(case, (1, 0)).read(Box.whole((1, 1, 1)), label=False)
        >>> image.ravel().tolist(), ReorderedCase(case, (1, 0)).id
        ([1.0, 0.0], 'a')
    """

    def __init__(self, case: Any, order: Sequence[int]) -> None:
        self.case = case
        self.order = list(order)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.case, name)

    def read(self, box: Any, *, label: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Image (C, *box) in the model's channel order, and the label (unchanged)."""
        image, labels = self.case.read(box, label=label)
        return image[self.order], labels


def store_problems(member: LoadedModel, store: Any) -> list[str]:
    """Every way one checkpoint does not fit ``store`` (empty when it fits)."""
    from partseg.channels import derived_channel_names

    name, problems = member.path, []
    mismatch = channels_problem(member.channels, store.channels) if member.channels else None
    if mismatch:
        problems.append(
            f"model {name} was trained on channels {list(member.channels)} but the store has "
            f"{list(store.channels)}: {mismatch} (ingest the data with the same modalities; "
            "ingest --channel-map renames channels)"
        )
    try:
        derived = derived_channel_names(member.derived_channels, store.channels)
    except ConfigError as err:
        problems.append(f"model {name}: {err}")
        derived = None
    if derived is not None:
        expected = member.layout.in_channels(len(store.channels) + len(derived), member.partition)
        if int(member.model.in_channels) != expected:
            extra = f" + {len(derived)} derived {list(derived)}" if derived else ""
            problems.append(
                f"model {name} takes {member.model.in_channels} input channels but the store "
                f"gives {expected} ({len(store.channels)} channels{extra} with this layout)"
            )
    if member.classes and store.classes and tuple(member.classes) != tuple(store.classes):
        problems.append(
            f"model {name} predicts classes {list(member.classes)} but the store has "
            f"{list(store.classes)} (use a model trained on this label set)"
        )
    stored = getattr(store, "regions", None)
    if member.regions is not None and stored is not None and member.regions != stored:
        problems.append(
            f"model {name} predicts regions {member.regions.to_json()} but the store declares "
            f"{stored.to_json()} (use a model trained on these regions)"
        )
    return problems
