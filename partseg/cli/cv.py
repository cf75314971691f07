"""``partseg cv CONFIG --folds 5``: k-fold cross-validation, one fold after another.

CONFIG is a training config or a recipe with ``--variant NAME`` (see :mod:`partseg.cli.train`).

Each fold trains into ``DIR/fold_K`` (a normal run directory); the folds are drawn once and
stored as ``DIR/splits.json`` (and in every fold's directory). When all folds are done,
``DIR/cv_summary.json`` holds each fold's best validation metrics and their mean and standard
deviation across folds. Rerunning the same command completes an interrupted cross-validation:
finished folds (``summary.json`` present) are skipped, an interrupted fold resumes from its
``last.pt``; folds of another config are refused unless ``--overwrite`` retrains them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from partseg.atomic import write_json
from partseg.cli.options import int_range
from partseg.cli.train import (
    add_common_arguments,
    add_resume_or_overwrite,
    budget_overrides,
    command_log,
    fit_to_budget,
    load_run_config,
    prepare_run,
    train_overrides,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg cv``."""
    p = subparsers.add_parser(
        "cv",
        help="k-fold cross-validation: train every fold and summarise their validation metrics",
        description="Train the folds of a k-fold split one after another into DIR/fold_K and "
        "write the mean and std of their best validation metrics to DIR/cv_summary.json.",
    )
    add_common_arguments(p, "the cross-validation summary (cv_summary.json)")
    p.add_argument("--folds", type=int_range(2), default=5, help="number of folds k (default: 5)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: runs/<config name>[/<variant>]_cv)",
    )
    add_resume_or_overwrite(p, "every fold's run in --out")
    p.set_defaults(func=run)


def summarize_folds(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (population) over folds of every numeric ``val_*`` metric.

    Example:
        >>> summarize_folds([{"val_dice": 0.5}, {"val_dice": 0.7}])["val_dice"]["mean"]
        0.6
    """
    keys = dict.fromkeys(k for r in records for k in r if k.startswith("val_"))
    summary: dict[str, Any] = {}
    for key in keys:
        values = [float(r[key]) for r in records if isinstance(r.get(key), int | float)]
        if not values:
            continue
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        summary[key] = {"mean": round(mean, 12), "std": round(std, 12), "n": len(values)}
    return summary


def run(args: argparse.Namespace) -> int:
    from partseg.locking import acquire
    from partseg.store.zarrstore import open_store
    from partseg.train.distributed import init_distributed, launch, shutdown
    from partseg.train.splits import kfold_splits, write_splits
    from partseg.train.trainer import train

    base = train_overrides(
        args, budget_overrides(args.budget, [*args.overrides, f"data.folds={args.folds}"])
    )
    first, name = load_run_config(args, [*base, "data.fold=0"])
    if args.nproc:
        return launch(args.nproc, args.argv)
    out = args.out or Path("runs") / f"{name}_cv"
    ctx = init_distributed(first.train.device)
    say = command_log(args, ctx)
    lock = None
    try:
        if ctx.is_main:
            lock = acquire(out, "cv")  # one cross-validation per folder; folds lock their own
            store = open_store(first.data.store)
            splits = kfold_splits(store.case_ids, args.folds, first.data.split_seed)
            write_splits(out / "splits.json", splits)
        records = []
        for fold in range(args.folds):
            run_dir = out / f"fold_{fold}"
            summary_path = run_dir / "summary.json"
            config, _ = load_run_config(args, [*base, f"data.fold={fold}"])
            if args.gpu_mem:
                config = fit_to_budget(config, args.gpu_mem, ctx.device.type, say)
            started = (run_dir / "checkpoints" / "last.pt").is_file()
            state = prepare_run(run_dir, config, args, ctx, say, resume=args.resume and started)
            if state == "finished":
                say(f"fold {fold}: finished run found in {run_dir}, not retrained")
            else:
                train(config, run_dir, resume=state == "resume", dist=ctx, log=say)
            if ctx.is_main:
                summary = json.loads(summary_path.read_text())
                records.append({"fold": fold, **summary["best"].get("record", {})})
        result = {"folds": records, "summary": summarize_folds(records)}
        if ctx.is_main:  # written under the lock: a second cv cannot interleave its summary
            write_json(out / "cv_summary.json", result)
    finally:
        if lock is not None:
            lock.release()
        shutdown(ctx)
    if ctx.is_main:
        if args.json:
            print(json.dumps({"out": str(out), **result}, indent=2))
            return 0
        for key, stats in result["summary"].items():
            print(f"{key}: {stats['mean']:.4f} +- {stats['std']:.4f} over {stats['n']} folds")
        print(f"cross-validation summary: {out / 'cv_summary.json'}")
    return 0
