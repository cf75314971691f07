"""The whole comparison: train every variant, score every predictor, write the report."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from partseg.atomic import write_json
from partseg.errors import ConfigError
from partseg.experiments.config import CompareConfig
from partseg.experiments.data import make_split, prepare_store, reference_store
from partseg.experiments.evaluate import evaluate_predictor, overlay_slices
from partseg.experiments.predictors import Predictor, cascade_predictor, model_predictor
from partseg.experiments.prior import leaked_test_cases, prior_note, write_prior_store
from partseg.experiments.reporting import run_result, write_compare_report
from partseg.experiments.training import (
    best_value,
    check_variants_fit,
    read_history,
    run_dir_of,
    train_variant,
    training_costs,
)
from partseg.locking import fold_job_lock, run_lock


@dataclass
class CompareOutcome:
    """What :func:`run_compare` produced."""

    report_dir: Path
    runs: list[Any]  # partseg.report.RunResult
    table: str  # the Markdown headline table


def run_compare(
    config: CompareConfig,
    out: str | os.PathLike,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> CompareOutcome:
    """Train every variant (and fold), score them on the same test cases, write the report.

    A whole comparison holds its folder's lock throughout. Fold jobs (``config.only_folds``:
    one per GPU or machine, as nnU-Net runs its folds) may run at once in one folder: each
    holds it only while preparing the shared data and split, and while writing the report
    (of its own folds), waiting for a sibling fold job that does; each run locks its own
    folder while it trains.

    Example:
        >>> # outcome = run_compare(load_compare_config("configs/compare_brats.yaml"), "cmp")
        >>> # print(outcome.table)
    """
    out = Path(out)
    if not config.only_folds:
        with run_lock(out, "compare"):
            return _run_compare(config, out, progress, log, nullcontext)
    return _run_compare(config, out, progress, log, lambda: fold_job_lock(out, "compare", log))


def _run_compare(
    config: CompareConfig,
    out: Path,
    progress: bool,
    log: Callable[[str], None],
    writing: Callable[[], AbstractContextManager[object]],
) -> CompareOutcome:
    from partseg.store.zarrstore import open_store

    with writing():  # the data, the prior store and the split are shared by every fold job
        store_url, reference, split, notes = _prepare(config, out, progress, log)
    store = open_store(store_url)
    scored = reference or store
    log(
        f"store {store_url}: {len(store.case_ids)} cases, {len(split.test)} held out for test; "
        f"{len(config.variants)} variant(s) x {len(split.folds)} fold(s)"
    )
    check_variants_fit(config, store, store_url, split)
    if config.only_folds:
        log(f"only fold(s) {', '.join(map(str, config.only_folds))} of {config.folds}: rerun "
            "without --fold for the report over every fold")  # fmt: skip
    run_dirs = {
        (v.name, k): train_variant(config, v, k, store_url, split, out, log=log, progress=progress)
        for v in config.variants
        for k in config.fold_indices
    }
    slices = overlay_slices(scored, split.test, config.evaluation.overlay_slices)
    results, overlays, out_of_fold = [], {}, []
    cross_validated = len(split.folds) > 1 and config.evaluation.out_of_fold
    ensembles = {e.name for e in config.ensembles}  # members of every fold: no unseen cases
    for name, fold, predictor, costs, history in _predictors(config, run_dirs):
        cache = run_dir_of(out, name, fold) / "evaluation"
        evaluation, overlay = evaluate_predictor(
            predictor, store, split.test, slices, config.evaluation, cache, progress=progress,
            reference=reference,
        )  # fmt: skip
        results.append(run_result(name, fold, predictor, evaluation, costs, history, cache))
        overlays.setdefault(name, overlay)  # of the first fold run
        if cross_validated and name not in ensembles:
            unseen = run_dir_of(out, name, fold) / "evaluation_out_of_fold"
            evaluation, _ = evaluate_predictor(
                predictor, store, split.folds[fold][1], [], config.evaluation, unseen,
                progress=progress, reference=reference,
            )  # fmt: skip
            out_of_fold.append(run_result(name, fold, predictor, evaluation, {}, (), unseen))
    from partseg.report import headline_table

    with writing():
        report_dir = write_compare_report(
            config, out, scored, split, results, slices, overlays,
            trained_on=None if reference is None else store.url, notes=notes,
            out_of_fold=out_of_fold,
        )  # fmt: skip
    for note in notes:
        log(f"note: {note}")
    return CompareOutcome(report_dir, results, headline_table(results))


def _prepare(
    config: CompareConfig, out: Path, progress: bool, log: Callable[[str], None]
) -> tuple[str, Any | None, Any, list[str]]:
    """The compared store's URL (ingested, with the prior channels for a cascade's second
    stage), the reference store to score on (None: the store itself), the split (written to
    ``split.json``) and the notes for the report."""
    from partseg.store.zarrstore import open_store

    store_url = prepare_store(config, out, progress=progress)
    if config.prior:  # the cascade's second stage: the store plus the low-res prediction
        store_url = write_prior_store(
            config.prior["run"], config.prior["store"], store_url, out / "data" / "prior.zarr",
            batch_size=config.evaluation.batch_size, log=log,
        )  # fmt: skip
    store = open_store(store_url)
    reference_url = reference_store(config, out)
    reference = None if reference_url is None else open_store(reference_url)
    if reference is not None:
        check_reference(store, reference)
        log(f"test cases are scored on {reference_url} (predictions resampled to its grid)")
    split = make_split(store.case_ids, config)
    write_json(out / "split.json", dataclasses.asdict(split))
    notes = []
    if config.prior:
        leaked = leaked_test_cases(
            config.prior["run"], open_store(config.prior["store"]), split.test
        )
        notes += [prior_note(leaked)] if leaked else []
    return store_url, reference, split, notes


def check_reference(store: Any, reference: Any) -> None:
    """The reference store must hold the compared store's cases and classes."""
    missing = [c for c in store.case_ids if c not in reference]
    if missing or tuple(reference.classes) != tuple(store.classes):
        raise ConfigError(
            f"reference store {reference.url} must hold the cases and classes of {store.url}: "
            f"missing cases {missing[:5]}, classes {list(reference.classes)} vs "
            f"{list(store.classes)}; ingest both from the same source"
        )


def _predictors(
    config: CompareConfig, run_dirs: Mapping[tuple[str, int], Path]
) -> list[tuple[str, int, Predictor, dict, list]]:
    items = []
    folds = config.fold_indices
    for variant in config.variants:
        for k in folds:
            run_dir = run_dirs[(variant.name, k)]
            history = read_history(run_dir)
            predictor = model_predictor(variant.name, [run_dir], config.evaluation)
            items.append((variant.name, k, predictor, training_costs(run_dir, history), history))
    for ensemble in config.ensembles:
        members = [run_dirs[(m, k)] for m in ensemble.members for k in folds]
        if ensemble.best:
            members = sorted(members, key=best_value, reverse=True)[: ensemble.best]
        predictor = model_predictor(ensemble.name, members, config.evaluation)
        items.append((ensemble.name, 0, predictor, {}, []))
    for cascade in config.cascades:
        for k in folds:
            predictor = cascade_predictor(
                cascade, run_dirs[(cascade.coarse, k)], run_dirs[(cascade.fine, k)],
                config.evaluation,
            )  # fmt: skip
            items.append((cascade.name, k, predictor, {}, []))
    return items
