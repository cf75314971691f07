"""``partseg demo``: the whole pipeline on synthetic data, on a CPU, in minutes.

Realistic phantom BraTS-like cases (the MNI152 brain deformed per case with a glioma, at
3.75 mm; :mod:`partseg.phantom`) -> ingest into a zarr store -> train a 2D U-Net, a 3D
minicube U-Net without context and one with context (CPU-sized settings of the built-in recipe
``demo``, ``configs/demo.yaml`` in a checkout, found by :func:`partseg.recipes.recipe_path`) ->
stitched prediction of held-out cases -> evaluation -> report. Prints the Dice table and where
the report is. About 4 minutes on 2 CPU cores; ``--quick`` runs the same steps on tiny settings
in about a minute (57 s measured on 2 shared, busy CPU cores; 24 s of CPU time), for smoke
tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from partseg.cli.options import add_json, add_no_progress, add_overwrite
from partseg.cli.train import add_overrides

#: The built-in recipe the demo runs by default (``configs/demo.yaml``).
DEMO_RECIPE = "demo"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="phantoms -> store -> train 2D / 3D / 3D+context -> stitched predictions -> report",
        description="Run the whole pipeline on synthetic BraTS-like cases on the CPU: generate "
        "realistic phantoms (the MNI152 brain deformed per case, with a glioma) and ingest them, "
        "train three variants (2D U-Net, 3D minicubes without and with "
        "context), predict held-out cases by stitched minicubes, evaluate and write a report. "
        "About 4 minutes on 2 CPU cores; --quick takes about a minute. Rerun to resume.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: partseg-demo, or partseg-demo-quick with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny data and a few training steps: checks the pipeline, does not learn much "
        "(default: off)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the demo's compare config: a YAML file or a built-in recipe name "
        f"(default: the built-in recipe {DEMO_RECIPE}, configs/{DEMO_RECIPE}.yaml)",
    )
    add_overrides(
        parser, "overrides of the demo config such as base.train.epochs=4 (default: none)"
    )
    add_no_progress(parser)
    add_overwrite(parser, "what an earlier run left in the output folder (data, runs, report)")
    add_json(parser, "the results (per variant, class and region) and where the report is")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo, print the Dice table, the time taken and where the report is."""
    from partseg.cli.compare import execute, print_results
    from partseg.experiments import load_compare_config
    from partseg.recipes import recipe_path, resolve_config

    if args.config is None:
        path = recipe_path(DEMO_RECIPE)
    else:
        path = resolve_config(args.config, "demo config")
    config = load_compare_config(path, quick=args.quick, overrides=args.overrides)
    out = args.out or Path("partseg-demo-quick" if args.quick else "partseg-demo")
    outcome, seconds = execute(config, out, args)
    if args.json:
        print_results(outcome, seconds)
        return 0
    print()
    print("Dice on held-out phantom cases (stitched full-volume predictions):")
    print(outcome.table)
    report = outcome.report_dir / "report.md"
    print(f"\npartseg demo: done in {seconds / 60:.1f} min; report: {report}")
    return 0
