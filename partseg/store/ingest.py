"""Ingest a raw dataset into a partseg store: atomic per case, resumable, parallel over cases.

One case at a time per worker: read and check (:func:`~partseg.store.reading.read_case`), crop,
remap labels, resample, normalise (:mod:`~partseg.store.preprocess`), then write it under a tmp
name and rename it into place (:class:`~partseg.store.writer.StoreWriter`). Only the
coordinating process rewrites the dataset index, after each completed case, so the index never
lists a half-written case. Rerunning the same command resumes: complete cases are skipped,
leftover tmp folders are removed, and listed cases whose folder is gone (deleted because it was
damaged) are written again. Settings that change the stored data (crop, normalisation,
spacing, dtype, chunks, channel renames, labels, regions) must match on resume; otherwise pass
``overwrite=True``. The settings are :class:`~partseg.store.settings.IngestSettings`; one case's
work is :mod:`partseg.store.prepare`.

Channels: the layout's names, renamed by ``settings.channel_map`` (``--channel-map``,
:func:`~partseg.store.editions.rename_channels`).

Declared labels, in order of precedence: ``settings.labels``; the layout's declaration (BraTS
{0, 1, 2, 4} or {0, 1, 2, 3} for 2023; ``dataset.json`` for MSD); else the values found in the
first case with a readable label. A case with a value outside the declared set is bad. A
region-based nnU-Net ``dataset.json`` also declares regions
(:class:`~partseg.store.regions.Regions`); the store records them in class ids under
``"regions"``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partseg import __version__
from partseg.errors import InputError, StoreError
from partseg.geometry import Box
from partseg.names import name_problem
from partseg.store import preprocess as pp
from partseg.store.editions import rename_channels
from partseg.store.prepare import CasePlan, Outcome, error_fields, foreground_of, ingest_one
from partseg.store.reading import read_case
from partseg.store.regions import Regions
from partseg.store.settings import CROPS, IngestSettings
from partseg.store.sources import ReadOptions, Source, SourceCase, discover
from partseg.store.writer import (
    TMP_PREFIX,
    StoreWriter,
    create_store,
    store_lock,
    store_state,
    writable_state,
)

__all__ = ["CROPS", "IngestReport", "IngestSettings", "ingest"]


@dataclass
class IngestReport:
    """What an ingest run did.

    Attributes:
        store: the store URL.
        layout: the detected or given layout.
        written: cases written by this run.
        already: cases that were complete before this run (resume).
        bad: ``{"case", "path", "problem", "hint"}`` per case that could not be ingested.
        total: complete cases in the store after the run.
        seconds: wall time.
        removed_tmp: unfinished case folders of a crashed run, removed.
        missing: cases the index listed without a folder (deleted by hand); written again.
    """

    store: str
    layout: str
    written: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    bad: list[dict[str, str]] = field(default_factory=list)
    total: int = 0
    seconds: float = 0.0
    removed_tmp: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"ingested {len(self.written)} case(s) into {self.store} ({self.layout} layout) in "
            f"{self.seconds:.1f} s; {len(self.already)} already present; {self.total} in store"
        ]
        if self.removed_tmp:
            lines.append(f"removed {len(self.removed_tmp)} unfinished case folder(s) of a crash")
        if self.missing:
            lines.append(
                f"{len(self.missing)} listed case(s) had no folder, so they were ingested again: "
                + ", ".join(self.missing)
            )
        if self.bad:
            lines.append(f"{len(self.bad)} bad case(s) left out:")
            for b in self.bad:
                hint = f"; {b['hint']}" if b["hint"] else ""
                lines.append(f"  {b['case']}: {b['problem']} ({b['path']}){hint}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- the run


def ingest(
    src: str | Path,
    store: str | Path,
    settings: IngestSettings | None = None,
    *,
    workers: int = 1,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> IngestReport:
    """Ingest every case of ``src`` into the store at ``store`` (a path or fsspec URL).

    Args:
        src: the raw dataset folder (or one HDF5/NumPy file).
        store: where to write; an existing partseg store is resumed.
        settings: preprocessing and storage settings.
        workers: processes working on cases in parallel (1: in this process).
        skip_bad: report bad cases and go on; otherwise the first bad case raises.
        overwrite: replace an existing partseg store instead of resuming it.
        progress: show progress on stderr (:class:`partseg.progress.Progress`).

    Raises:
        InputError: a bad case (without ``skip_bad``), or no dataset found in ``src``.
        StoreError: ``store`` exists and is not a partseg store, or it was made with other
            settings.

    Example (needs a dataset on disk, so it is not run as a test)::

        report = ingest("data/BraTS2020", "data/brats.zarr", workers=2)
        report.total
        # -> 369
    """
    start = time.perf_counter()
    settings = settings or IngestSettings()
    source = discover(src, settings.layout, ReadOptions(settings.image_key, settings.label_key),
                      settings.split)  # fmt: skip
    source = rename_channels(source, settings.channel_map)
    if settings.images_only:
        cases = tuple(dataclasses.replace(case, label_file=None) for case in source.cases)
        source = dataclasses.replace(source, cases=cases)
    settings = settings.resolved(source.channels)  # the store records what "auto" meant
    report = IngestReport(str(store), source.layout)
    source = _without_bad_ids(source, report, skip_bad)
    writable_state(store)  # a folder that is not a store gets no lock file
    with store_lock(store, "ingest"):
        _ingest_into(source, store, settings, workers, skip_bad, overwrite, progress, report)
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def _ingest_into(
    source: Source,
    store: str | Path,
    settings: IngestSettings,
    workers: int,
    skip_bad: bool,
    overwrite: bool,
    progress: bool,
    report: IngestReport,
) -> None:
    """The body of :func:`ingest`, run while holding the store's lock."""
    labels = _declared_labels(source, settings, report, skip_bad)
    mapping = pp.label_mapping(labels)
    classes = tuple(labels.get(v, f"label_{v}") for v in mapping)
    regions = _store_regions(source, mapping)
    index = {
        "case_ids": [],
        "channels": list(source.channels),
        "classes": list(classes),
        "label_mapping": [[k, v] for k, v in mapping.items()],
        "regions": regions.to_json() if regions is not None else None,
        "chunks": list(settings.chunks),
        "dtype": settings.dtype,
        "created_by": f"partseg {__version__}",
        "layout": source.layout,
        "source": str(source.root),
        "ingest": settings.recorded(),
        "dataset_crop_box": None,
    }
    writer = _open_writer(store, index, settings, overwrite)
    index = writer.index()
    present = set(writer.case_dirs())
    done = [c for c in index.get("case_ids", []) if c in present]
    report.missing = [c for c in index.get("case_ids", []) if c not in present]
    if report.missing:  # listed but deleted (e.g. a damaged case): unlist, then rewrite below
        writer.write_index({**index, "case_ids": done})
    report.already = [c.case_id for c in source.cases if c.case_id in done]
    report.removed_tmp = _clean_leftovers(writer, done)
    plan = CasePlan(settings, source.channels, classes, mapping, None)
    todo = [c for c in source.cases if c.case_id not in done]
    if settings.crop == "dataset":
        plan, todo = _with_dataset_box(plan, todo, source, writer, index, workers, skip_bad, report)

    rank = {c.case_id: i for i, c in enumerate(source.cases)}

    def on_done(outcome: Outcome) -> None:
        if outcome.error is None:
            done.append(outcome.case_id)
            done.sort(key=lambda c: rank.get(c, -1))  # source order, whichever worker ends first
            report.written.append(outcome.case_id)
            writer.write_index({**index, "case_ids": list(done)})

    _run_cases(ingest_one, todo, plan, writer, workers, skip_bad, report, on_done, progress)
    report.total = len(done)


def _without_bad_ids(source: Source, report: IngestReport, skip_bad: bool) -> Source:
    """Report the cases whose id cannot be a folder name (:mod:`partseg.names`) as bad."""
    keep = []
    for case in source.cases:
        problem = name_problem(case.case_id)
        if problem is None:
            keep.append(case)
            continue
        bad = InputError(case.case_id, case.image_files[0], f"the case id is not a safe name: "
                         f"{problem}", "rename the files, or rerun with --skip-bad")  # fmt: skip
        if not skip_bad:
            raise bad
        report.bad.append(error_fields(bad))
    return dataclasses.replace(source, cases=tuple(keep))


def _declared_labels(
    source: Source, settings: IngestSettings, report: IngestReport, skip_bad: bool
) -> dict[int, str]:
    """Declared label value -> class name (see the module docstring for the precedence)."""
    names = {**dict(source.labels or {}), **dict(settings.label_names)}
    if settings.labels is not None:
        values = sorted(set(settings.labels) | {0})
    elif source.labels is not None:
        values = sorted(source.labels)
    else:
        values = _labels_of_first_case(source, settings)
    names.setdefault(0, "background")
    return {v: names.get(v, f"label_{v}") for v in sorted(set(values) | {0})}


def _store_regions(source: Source, mapping: dict[int, int]) -> Regions | None:
    """The source's regions in class ids; InputError when they use undeclared label values."""
    if source.regions is None:
        return None
    try:
        return source.regions.mapped(mapping)
    except ValueError as err:
        raise InputError(
            "(dataset)", source.root, str(err), "declare every value the regions use (--labels)"
        ) from err


def _labels_of_first_case(source: Source, settings: IngestSettings) -> list[int]:
    options = ReadOptions(settings.image_key, settings.label_key)
    for case in source.cases:
        if case.label_file is None:
            continue
        try:
            raw = read_case(case, options)
        except InputError:
            continue  # reported when the case itself is ingested
        assert raw.label is not None
        return [int(v) for v in np.unique(raw.label)]
    return [0]


def _open_writer(
    store: str | Path, index: dict, settings: IngestSettings, overwrite: bool
) -> StoreWriter:
    state = store_state(store)
    if state != "store" or overwrite:
        return create_store(store, index, overwrite=overwrite, **settings.compression())
    writer = StoreWriter(store, **settings.compression())
    writer.ensure_cases_group()
    existing = writer.index()
    for key in ("channels", "classes", "label_mapping", "regions", "ingest"):
        if existing.get(key) != index[key]:
            raise StoreError(
                f"{store} was ingested with {key} = {existing.get(key)}, this run asks for "
                f"{index[key]}; rerun with the same settings to resume, or pass --overwrite"
            )
    return writer


def _clean_leftovers(writer: StoreWriter, done: Sequence[str]) -> list[str]:
    """Remove tmp folders of a crashed run and case folders the index does not list."""
    removed = [os.path.basename(p) for p in writer.remove_partial_files()]
    for name in writer.case_dirs():
        if name.startswith(TMP_PREFIX) or name not in done:
            writer.remove_case_dir(name)
            removed.append(name)
    return removed


def _with_dataset_box(
    plan: CasePlan,
    todo: list[SourceCase],
    source: Source,
    writer: StoreWriter,
    index: dict,
    workers: int,
    skip_bad: bool,
    report: IngestReport,
) -> tuple[CasePlan, list[SourceCase]]:
    """Compute (or reuse from the index) the union of all cases' foreground boxes."""
    stored = index.get("dataset_crop_box")
    if stored:
        box = Box(tuple(stored["start"]), tuple(stored["size"]))
        return CasePlan(plan.settings, plan.channels, plan.classes, plan.mapping, box), todo
    boxes: list[Box] = []

    def collect(outcome: Outcome) -> None:
        if outcome.box is not None:
            boxes.append(outcome.box)

    bad_before = len(report.bad)
    _run_cases(foreground_of, list(source.cases), plan, writer, workers, skip_bad, report,
               collect, progress=False)  # fmt: skip
    bad = {b["case"] for b in report.bad[bad_before:]}
    if not boxes:
        raise InputError("(dataset)", source.root, "no readable case to build the crop box", "")
    box = pp.union_box(boxes)
    index["dataset_crop_box"] = {"start": list(box.start), "size": list(box.size)}
    writer.write_index(index)
    new_plan = CasePlan(plan.settings, plan.channels, plan.classes, plan.mapping, box)
    return new_plan, [c for c in todo if c.case_id not in bad]


def _run_cases(
    func: Callable[..., Outcome],
    cases: Iterable[SourceCase],
    plan: CasePlan,
    writer: StoreWriter,
    workers: int,
    skip_bad: bool,
    report: IngestReport,
    on_done: Callable[[Outcome], None],
    progress: bool = True,
) -> None:
    """Apply ``func`` to every case, serially or in a process pool; stop at a bad case unless
    ``skip_bad`` (cases already running finish and are recorded, so nothing is half-written)."""
    from partseg.progress import Progress

    cases = list(cases)
    bar = Progress(len(cases), "ingest", unit="case", enabled=progress and bool(cases))
    first_bad: dict[str, str] | None = None

    def handle(outcome: Outcome) -> None:
        nonlocal first_bad
        bar.update(1)
        if outcome.error is not None:
            report.bad.append(outcome.error)
            first_bad = first_bad or outcome.error
        on_done(outcome)

    try:
        if workers <= 1:
            for case in cases:
                handle(func(case, plan, writer))
                if first_bad and not skip_bad:
                    break
        else:
            _run_pool(func, cases, plan, writer, workers, lambda: bool(first_bad and not skip_bad),
                      handle)  # fmt: skip
    finally:
        bar.close()
    if first_bad and not skip_bad:
        raise InputError(**first_bad)


def _run_pool(
    func: Callable[..., Outcome],
    cases: list[SourceCase],
    plan: CasePlan,
    writer: StoreWriter,
    workers: int,
    should_stop: Callable[[], bool],
    handle: Callable[[Outcome], None],
) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork: zarr keeps an event-loop thread
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: set[Future] = set()
        queue = list(reversed(cases))
        while queue or pending:
            while queue and len(pending) < 2 * workers and not should_stop():
                pending.add(pool.submit(func, queue.pop(), plan, writer))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                handle(future.result())
            if should_stop():
                queue.clear()
