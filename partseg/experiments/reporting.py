"""The comparison report: run results (scores and costs), tables and figures."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partseg.experiments.config import CompareConfig
from partseg.experiments.data import Split
from partseg.experiments.evaluate import OverlaySlice, scoring_of
from partseg.experiments.predictors import Predictor
from partseg.report import METRIC_ORDER

#: Metrics kept in the comparison tables (the per-case files keep every metric): the table
#: order of :data:`partseg.report.METRIC_ORDER` without F1, which equals Dice on binary masks.
REPORT_METRICS = tuple(m for m in METRIC_ORDER if m != "f1")


def scores_of(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Target -> metric -> mean over cases, for the metrics of :data:`REPORT_METRICS`."""
    scores: dict[str, dict[str, float]] = {}
    for section in ("classes", "regions"):
        for target, stats in summary.get(section, {}).items():
            scores[target] = {
                m: float(stats[m]["mean"]) if stats[m].get("n") else None
                for m in REPORT_METRICS
                if m in stats
            }
    return scores


def case_scores_of(cases: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Case -> target -> metric for the metrics of :data:`REPORT_METRICS` (non-finite: None).

    Example:
        >>> case_scores_of({"c1": {"classes": {"tumor": {"dice": 0.5, "tp": 3}},
        ...                        "regions": {"WT": {"dice": float("nan")}}}})
        {'c1': {'tumor': {'dice': 0.5}, 'WT': {'dice': None}}}
    """
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for case_id, result in cases.items():
        targets = out.setdefault(case_id, {})
        for section in ("classes", "regions"):
            for target, metrics in result.get(section, {}).items():
                targets[target] = {
                    m: _finite_or_none(metrics[m]) for m in REPORT_METRICS if m in metrics
                }
    return out


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def run_result(
    name: str,
    fold: int,
    predictor: Predictor,
    evaluation: Mapping[str, Any],
    costs: Mapping[str, float],
    history: Sequence[Mapping[str, Any]],
    cache: Path,
) -> Any:
    """The report row of one scored predictor: its scores, costs, confusion matrix, history."""
    from partseg.report import RunResult

    summary = evaluation["summary"]
    matrix = summary.get("confusion_matrix")
    all_costs = {
        "parameters": predictor.parameters,
        **costs,
        "predict_seconds": evaluation.get("predict_seconds"),
        "seam_index": evaluation.get("seam_index"),
        "air_voxels": evaluation.get("air_voxels"),
        "masked_voxels": evaluation.get("masked_voxels"),
    }
    return RunResult(
        variant=name,
        fold=fold,
        scores=scores_of(summary),
        costs=all_costs,
        confusion=None if matrix is None else tuple(tuple(int(v) for v in r) for r in matrix),
        history=tuple(history),
        run_dir=str(cache.parent),
        cases=case_scores_of(evaluation.get("cases", {})),
    )


def class_counts(store: Any, case_ids: Sequence[str]) -> list[int]:
    """Voxels per class summed over ``case_ids`` (from the store's recorded counts)."""
    totals = [0] * len(store.classes)
    for case_id in case_ids:
        for cls, count in store[case_id].voxel_counts.items():
            totals[int(cls)] += int(count)
    return totals


def write_compare_report(
    config: CompareConfig,
    out: Path,
    store: Any,
    split: Split,
    results: Sequence[Any],
    slices: Sequence[OverlaySlice],
    overlays: Mapping[str, Sequence[np.ndarray]],
    *,
    trained_on: str | None = None,
    notes: Sequence[str] = (),
    out_of_fold: Sequence[Any] = (),
) -> Path:
    """Tables and figures of a comparison into ``out/report``.

    ``store`` is the store the test cases were scored on; ``trained_on`` the store the variants
    trained on when that differs (a resampled store scored on its reference); ``out_of_fold``
    the results of a K-fold comparison's fold models on their own validation cases.
    """
    from partseg import report as rep
    from partseg.geometry import Box

    report_dir = out / "report"
    classes = tuple(store.classes)
    figures: dict[str, str] = {}
    histories = {}
    for result in results:
        if result.history:
            histories.setdefault(result.variant, []).append(list(result.history))
    if histories:
        rep.plot_loss_curves(histories, report_dir / "loss_curves.png")
        figures["Training loss and validation Dice per epoch"] = "loss_curves.png"
    train_ids = sorted({c for train, val in split.folds for c in (*train, *val)})
    rep.plot_class_distribution(
        {"train": class_counts(store, train_ids), "test": class_counts(store, split.test)},
        classes,
        report_dir / "class_distribution.png",
    )
    figures["Class distribution of the training and test cases"] = "class_distribution.png"
    matrices: dict[str, np.ndarray] = {}
    for r in results:  # of the first fold run
        if r.confusion:
            matrices.setdefault(r.variant, np.asarray(r.confusion))
    if matrices:
        rep.plot_confusion_matrices(matrices, classes, report_dir / "confusion.png")
        figures["Confusion matrices (rows: ground truth, normalised)"] = "confusion.png"
    per_case = rep.case_scores(results)
    if any(per_case.values()):
        rep.plot_case_distribution(per_case, report_dir / "case_dice.png")
        figures["Dice per test case (box: quartiles over cases; dots: cases, mean over folds; "
                "lines join a case across variants)"] = "case_dice.png"  # fmt: skip
    unseen = rep.case_scores(out_of_fold)
    if any(unseen.values()):
        rep.plot_case_distribution(unseen, report_dir / "case_dice_out_of_fold.png")
        figures["Dice per training case, out of fold (each scored by the fold model that did not "
                "train on it)"] = "case_dice_out_of_fold.png"  # fmt: skip
    if slices and overlays:
        images, truths = [], []
        show = _display_channel(store)
        for s in slices:
            case = store[s.case_id]
            box = Box((s.z, 0, 0), (1, *case.shape[1:]))
            image, label = case.read(box)
            images.append(image[show, 0])
            truths.append(label[0])
        columns = {"ground truth": truths, **{k: list(v) for k, v in overlays.items()}}
        titles = [f"{s.case_id} z={s.z}" for s in slices]
        rep.plot_overlays(images, columns, classes, report_dir / "overlays.png", row_titles=titles)
        figures["Predictions on the same test slices"] = "overlays.png"
    folds = f"{len(split.folds)} fold(s)"
    if config.only_folds:
        folds = f"fold(s) {', '.join(map(str, config.only_folds))} of {len(split.folds)}"
    settings = {
        "store": store.url if trained_on is None else f"{trained_on} (scored on {store.url})",
        "classes": ", ".join(classes),
        "test cases": f"{len(split.test)} held out ({', '.join(split.test)})",
        "training": f"{folds}; {len(split.folds[0][0])} training / "
        f"{len(split.folds[0][1])} validation cases per fold",
        "variants": "; ".join(
            f"{v.name}: {v.description or _describe(v.overrides)}" for v in config.variants
        ),
    }
    settings.update(budget_settings(results))
    for e in config.ensembles:
        settings[f"ensemble {e.name}"] = e.description or f"mean of {', '.join(e.members)}"
    if config.prior:
        settings["prior"] = (
            f"cascade second stage: inputs + the prediction of {config.prior['run']} on "
            f"{config.prior['store']}, upsampled (channels {', '.join(store.channels)})"
        )
    for c in config.cascades:
        settings[f"cascade {c.name}"] = c.description or f"{c.coarse} -> {c.voi}^3 VOIs -> {c.fine}"
    cleaned = ""
    if config.evaluation.min_component_size > 1:
        cleaned = f", components < {config.evaluation.min_component_size} voxels removed"
    if config.evaluation.nonzero_mask:
        cleaned += ", foreground outside the head (0 in every channel) set to background"
    spec = config.evaluation
    mode = f"prediction mode {spec.partition}"
    mode += f", blend={spec.blend}" if spec.partition == "grid" else ""
    notes = [
        f"Scores are means over the test cases (whole-volume predictions, {mode}{cleaned}). "
        "Per-case values: `runs/<variant>/fold<k>/evaluation/evaluation.json`"
        + (", out of fold: `.../evaluation_out_of_fold/evaluation.json`." if out_of_fold else "."),
        *notes,
    ]
    rep.write_report(report_dir, results, title=config.title, settings=settings,
                     figures=figures, notes=notes,
                     hd95_convention=config.evaluation.hd95_convention,
                     out_of_fold=out_of_fold, scoring=scoring_of(config.evaluation))  # fmt: skip
    return report_dir


def budget_settings(results: Sequence[Any]) -> dict[str, str]:
    """The report's ``budget`` and ``hardware`` lines, from the runs' ``budget.json``.

    Without any budget only the hardware of this process is stated (it scored the runs).
    """
    from partseg.durations import format_duration
    from partseg.experiments.training import read_budget
    from partseg.train.budget import hardware

    plans = [p for p in (read_budget(Path(r.run_dir)) for r in results if r.run_dir) if p]
    settings = {}
    if plans:
        budgets = sorted({format_duration(float(p["budget_s"])) for p in plans})
        settings["budget"] = (
            f"{' / '.join(budgets)} of training steps per variant and fold: each run measured "
            "its step time (a probe, then its first epoch) and trained for the steps that fill "
            "it (costs: step_seconds, steps, train_seconds); validation is not counted "
            "(val_seconds)"
        )
        machines = [p.get("hardware", {}) for p in plans]
    else:
        machines = [hardware("cpu")]
    described = dict.fromkeys(json.dumps(m, sort_keys=True) for m in machines)
    settings["hardware"] = "; ".join(_describe_hardware(json.loads(m)) for m in described)
    return settings


def _describe_hardware(info: Mapping[str, Any]) -> str:
    """``AMD EPYC, 2 cores (2 CPUs available, 2 torch threads), no GPU``."""
    cores = info.get("physical_cores")
    text = f"{info.get('cpu') or 'unknown CPU'}"
    text += f", {cores} cores" if cores else ""
    text += (
        f" ({info.get('cpus_available')} CPUs available, {info.get('torch_threads')} torch "
        f"threads), {info.get('gpu') or 'no GPU'}"
    )
    return text


def _display_channel(store: Any) -> int:
    for name in ("flair", "t1ce", "tof"):
        if name in store.channels:
            return list(store.channels).index(name)
    return 0


def _describe(overrides: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the base config"
