"""``partseg compare CONFIG``: train variants side by side and write one report.

The config is a compare config (see :mod:`partseg.experiments`): a base experiment, a list of
variants (name + dotted overrides), optional ensembles and cascades; ``--variants a,b`` runs a
subset. Every variant trains on the same store, split, seeds and budget (``--budget 60m``: the
same wall time of training steps, each variant's step count set from its measured step time);
``--folds K`` trains K cross-validation folds of each (``--fold 1``: only that one, a job per
fold; a rerun without it resumes them all). The held-out test cases are predicted and
scored; ``OUT/report/`` receives ``report.md``, ``results.csv``, ``results.json`` (mean ± sd over
folds, paired Wilcoxon tests over the test cases, budget, steps and hardware) and the plots.
Rerunning the same command resumes: finished runs are neither retrained nor re-scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from partseg.cli.options import add_json, add_no_progress, add_overwrite, fold_numbers, int_range
from partseg.cli.train import add_budget, add_overrides


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg compare``."""
    parser = subparsers.add_parser(
        "compare",
        help="train several variants on the same data and split, and report them side by side",
        description="Train every variant of a compare config (configs/compare_brats.yaml, the "
        "recipes in configs/) on the same store, split, seeds and budget (--budget 60m: the same "
        "wall time of training steps each), score them on the same held-out cases, and write "
        "OUT/report/{report.md,results.csv,results.json,*.png}. "
        "Rerun the same command to resume: finished runs are not retrained.",
    )
    parser.add_argument(
        "config",
        metavar="CONFIG",
        type=Path,
        help="compare config YAML, or the name of a built-in recipe, e.g. brats_3d",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: compare-<CONFIG name>, or compare-<CONFIG name>-quick "
        "with --quick, in the current folder)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="apply the config's `quick:` overrides: tiny data and a few steps, to check a "
        "recipe end to end in seconds (default: off)",
    )
    parser.add_argument(
        "--store",
        default=None,
        help="an ingested store (path or URL) to use instead of the config's store or phantom "
        "data (default: the config's)",
    )
    parser.add_argument(
        "--variants",
        default=None,
        metavar="A,B",
        help="run only these variants (comma-separated); naming an ensemble or cascade runs "
        "it with its members; ensembles and cascades that need an unselected variant are left "
        "out with a note (default: every variant)",
    )
    add_budget(parser)
    parser.add_argument(
        "--folds",
        type=int_range(2),
        default=None,
        metavar="K",
        help="train every variant on K cross-validation folds of the non-test cases; the "
        "report gives mean ± sd over folds and paired tests over the test cases (default: the "
        "config's folds, else one train/validation split)",
    )
    parser.add_argument(
        "--fold",
        type=fold_numbers,
        default=None,
        metavar="K[,K]",
        help="with --folds: train and score only these folds (numbered from 0), one job per "
        "fold as nnU-Net runs them; rerun without --fold in the same --out to resume them and "
        "report over every fold (ensembles, which pool every fold, wait for that) (default: "
        "every fold)",
    )
    add_overrides(
        parser,
        "compare-config overrides such as base.train.epochs=5 evaluation.blend=gaussian or "
        "variants.1.overrides.model.base_width=8 (merged into that variant's model section) "
        "(default: none)",
    )
    add_no_progress(parser)
    add_overwrite(parser, "what an earlier run left in the output folder (data, runs, report)")
    add_json(parser, "the results (per variant, class and region) and where the report is")
    parser.set_defaults(func=run)


#: What a comparison writes into its output folder (``--overwrite`` removes these only).
COMPARE_OUTPUTS = ("data", "runs", "report", "split.json")


def execute(config: Any, out: Path, args: argparse.Namespace) -> tuple[Any, float]:
    """Run a comparison as ``compare`` and ``demo`` do; returns (outcome, seconds).

    ``--overwrite`` first removes an earlier comparison's outputs (holding the folder's lock);
    with ``--json`` the log lines go to stderr, so stdout holds the JSON only.
    """
    from partseg.experiments import run_compare
    from partseg.train.rundir import clear_outputs

    log = _stderr if args.json else print
    if args.overwrite and clear_outputs(out, COMPARE_OUTPUTS, args.command):
        log(f"--overwrite: removed the earlier outputs in {out}")
    start = time.perf_counter()
    outcome = run_compare(config, out, progress=not args.no_progress, log=log)
    return outcome, time.perf_counter() - start


def print_results(outcome: Any, seconds: float) -> None:
    """``--json``: the report's ``results.json``, where the report is and the time taken."""
    results = json.loads((outcome.report_dir / "results.json").read_text())
    report = outcome.report_dir / "report.md"
    print(json.dumps({"report": str(report), "seconds": round(seconds, 1), **results}, indent=2))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_out(config: Path, *, quick: bool) -> Path:
    """``compare-<config stem>``, with ``-quick`` for a ``--quick`` run (never the real run's).

    Example:
        >>> default_out(Path("configs/brats_3d.yaml"), quick=True).name
        'compare-brats_3d-quick'
    """
    return Path(f"compare-{config.stem}{'-quick' if quick else ''}")


def run(args: argparse.Namespace) -> int:
    """Run the comparison and print the Dice table and where the report is."""
    from partseg.experiments import load_compare_config
    from partseg.experiments.config import select_folds, select_variants
    from partseg.recipes import resolve_config

    args.config = resolve_config(args.config, "compare config")
    overrides = list(args.overrides)
    if args.store:
        overrides.append(f"store={args.store}")
    if args.budget:
        overrides.append(f"budget={args.budget}")
    if args.folds:
        overrides.append(f"folds={args.folds}")
    config = load_compare_config(args.config, quick=args.quick, overrides=overrides)
    notes: list[str] = []
    if args.variants:
        names = [n.strip() for n in args.variants.split(",") if n.strip()]
        config, notes = select_variants(config, names)
    if args.fold is not None:
        config, more = select_folds(config, args.fold)
        notes += more
    for note in notes:
        print(f"partseg compare: note: {note}", file=sys.stderr)
    out = args.out or default_out(args.config, quick=args.quick)
    outcome, seconds = execute(config, out, args)
    if args.json:
        print_results(outcome, seconds)
        return 0
    print()
    print(outcome.table)
    print(
        f"\npartseg compare: {len(config.names)} variant(s) in {seconds:.0f} s; report: "
        f"{outcome.report_dir / 'report.md'}"
    )
    return 0
