"""Predict many cases into an output folder, resumably: a store's cases, or a raw folder.

:func:`predict_store` checks the model against the store, skips the cases a previous run with
the same checkpoints and settings finished (:class:`~partseg.infer.outputs.Manifest`), removes
what an interrupted run left behind and predicts the rest, committing each case's outputs
atomically. :func:`predict_input` first ingests a raw folder (BraTS / MSD / ...) into a
temporary store in ``OUT`` **with the ingest settings the model was trained with** (spacing,
normalisation, crop, dtype, label mapping: recorded in the checkpoint), so the network sees the
input it was trained on; the temporary store is reused by a rerun after an interruption and
removed at the end. The folder's channel names are its own (matched to the model's by alias,
:mod:`partseg.store.editions`); files that do not name their channels (nnU-Net's flat
``imagesTs``: ``<id>_0000.nii.gz``, ...) get the model's channel names, count checked.

Example (needs a trained run and data, so it is not run as a test)::

    predictor = CasePredictor.from_checkpoints(["runs/3d"])
    report = predict_store(predictor, "brats.zarr", Path("pred"))
    report.written, report.skipped
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from partseg.errors import CheckpointError, ConfigError, StoreError
from partseg.infer.outputs import (
    INGEST_PREFIX,
    Manifest,
    OutputSettings,
    check_case_name,
    clean_leftovers,
    write_prediction,
    zarr_sink,
)
from partseg.progress import Progress

if TYPE_CHECKING:
    from partseg.infer.pipeline import CasePredictor
    from partseg.store.ingest import IngestSettings

Log = Callable[[str], None]


@dataclass
class RunReport:
    """What a prediction run did: cases written, skipped as done, leftovers removed."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)


def predict_store(
    predictor: CasePredictor,
    url: str,
    out: Path,
    outputs: OutputSettings | None = None,
    *,
    cases: Sequence[str] | None = None,
    overwrite: bool = False,
    source: str | None = None,
    log: Log = print,
    progress: bool = False,
) -> RunReport:
    """Predict the cases of the store at ``url`` into ``out``; see the module docstring.

    Args:
        predictor: a :class:`~partseg.infer.pipeline.CasePredictor`.
        url: the store (path or fsspec URL).
        out: output folder (created).
        outputs: which files each case gets (default: labels as NIfTI).
        cases: case ids (default: all).
        overwrite: redo every case, replacing outputs of any earlier prediction.
        source: what the manifest names as the input (default ``url``; a raw folder for
            :func:`predict_input`).
        log: where the per-case lines go.
        progress: show progress on stderr, per case and within each case
            (:class:`~partseg.progress.Progress`: a bar on a terminal, else a line every 30 s).

    Raises:
        StoreError: unknown case ids, an empty store, or a case id that cannot name a file.
        CheckpointError: the model does not fit the store.
        ConfigError: ``out`` holds outputs of another prediction (without ``overwrite``).
    """
    from partseg.store import open_store

    outputs = outputs or OutputSettings()
    store = open_store(url)
    predictor.check_store(store)
    case_ids = _select(store, cases)
    out.mkdir(parents=True, exist_ok=True)
    identity = {
        **predictor.identity,
        "outputs": dataclasses.asdict(outputs),
        "source": source or _location(url),
    }
    manifest = Manifest.open(out, identity, overwrite=overwrite)
    if not overwrite and not manifest.exists:
        _refuse_foreign(out, case_ids, outputs)
    report = RunReport()
    report.cleaned = clean_leftovers(
        out, [n for c in case_ids for n in outputs.names(c)], keep=_ingest_in_use(url, out)
    )
    if report.cleaned:
        predictor.log(f"note: removed leftovers of an interrupted run: {report.cleaned}")
    todo = [c for c in case_ids if not manifest.done(c, outputs.names(c))]
    report.skipped = [c for c in case_ids if c not in todo]
    if report.skipped:
        shown = ", ".join(report.skipped[:5]) + (" ..." if len(report.skipped) > 5 else "")
        log(
            f"skipped {len(report.skipped)} of {len(case_ids)} cases already predicted in {out} "
            f"with these models and settings ({shown}); --overwrite redoes them"
        )
    with Progress(len(todo), "predict", unit="case", enabled=progress, final=False) as bar:
        for i, case_id in enumerate(todo):
            start = time.perf_counter()
            within = _within(bar, i, case_id)
            written, masked = _predict_one(predictor, store, store[case_id], out, outputs, within)
            manifest.record(case_id, [p.name for p in written])
            report.written.append(case_id)
            bar.set(i + 1, note=case_id)
            names = ", ".join(str(p) for p in written) or "nothing written (--export none)"
            seconds = time.perf_counter() - start
            line = f"{case_id}: {seconds:.1f} s -> {names} ({i + 1}/{len(todo)})"
            if masked:  # the model's own foreground in the air: worth knowing
                line += f"; the nonzero mask set {masked} foreground voxels outside the head to 0"
            (bar.write if bar.bar is not None else log)(line)
    return report


def _within(bar: Progress, index: int, case_id: str) -> Callable[[float], None] | None:
    """Progress within case ``index`` (share 0..1 of it written), when progress is shown."""
    if not bar.enabled:
        return None
    return lambda share: bar.set(index + share, note=f"{case_id} {share:.0%}")


def predict_input(
    predictor: CasePredictor,
    input_dir: str | Path,
    out: Path,
    outputs: OutputSettings | None = None,
    *,
    cases: Sequence[str] | None = None,
    overwrite: bool = False,
    log: Log = print,
    progress: bool = False,
) -> RunReport:
    """Ingest a raw folder with the model's ingest settings, then :func:`predict_store` it.

    The temporary store ``OUT/.partseg-ingest-<hash>`` (the hash of the folder and the
    settings) survives an interruption, so a rerun resumes the ingest instead of redoing it;
    other ``.partseg-ingest-*`` folders are leftovers and removed. It is deleted when every
    case is predicted.
    """
    from partseg.store.ingest import ingest

    settings, note = ingest_settings(predictor)
    if note:
        predictor.log(f"note: {note}")
    settings = name_input_channels(settings, input_dir, predictor.channels)
    settings = dataclasses.replace(settings, images_only=True)  # labels play no part here
    source = str(Path(input_dir).resolve())
    tmp = out / _ingest_folder(source, settings)
    out.mkdir(parents=True, exist_ok=True)
    stale = clean_leftovers(out, [], keep=tmp.name)
    if stale:
        predictor.log(f"note: removed leftovers of an interrupted run: {stale}")
    predictor.log(f"ingesting {input_dir} into a temporary store ({tmp.name})")
    ingest(input_dir, tmp / "input.zarr", settings, progress=False)
    report = predict_store(
        predictor, str(tmp / "input.zarr"), out, outputs, cases=cases, overwrite=overwrite,
        source=source, log=log, progress=progress,
    )  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    return report


def ingest_settings(predictor: CasePredictor) -> tuple[IngestSettings, str | None]:
    """The ingest settings the predictor's checkpoints were trained with, and a note if none.

    The checkpoint records the training store's ``IngestSettings.recorded()`` (crop,
    normalisation, spacing, dtype, chunks) and its label mapping and class names; a raw folder
    is ingested with exactly those (so label values map to the same class ids). Checkpoints
    written before the settings were recorded get the defaults, with a note.

    Raises:
        CheckpointError: ensemble members trained on stores ingested differently.
    """
    from partseg.store.ingest import IngestSettings

    members = list(predictor.members)
    recorded = [m.ingest for m in members if m.ingest is not None]
    if any(r != recorded[0] for r in recorded[1:]):
        raise CheckpointError(
            "ensemble members were trained on stores ingested with different settings "
            f"({recorded[0]} vs {next(r for r in recorded if r != recorded[0])}); predict "
            "them separately or ingest the input yourself and use --store"
        )
    known = {f.name for f in dataclasses.fields(IngestSettings)} - {"channel_map"}
    kwargs: dict[str, Any] = {}  # no channel_map: an input's own names match by alias
    for key, value in (recorded[0] if recorded else {}).items():
        if key in known:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    if members and members[0].label_mapping:
        first = members[0]
        mapping = first.label_mapping  # original value -> class id
        kwargs["labels"] = tuple(sorted(mapping))
        if first.classes:
            kwargs["label_names"] = tuple((v, first.classes[c]) for v, c in sorted(mapping.items()))
    note = None
    if not recorded:
        names = ", ".join(str(m.path) for m in members) or "the model"
        note = (
            f"{names} records no ingest settings (written before partseg recorded them): the "
            "input is ingested with the defaults; if training used other settings, ingest the "
            "input with them yourself and predict with --store"
        )
    try:
        return IngestSettings(**kwargs), note
    except (ConfigError, TypeError) as err:
        raise CheckpointError(
            f"the checkpoint's ingest settings {kwargs} are invalid: {err}"
        ) from err


def name_input_channels(
    settings: IngestSettings, input_dir: str | Path, channels: Sequence[str]
) -> IngestSettings:
    """``settings`` naming the channels of files that do not name them (``ch0, ch1, ...``:
    nnU-Net's flat ``imagesTs``, HDF5 without names, NumPy) after the model's ``channels``.

    Raises:
        InputError: the files give another number of channels than the model takes.
    """
    from partseg.errors import InputError
    from partseg.store.sources import ReadOptions, discover

    options = ReadOptions(settings.image_key, settings.label_key)
    source = discover(input_dir, settings.layout, options, settings.split)
    if source.channels_named or not channels:
        return settings
    if len(source.channels) != len(channels):
        raise InputError(
            "(dataset)",
            source.root,
            f"the {source.layout} files give {len(source.channels)} channel(s) per case, but the "
            f"model was trained on {len(channels)} ({', '.join(channels)})",
            "give every case one file per model channel, in the model's order (_0000, _0001, ...)",
        )
    names = tuple(zip(source.channels, channels, strict=True))
    return dataclasses.replace(settings, channel_map=names)


def _predict_one(
    predictor: CasePredictor,
    store: Any,
    case: Any,
    out: Path,
    outputs: OutputSettings,
    progress: Callable[[float], None] | None = None,
) -> tuple[list[Path], int | None]:
    """Predict and write one case; the files written and the voxels the nonzero mask removed."""
    sink = None
    if outputs.probabilities == "zarr":
        attrs = {"case_id": case.id, "core": list(predictor.partition.core)}
        if predictor.region_order is not None:  # labels by the region rule, not argmax
            attrs["region_order"] = list(predictor.region_order)
        sink = zarr_sink(out / outputs.names(case.id)[-1], attrs)
    prediction = predictor.predict(
        case, probabilities=outputs.probabilities is not None, dtype=np.float16, sink=sink,
        progress=progress,
    )  # fmt: skip
    written = write_prediction(prediction, case, out, store.label_mapping, outputs)
    return written, prediction.masked_voxels


def _select(store: Any, cases: Sequence[str] | None) -> list[str]:
    case_ids = list(cases) if cases else list(store.case_ids)
    missing = [c for c in case_ids if c not in store]
    if missing:
        raise StoreError(
            f"cases {missing} are not in store {store.url}; it holds {len(store)} cases "
            f"(e.g. {list(store.case_ids[:3])}); check --cases"
        )
    if not case_ids:
        raise StoreError(f"store {store.url} holds no cases")
    for case_id in case_ids:
        check_case_name(case_id)
    return case_ids


def _refuse_foreign(out: Path, case_ids: Sequence[str], outputs: OutputSettings) -> None:
    """Outputs without a manifest were not made by a resumable partseg predict: keep them."""
    existing = [str(out / n) for c in case_ids for n in outputs.names(c) if (out / n).exists()]
    if existing:
        raise ConfigError(
            f"outputs already exist: {existing[:3]}{' ...' if len(existing) > 3 else ''}; "
            "pass --overwrite to replace them or choose another --out"
        )


def _location(url: str) -> str:
    """A store's location as the manifest records it: local paths absolute, URLs as given."""
    return url if "://" in str(url) else str(Path(url).resolve())


def _ingest_folder(source: str, settings: Any) -> str:
    text = json.dumps({"source": source, "settings": dataclasses.asdict(settings)}, default=str)
    return f"{INGEST_PREFIX}{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _ingest_in_use(url: str, out: Path) -> str | None:
    """The ``.partseg-ingest-*`` folder of ``out`` holding the store ``url``, if any."""
    try:
        parts = Path(url).resolve().relative_to(out.resolve()).parts
    except (ValueError, OSError):
        return None
    return parts[0] if parts and parts[0].startswith(INGEST_PREFIX) else None
