"""``partseg evaluate PRED GT`` (or ``--pred PRED --gt GT``): metrics per case, class and region.

A thin layer over :func:`partseg.evaluation.evaluate_folders`, which documents how cases are
found and matched (NIfTI files, folders in every layout ingest knows, stores), how labels become
class ids (the ground truth's convention; a prediction with other values is refused), the
order check and the seam measures. This module parses the options, prints the table (the label
convention and the HD95 convention used, then Dice and HD95 per case and target with the
means, then the seam measures) or the JSON, and writes ``--json`` (the full per-case metrics,
summary and settings) and ``--csv`` (one row per case, section and target, then
mean/std/median rows) atomically.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg evaluate``."""
    from partseg.cli.options import add_deprecated, add_json, value_class
    from partseg.evaluation.lesionwise import CONFIGS as LESIONWISE_CONFIGS
    from partseg.metrics import DEFAULT_HD95, HD95_CONVENTIONS

    p = subparsers.add_parser(
        "evaluate",
        help="compare predicted and ground-truth segmentations: Dice, HD95, lesion detection...",
        description="Compute per-case metrics (Dice, precision, recall, specificity, F1, F2, "
        "HD, HD95, volumetric similarity, lesion detection) per class and per BraTS region, "
        "and optionally the seam measures of stitched probabilities; print a table and write "
        "JSON/CSV. PRED (predictions) comes first, then GT (ground truth); nnU-Net's "
        "nnUNetv2_evaluate_folder takes GT first, so name them to be sure: --pred PRED --gt GT. "
        "Each is a NIfTI file, a folder (BraTS 2017-2023 and MSD / nnU-Net raw datasets, their "
        "labelsTr, or folders of <id>.nii.gz, matched by case id: the file name without "
        ".nii.gz and a _seg/-seg/_pred suffix) or a partseg store. An order that is obviously "
        "swapped (PRED a raw dataset with scans, GT a prediction folder) is refused.",
    )
    p.add_argument(
        "pred_path",
        nargs="?",
        metavar="PRED",
        help="predicted labels: NIfTI file, folder or store (or --pred)",
    )
    p.add_argument(
        "gt_path",
        nargs="?",
        metavar="GT",
        help="ground-truth labels: NIfTI file, folder or store (or --gt)",
    )
    p.add_argument("--pred", default=None, help="predicted labels: NIfTI file, folder or store")
    p.add_argument("--gt", default=None, help="ground-truth labels: NIfTI file, folder or store")
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
        "(default: the ground truth's convention: its BraTS edition (2017-2021: 4->3, 2023: "
        "identity), dataset.json or store; else BraTS 4->3 when detected, else identity)",
    )
    add_deprecated(p, "--labels-map", "--label-map 0=0 1=1 2=2 4=3", dest="label_map",
                   nargs="+", type=value_class)  # fmt: skip
    p.add_argument(
        "--pred-label-map",
        nargs="+",
        type=value_class,
        default=None,
        metavar="VALUE=ID",
        help="the same for the prediction's NIfTI files when they use other values than the "
        "ground truth, e.g. 0=0 1=1 2=2 4=3 for predictions with enhancing tumour = 4 against "
        "BraTS 2023 ground truth (default: as the ground truth; other values are an error)",
    )
    add_deprecated(p, "--pred-labels-map", "--pred-label-map 0=0 1=1 2=2 4=3",
                   dest="pred_label_map", nargs="+", type=value_class)  # fmt: skip
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
        "--brats-lesionwise",
        action="store_true",
        help="add the BraTS lesion-wise metrics (lesion-wise Dice, HD95, NSD and detection "
        "counts per region wt/tc/et, as ranked since BraTS 2023), computed by the official "
        "BraTS evaluation package; needs pip install 'partseg[brats]' (default: off)",
    )
    p.add_argument(
        "--brats-config",
        choices=LESIONWISE_CONFIGS,
        default=LESIONWISE_CONFIGS[0],
        help="the official package's config for --brats-lesionwise: gli (glioma), mets, GoAT, "
        f"MenPre (default: {LESIONWISE_CONFIGS[0]})",
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


def sides(args: argparse.Namespace) -> tuple[str, str]:
    """PRED and GT from ``PRED GT`` or ``--pred PRED --gt GT`` (one form, both sides).

    Raises:
        ConfigError: a side missing or given twice.
    """
    from partseg.errors import ConfigError

    positional = [v for v in (args.pred_path, args.gt_path) if v is not None]
    named = [v for v in (args.pred, args.gt) if v is not None]
    if positional and named:
        raise ConfigError(
            "give PRED and GT either as two paths (PRED GT) or as --pred PRED --gt GT, not both"
        )
    if len(positional + named) != 2:
        raise ConfigError(
            "give the prediction and the ground truth: partseg evaluate PRED GT, or "
            "partseg evaluate --pred PRED --gt GT"
        )
    return (args.pred, args.gt) if named else (args.pred_path, args.gt_path)


def run(args: argparse.Namespace) -> int:
    """Evaluate PRED against GT; print the table or JSON; write JSON/CSV. Returns 0."""
    import json

    from partseg.atomic import write_text
    from partseg.cli.options import label_map_text
    from partseg.evaluation import csv_rows, evaluate_folders, format_table, to_csv

    pred, gt = sides(args)
    report = evaluate_folders(
        pred,
        gt,
        classes=args.classes,
        regions=args.regions,
        labels_map=label_map_text(args.label_map),
        pred_labels_map=label_map_text(args.pred_label_map),
        allow_missing=args.allow_missing,
        seams=args.seams,
        seam_reference=args.seam_reference,
        warn=print_warning,
        hd95=args.hd95,
        brats_lesionwise=args.brats_config if args.brats_lesionwise else None,
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
        print(f"labels: {report['label_convention']}")
        print(f"HD95 in mm, {args.hd95} convention (--hd95)")
        official = report["brats_lesionwise"]
        if official is not None:
            print(
                f"lesion-wise: the official BraTS evaluation, brats-evaluation "
                f"{official['brats-evaluation']}, panoptica {official['panoptica']}, config "
                f"{official['config']}"
            )
        print(format_table(cases, summary))
    return 0
