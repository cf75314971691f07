"""``partseg evaluate PRED GT``: segmentation metrics per case, class and BraTS region.

A thin layer over :func:`partseg.evaluation.evaluate_folders`, which documents how cases are
found and matched (NIfTI files, folders, stores), how labels become class ids, and the seam
measures. This module parses the options, prints the table (the HD95 convention used, then Dice
and HD95 per case and target with the means, then the seam measures) or, with ``--json``, the
JSON, and writes ``--json-out`` (the full per-case metrics, summary and settings) and ``--csv``
(one row per case, section and target, then mean/std/median rows) atomically.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg evaluate``."""
    from partseg.cli.options import add_deprecated, add_json, value_class
    from partseg.metrics import DEFAULT_HD95, HD95_CONVENTIONS

    p = subparsers.add_parser(
        "evaluate",
        help="compare predicted and ground-truth segmentations: Dice, HD95, lesion detection...",
        description="Compute per-case metrics (Dice, precision, recall, specificity, F1, F2, "
        "HD, HD95, volumetric similarity, lesion detection) per class and per BraTS region, "
        "and optionally the seam measures of stitched probabilities; print a table and write "
        "JSON/CSV. PRED and GT are two NIfTI files, two folders of NIfTI files matched by case "
        "id (file name without .nii.gz and a _seg/_pred suffix), or partseg stores.",
    )
    p.add_argument("pred", metavar="PRED", help="predicted labels: NIfTI file, folder or store")
    p.add_argument("gt", metavar="GT", help="ground-truth labels: NIfTI file, folder or store")
    add_json(p, "all metrics", legacy_file=True)
    p.add_argument(
        "--csv", metavar="FILE", default=None, help="write a CSV table to FILE (default: none)"
    )
    p.add_argument(
        "--classes",
        nargs="+",
        default=None,
        metavar="NAME",
        help="class names by class id, background first (default: the store's classes, the "
        "BraTS names for BraTS labels, else background, class_1, class_2, ...)",
    )
    p.add_argument(
        "--regions",
        choices=("auto", "brats", "none"),
        default="auto",
        help="evaluate the BraTS regions whole_tumor {1,2,3}, tumor_core {1,3}, "
        "enhancing_tumor {3} (class ids); auto = when the labels are BraTS labels "
        "(default: auto)",
    )
    p.add_argument(
        "--label-map",
        nargs="+",
        type=value_class,
        default=None,
        metavar="VALUE=ID",
        help="original label value -> class id for NIfTI files, e.g. 0=0 1=1 2=2 4=3 "
        "(default: the store's mapping, else BraTS 4->3 when detected, else identity)",
    )
    add_deprecated(p, "--labels-map", "--label-map 0=0 1=1 2=2 4=3", dest="label_map",
                   nargs="+", type=value_class)  # fmt: skip
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="skip cases present on one side only, with a warning (default: error)",
    )
    p.add_argument(
        "--hd95",
        choices=HD95_CONVENTIONS.names(),
        default=DEFAULT_HD95,
        help="HD95 convention: max_directed = the larger of the two directed 95th percentiles "
        "(MONAI, the ADAM challenge), pooled = the 95th percentile of both directions' "
        f"distances pooled (MedPy) (default: {DEFAULT_HD95})",
    )
    p.add_argument(
        "--seams",
        metavar="PROB_DIR",
        default=None,
        help="folder of <case>_probabilities.zarr from partseg predict --save-probabilities "
        "--probabilities-format zarr: adds each case's seam_index (mean |delta p| across core "
        "faces / between interior neighbours; 1.0 = no seam) (default: no seam measures)",
    )
    p.add_argument(
        "--seam-reference",
        metavar="PROB_DIR",
        default=None,
        help="the same folder from partseg predict --partition none (whole-volume reference): "
        "adds max_abs, mean_abs and changed_label_share of the --seams probabilities "
        "(default: none)",
    )
    p.set_defaults(func=run)


def print_warning(message: str) -> None:
    """Print a warning of the evaluation on stderr."""
    print(f"partseg evaluate: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Evaluate PRED against GT; print the table or JSON; write JSON/CSV. Returns 0."""
    import json

    from partseg.atomic import write_text
    from partseg.cli.options import label_map_text
    from partseg.evaluation import csv_rows, evaluate_folders, format_table, to_csv

    report = evaluate_folders(
        args.pred,
        args.gt,
        classes=args.classes,
        regions=args.regions,
        labels_map=label_map_text(args.label_map),
        allow_missing=args.allow_missing,
        seams=args.seams,
        seam_reference=args.seam_reference,
        warn=print_warning,
        hd95=args.hd95,
    )
    cases, summary = report["cases"], report["summary"]
    text = json.dumps(report, indent=2)
    if args.json_out:
        write_text(args.json_out, text + "\n")
    if args.csv:
        write_text(args.csv, to_csv(*csv_rows(cases, summary)))
    if args.json:
        print(text)
    else:
        print(f"HD95 in mm, {args.hd95} convention (--hd95)")
        print(format_table(cases, summary))
    return 0
