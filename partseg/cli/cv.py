"""``partseg cv CONFIG --folds 5``: k-fold cross-validation, one fold after another.

CONFIG is a training config or a recipe with ``--variant NAME`` (see :mod:`partseg.cli.train`).

Each fold trains into ``DIR/fold_K`` (a normal run directory); the folds are drawn once and
stored as ``DIR/splits.json`` (and in every fold's directory). When all folds are done,
``DIR/cv_summary.json`` holds each fold's best validation metrics and their mean and standard
deviation across folds. Rerunning the same command completes an interrupted cross-validation:
finished folds (``summary.json`` present) are skipped, an interrupted fold resumes from its
``last.pt``; folds of another config are refused unless ``--overwrite`` retrains them.

``--fold 0,2`` trains only those folds, one job per fold as nnU-Net runs them: jobs of different
folds may run at the same time (on different GPUs or machines sharing the folder), since the
folder's lock is then held only while ``splits.json`` and the summary are written, and each fold
holds its own run's lock. The summary covers the folds finished so far and lists the missing ones;
the last job to finish (or a rerun without ``--fold``) completes it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from partseg.atomic import write_json
from partseg.cli.options import fold_numbers, int_range
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

if TYPE_CHECKING:
    from partseg.config import ExperimentConfig


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
    p.add_argument(
        "--fold",
        type=fold_numbers,
        default=None,
        metavar="K[,K]",
        help="train only these folds (numbered from 0), one job per fold as nnU-Net runs them; "
        "jobs of different folds may run at once in the same --out; the summary covers the "
        "folds finished so far (default: every fold, one after another)",
    )
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
    from contextlib import AbstractContextManager, nullcontext

    from partseg.errors import ConfigError
    from partseg.locking import acquire, fold_job_lock
    from partseg.store.zarrstore import open_store
    from partseg.train.distributed import init_distributed, launch, shutdown
    from partseg.train.splits import kfold_splits, write_splits
    from partseg.train.trainer import train

    base = train_overrides(
        args, budget_overrides(args.budget, [*args.overrides, f"data.folds={args.folds}"])
    )
    first, name = load_run_config(args, [*base, "data.fold=0"])
    selected = list(range(args.folds)) if args.fold is None else sorted(set(args.fold))
    if selected[-1] >= args.folds:
        raise ConfigError(f"--fold {selected[-1]}: the {args.folds} folds are numbered 0 to "
                          f"{args.folds - 1}")  # fmt: skip
    if args.nproc:
        return launch(args.nproc, args.argv)
    out = args.out or Path("runs") / f"{name}_cv"
    ctx = init_distributed(first.train.device)
    say = command_log(args, ctx)

    def fold_config(fold: int, log: Callable[[str], None]) -> ExperimentConfig:
        config, _ = load_run_config(args, [*base, f"data.fold={fold}"])
        return fit_to_budget(config, args.gpu_mem, ctx.device.type, log) if args.gpu_mem else config

    def config_of(fold: int) -> dict[str, Any]:  # quietly: the planner's choice was logged
        return fold_config(fold, lambda _message: None).to_dict()

    whole = args.fold is None  # one cv holds the folder; fold jobs hold it only to write in it

    def writing() -> AbstractContextManager[object]:
        return nullcontext() if whole else fold_job_lock(out, "cv", say)

    # a whole cv checks every fold's config as it reaches it (prepare_run); a fold job checks
    # the folds it does not train, before training and again before summarising them
    check = None if whole or args.resume else config_of
    lock = None
    try:
        if ctx.is_main:
            lock = acquire(out, "cv") if whole else None
            with writing():
                store = open_store(first.data.store)
                splits = kfold_splits(store.case_ids, args.folds, first.data.split_seed)
                write_splits(out / "splits.json", splits)
                if check is not None:
                    others = [k for k in range(args.folds) if k not in selected]
                    refuse_other_configs(out, others, check)
        for fold in selected:
            run_dir = out / f"fold_{fold}"
            config = fold_config(fold, say)
            started = (run_dir / "checkpoints" / "last.pt").is_file()
            state = prepare_run(run_dir, config, args, ctx, say, resume=args.resume and started)
            if state == "finished":
                say(f"fold {fold}: finished run found in {run_dir}, not retrained")
            else:
                train(config, run_dir, resume=state == "resume", dist=ctx, log=say)
        result: dict[str, Any] = {}
        if ctx.is_main:  # written under the lock: a second cv cannot interleave its summary
            with writing():
                result = fold_results(out, args.folds, check)
                write_json(out / "cv_summary.json", result)
    finally:
        if lock is not None:
            lock.release()
        shutdown(ctx)
    if ctx.is_main:
        report(args, out, result)
    return 0


def fold_results(
    out: Path, folds: int, config_of: Callable[[int], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Each finished fold's best validation record, their mean and std, and the missing folds.

    Args:
        out: the cross-validation folder.
        folds: the number of folds k.
        config_of: the config (``to_dict()``) fold K must have been trained with; a finished
            fold of another config is refused rather than summarised with the others.

    Raises:
        ConfigError: a finished fold of another config.
    """
    finished = [k for k in range(folds) if (out / f"fold_{k}" / "summary.json").is_file()]
    if config_of is not None:
        refuse_other_configs(out, finished, config_of)
    records = []
    for fold in finished:
        summary = json.loads((out / f"fold_{fold}" / "summary.json").read_text())
        records.append({"fold": fold, **summary["best"].get("record", {})})
    missing = [k for k in range(folds) if k not in finished]
    return {"folds": records, "summary": summarize_folds(records), "missing": missing}


def refuse_other_configs(
    out: Path, folds: Iterable[int], config_of: Callable[[int], dict[str, Any]]
) -> None:
    """Refuse when one of these folds holds a run of another config than ``config_of(fold)``.

    Raises:
        ConfigError: naming the fold's folder, the keys that differ and what to do.
    """
    from partseg.errors import ConfigError
    from partseg.train.rundir import config_changes

    for fold in folds:
        run_dir = out / f"fold_{fold}"
        changed = config_changes(run_dir, config_of(fold)) if run_dir.is_dir() else []
        if changed:
            raise ConfigError(
                f"{run_dir} holds a fold of another config ({'; '.join(changed[:4])}): train it "
                f"again with --fold {fold} --overwrite, or choose another --out"
            )


def report(args: argparse.Namespace, out: Path, result: dict[str, Any]) -> None:
    """Print the summary (or its JSON) and what is left to train."""
    if args.json:
        print(json.dumps({"out": str(out), **result}, indent=2))
        return
    for key, stats in result["summary"].items():
        print(f"{key}: {stats['mean']:.4f} +- {stats['std']:.4f} over {stats['n']} folds")
    if result["missing"]:
        left = ",".join(str(k) for k in result["missing"])
        word = "fold" if len(result["missing"]) == 1 else "folds"
        print(f"{word} {left} of {args.folds} not trained yet: the same command with "
              f"--fold {left} (or without --fold) trains them")  # fmt: skip
    print(f"cross-validation summary: {out / 'cv_summary.json'}")
