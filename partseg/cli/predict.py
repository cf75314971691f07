"""``partseg predict MODEL... --store STORE | --input DIR --out OUT``: segment whole cases.

Parses the options into :class:`~partseg.infer.settings.PredictSettings` and
:class:`~partseg.infer.outputs.OutputSettings` and calls the library
(:class:`~partseg.infer.pipeline.CasePredictor`, :mod:`partseg.infer.runs`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg predict``."""
    from partseg.cli.options import (
        add_amp,
        add_deprecated,
        add_device,
        add_json,
        add_no_progress,
        add_overwrite,
        fold_numbers,
        nonnegative_int,
        positive_int,
    )
    from partseg.infer.blends import BLENDS
    from partseg.infer.modes import MODES
    from partseg.infer.settings import PredictSettings

    p = subparsers.add_parser(
        "predict",
        help="segment cases by minicubes with one model or an ensemble, stitched seam-free",
        description="Run each case through the model(s) (the training minicube grid, stitched "
        "with each output chunk written once, or the whole volume), post-process and export "
        "labels in the original geometry and label values as OUT/<case>.nii.gz. A rerun skips "
        "the cases already predicted with the same models and settings.",
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="run directory (uses checkpoints/best.pt, else last.pt), checkpoint file, or a "
        "cross-validation folder (partseg cv --out DIR: its folds' runs, see --fold); "
        "several: an ensemble averaging their probabilities",
    )
    p.add_argument(
        "--fold",
        dest="folds",
        type=fold_numbers,
        default=None,
        metavar="K[,K]",
        help="folds of a cross-validation MODEL folder to ensemble, e.g. 0,1,2, as nnU-Net's -f "
        "(default: every fold)",
    )
    add_deprecated(p, "--folds", "--fold K[,K]", dest="folds", nargs="+", type=nonnegative_int)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", help="partseg store (path or fsspec URL) holding the cases")
    source.add_argument(
        "-i",
        "--input",
        metavar="NIFTI_DIR",
        help="raw folder (BraTS 2017-2023, MSD / nnU-Net, or a flat nnU-Net imagesTs folder of "
        "<id>_0000.nii.gz ... files, whose channels are taken in the model's order); ingested "
        "into a temporary store in OUT first, with the ingest settings the model was trained "
        "with; channel names match the model's by alias (t1 = t1n, ...)",
    )
    p.add_argument("-o", "--out", required=True, help="output folder, created if missing")
    p.add_argument(
        "--cases", nargs="+", default=None, metavar="ID", help="case ids (default: every case)"
    )
    p.add_argument(
        "--partition",
        choices=MODES.names(),
        default=PredictSettings.mode,
        help="; ".join(f"{e.name}: {e.help}" for e in MODES.entries()) + " (default: exact)",
    )
    p.add_argument(
        "--margin",
        default=None,
        help="grid: context margin per side in voxels, or 'exact' (half the receptive field, a "
        "multiple of the stride: crop stitching then equals --partition none away from the "
        "volume border) (default: the trained margin)",
    )
    p.add_argument(
        "--blend",
        choices=BLENDS.names(),
        default="crop",
        help="grid: "
        + "; ".join(f"{e.name}: {e.help}" for e in BLENDS.entries())
        + " (default: crop)",
    )
    p.add_argument(
        "--overlap",
        default=None,
        metavar="F|N",
        help="blends: how much neighbouring predicted regions overlap, as a fraction of the "
        "core (0.5: half a core) or even whole voxels (16); the network reads that region plus "
        "the margin, so blends work with --margin 0 (default: 0.5 for blends, none for crop)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time mirroring, nnU-Net's default: average the logits of all 8 flips of the "
        "three axes (2D models: the 4 of the slice plane), in every --partition mode; 8x the "
        "time (default: off)",
    )
    p.add_argument(
        "--min-component-size",
        type=int,
        default=0,
        metavar="N",
        help="remove connected components smaller than N voxels, per class (default: 0, off)",
    )
    p.add_argument(
        "--keep-largest",
        action="store_true",
        help="keep only the largest connected foreground component (default: off)",
    )
    p.add_argument(
        "--nonzero-mask",
        action="store_true",
        help="set predictions outside the head to background: the voxels zero in every input "
        "channel (a zscore-nonzero store keeps the air at 0), enclosed holes filled "
        "(default: off)",
    )
    p.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write the class probabilities (default: off)",
    )
    p.add_argument(
        "--probabilities-format",
        choices=("nifti", "zarr"),
        default=None,
        help="nifti: OUT/<case>_probabilities.nii.gz in the original geometry; zarr: "
        "OUT/<case>_probabilities.zarr float16 (K, Z, Y, X) over the stored case, chunk = core, "
        "streamed to disk; giving it implies --save-probabilities (default: nifti)",
    )
    p.add_argument(
        "--export",
        choices=("nifti", "none"),
        default="nifti",
        help="label export format; none writes no label file (default: nifti)",
    )
    p.add_argument(
        "--batch", type=positive_int, default=2, help="minicubes per forward pass (default: 2)"
    )
    add_device(p)
    add_amp(p, default="off", note="; off keeps the probabilities exact to float rounding")
    add_overwrite(p, "every case's outputs in OUT (also those of other models or settings)")
    add_no_progress(p)
    add_json(p, "what was predicted (cases written, skipped, outputs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict every requested case; returns 0 (errors raise PartsegError -> exit 2)."""
    from partseg.checkpoint import expand_models
    from partseg.infer.blends import parse_overlap
    from partseg.infer.outputs import OutputSettings
    from partseg.infer.partitions import parse_margin
    from partseg.infer.pipeline import CasePredictor
    from partseg.infer.runs import predict_input, predict_store
    from partseg.infer.settings import PredictSettings
    from partseg.locking import run_lock

    settings = PredictSettings(
        mode=args.partition,
        margin=parse_margin(args.margin),
        blend=args.blend,
        overlap=parse_overlap(args.overlap),
        tta=args.tta,
        precision=args.amp,
        device=args.device,
        batch_size=args.batch,
        min_component_size=args.min_component_size,
        keep_largest=args.keep_largest,
        nonzero_mask=args.nonzero_mask,
    )
    outputs = OutputSettings(
        labels=args.export,
        probabilities=args.probabilities_format or ("nifti" if args.save_probabilities else None),
    )
    models = expand_models(args.models, args.folds)
    predictor = CasePredictor.from_checkpoints(models, settings, log=_note)
    out = Path(args.out)
    log = _note if args.json else print
    common = {"cases": args.cases, "overwrite": args.overwrite, "log": log,
              "progress": not args.no_progress}  # fmt: skip
    with run_lock(out, "predict"):  # one prediction per output folder
        if args.store is not None:
            report = predict_store(predictor, args.store, out, outputs, **common)
        else:
            report = predict_input(predictor, args.input, out, outputs, **common)
    if args.json:
        print(json.dumps({"out": str(out), **dataclasses.asdict(report)}, indent=2))
    return 0


def _note(message: str) -> None:
    print(f"partseg predict: {message}", file=sys.stderr)
