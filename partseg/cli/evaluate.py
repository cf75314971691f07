"""``partseg evaluate PRED GT``: segmentation metrics per case, class and BraTS region.

PRED and GT are each one of:

* a NIfTI file (``.nii`` / ``.nii.gz``): both must then be files, and they form one case;
* a folder of NIfTI files: the files directly inside, or, when there are none, the files named
  ``*_seg.nii[.gz]`` / ``*_pred.nii[.gz]`` anywhere below (the BraTS layout of one folder per
  case);
* a partseg store (``partseg.store.open_store``), whose label arrays hold contiguous class ids.

**Case ids.** A NIfTI file's case id is its name without ``.nii.gz`` / ``.nii`` and then
without one trailing ``_seg`` or ``_pred``: ``BraTS20_Training_001_seg.nii.gz`` and
``BraTS20_Training_001.nii.gz`` are both case ``BraTS20_Training_001``. Store cases keep their
ids. Cases found on one side only are an error listing them, or, with ``--allow-missing``, a
warning and are skipped.

**Labels.** NIfTI files hold original label values; they are turned into contiguous class ids
by, in order: ``--labels-map`` (``0:0,1:1,2:2,4:3``); the label mapping of a store on the other
side; otherwise automatically: BraTS values ({0, 1, 2, 4} with 4 present in some case) map
4 -> 3, anything else is taken as class ids as they are. A dataset mixing label 4 with labels
outside {0, 1, 2, 4} is an error that asks for ``--labels-map``.

**Spacing** comes from the GT (NIfTI pixdim, reordered to (Z, Y, X), or the store case).

Outputs: a table of Dice and HD95 per case and target with the means (stdout), ``--json``
(the full per-case metrics, summary and settings) and ``--csv`` (one row per case and target,
then mean/std/median rows), both written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partseg.errors import ConfigError, InputError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ID_SUFFIXES = ("_seg", "_pred")
TABLE_METRICS = ("dice", "hd95")
CSV_SUMMARY_STATS = ("mean", "std", "median")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        help="compare predicted and ground-truth segmentations: Dice, HD95, lesion detection...",
        description="Compute per-case metrics (Dice, precision, recall, specificity, F1, F2, "
        "HD, HD95, volumetric similarity, lesion detection) per class and per BraTS region, "
        "print a table and write JSON/CSV. PRED and GT are two NIfTI files, two folders of "
        "NIfTI files matched by case id (file name without .nii.gz and a _seg/_pred suffix), "
        "or partseg stores.",
    )
    p.add_argument("pred", metavar="PRED", help="predicted labels: NIfTI file, folder or store")
    p.add_argument("gt", metavar="GT", help="ground-truth labels: NIfTI file, folder or store")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="write all metrics as JSON to FILE; without FILE print the JSON instead of the "
        "table (default: no JSON)",
    )
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
        "--labels-map",
        default=None,
        metavar="MAP",
        help="original label value -> class id for NIfTI files, e.g. 0:0,1:1,2:2,4:3 "
        "(default: the store's mapping, else BraTS 4->3 when detected, else identity)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="skip cases present on one side only, with a warning (default: error)",
    )
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------------
# Finding cases
# --------------------------------------------------------------------------------------------


def case_id_from_name(name: str) -> str:
    """The case id of a NIfTI file name.

    Example:
        >>> case_id_from_name("BraTS20_Training_001_seg.nii.gz")
        'BraTS20_Training_001'
    """
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix in ID_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


@dataclass
class Side:
    """One side (PRED or GT) of the comparison: NIfTI files by case id, or a store."""

    label: str  # "PRED" or "GT"
    root: str
    files: dict[str, Path] = field(default_factory=dict)
    store: Any = None

    @property
    def case_ids(self) -> list[str]:
        if self.store is not None:
            return list(self.store.case_ids)
        return list(self.files)

    def where(self, case_id: str) -> str:
        """The file (or store case) that holds ``case_id``."""
        if self.store is not None:
            return f"{self.root}#{case_id}"
        return str(self.files[case_id])


def _nifti_folder(root: Path, label: str) -> dict[str, Path]:
    files = sorted(p for p in root.iterdir() if p.is_file() and _is_nifti(p))
    if not files:
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and _is_nifti(p)
            and case_id_from_name(p.name) != p.name.split(".")[0]  # has a _seg/_pred suffix
        )
    if not files:
        raise InputError(
            "-",
            root,
            f"{label} folder holds no NIfTI files (.nii/.nii.gz) and no *_seg/*_pred files "
            "below it",
            "point to the folder with the label files",
        )
    found: dict[str, Path] = {}
    for path in files:
        case_id = case_id_from_name(path.name)
        if case_id in found:
            raise InputError(
                case_id,
                path,
                f"two {label} files have the same case id (the other is {found[case_id]})",
                "keep one label file per case in the folder",
            )
        found[case_id] = path
    return found


def _looks_like_store(text: str) -> bool:
    if "://" in text and not text.startswith("file://"):
        return True
    path = Path(text.removeprefix("file://"))
    return path.is_dir() and (path / "zarr.json").is_file()


def open_side(text: str, label: str) -> Side:
    """Find the cases of PRED or GT."""
    if _looks_like_store(text):
        from partseg.store import open_store

        return Side(label, text, store=open_store(text))
    path = Path(text)
    if path.is_file():
        if not _is_nifti(path):
            raise InputError("-", path, f"{label} is not a NIfTI file (.nii/.nii.gz)")
        return Side(label, text, files={case_id_from_name(path.name): path})
    if path.is_dir():
        return Side(label, text, files=_nifti_folder(path, label))
    raise InputError("-", path, f"{label} does not exist", "check the path")


def match_cases(pred: Side, gt: Side, allow_missing: bool) -> tuple[list[str], list[str]]:
    """Case ids present on both sides (GT order) and the ids skipped."""
    if pred.store is None and gt.store is None and len(pred.files) == len(gt.files) == 1:
        single = Path(pred.root).is_file() and Path(gt.root).is_file()
        if single:  # two files: one case, named after the GT file
            gt_id = next(iter(gt.files))
            pred.files = {gt_id: next(iter(pred.files.values()))}
    pred_ids, gt_ids = set(pred.case_ids), gt.case_ids
    both = [c for c in gt_ids if c in pred_ids]
    only_gt = [c for c in gt_ids if c not in pred_ids]
    only_pred = sorted(pred_ids - set(gt_ids))
    skipped = only_gt + only_pred
    if not skipped and not both:
        raise InputError("-", f"{pred.root} vs {gt.root}", "no case to evaluate on either side")
    if not skipped:
        return both, []
    message = "; ".join(
        f"{len(ids)} case(s) only in {side}: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
        for ids, side in ((only_gt, f"GT {gt.root}"), (only_pred, f"PRED {pred.root}"))
        if ids
    )
    if not allow_missing or not both:
        raise InputError(
            skipped[0],
            f"{pred.root} vs {gt.root}",
            f"cases do not match: {message}",
            "pass --allow-missing to skip them" if both else "no case is on both sides",
        )
    print(f"partseg evaluate: warning: skipping {message}", file=sys.stderr)
    return both, skipped


# --------------------------------------------------------------------------------------------
# Reading labels
# --------------------------------------------------------------------------------------------


def read_nifti_labels(path: Path, case_id: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """Integer labels in partseg axis order ((Z, Y, X) or (Y, X)) and the matching spacing."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)  # (X, Y, Z) file order
    except Exception as err:  # nibabel raises many types for broken files
        raise InputError(case_id, path, f"cannot read NIfTI file: {err}") from err
    zooms = tuple(float(z) for z in img.header.get_zooms())
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise InputError(case_id, path, f"labels must be 2D or 3D, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise InputError(case_id, path, "label values are not whole numbers")
        data = rounded
    labels = np.ascontiguousarray(data.astype(np.int64).T)  # (X, Y, Z) -> (Z, Y, X)
    return labels, tuple(reversed(zooms[: data.ndim]))


def read_labels(side: Side, case_id: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """Labels of one case of one side: original values (NIfTI) or class ids (store)."""
    if side.store is None:
        return read_nifti_labels(side.files[case_id], case_id)
    case = side.store[case_id]
    label = case.read_label()
    if label is None:
        raise InputError(case_id, side.where(case_id), f"the {side.label} store case has no label")
    return label.astype(np.int64), tuple(case.spacing)


def parse_labels_map(text: str) -> dict[int, int]:
    """Parse ``"0:0,1:1,2:2,4:3"``.

    Example:
        >>> parse_labels_map("0:0, 1:1, 2:2, 4:3")
        {0: 0, 1: 1, 2: 2, 4: 3}
    """
    mapping: dict[int, int] = {}
    try:
        for item in text.split(","):
            key, value = item.split(":")
            mapping[int(key)] = int(value)
    except ValueError as err:
        raise ConfigError(
            f"--labels-map {text!r} is not a list of value:class pairs like 0:0,1:1,2:2,4:3"
        ) from err
    if sorted(set(mapping.values())) != list(range(max(mapping.values()) + 1)):
        raise ConfigError(f"--labels-map {text!r}: class ids must be contiguous from 0")
    return mapping


def apply_mapping(
    labels: np.ndarray, mapping: Mapping[int, int], case_id: str, where: str
) -> np.ndarray:
    """Map original label values to class ids; unknown values are an InputError."""
    values = np.unique(labels)
    unknown = [int(v) for v in values if int(v) not in mapping]
    if unknown:
        raise InputError(
            case_id,
            where,
            f"label values {unknown} are not in the label mapping {dict(mapping)}",
            "pass --labels-map with every label value",
        )
    lut = np.zeros(int(values.max()) + 1 if values.size else 1, dtype=np.int64)
    for key, value in mapping.items():
        if 0 <= key < lut.size:
            lut[key] = value
    return lut[labels]


# --------------------------------------------------------------------------------------------
# Label policy: which mapping, classes and regions
# --------------------------------------------------------------------------------------------


@dataclass
class LabelPolicy:
    """Turns the labels of each case into class ids and decides classes and regions.

    ``mode`` is ``"fixed"`` (a known mapping: --labels-map or a store's) or ``"auto"``
    (BraTS while every case fits {0, 1, 2, 4}, identity once a case does not).
    """

    mapping: dict[int, int] | None
    class_names: list[str] | None
    regions_choice: str
    brats_possible: bool = True
    seen_four: bool = False
    max_id: int = 1

    @property
    def is_brats(self) -> bool:
        from partseg.metrics import BRATS_LABEL_MAPPING

        if self.mapping is not None:
            return dict(self.mapping) == dict(BRATS_LABEL_MAPPING)
        return self.brats_possible and self.seen_four

    def to_class_ids(
        self, case_id: str, arrays: Sequence[tuple[np.ndarray, bool, str]]
    ) -> list[np.ndarray]:
        """Map each (labels, is_nifti, where) to class ids."""
        mapping = self.mapping
        if mapping is None:
            mapping = self._auto_mapping(case_id, arrays)
        out = []
        for labels, is_nifti, where in arrays:
            ids = apply_mapping(labels, mapping, case_id, where) if is_nifti else labels
            if ids.size and ids.min() < 0:
                raise InputError(case_id, where, "negative label values")
            out.append(ids)
            self.max_id = max(self.max_id, int(ids.max()) if ids.size else 0)
        return out

    def _auto_mapping(
        self, case_id: str, arrays: Sequence[tuple[np.ndarray, bool, str]]
    ) -> dict[int, int]:
        from partseg.metrics import BRATS_LABEL_MAPPING

        values = set().union(*(np.unique(a).tolist() for a, nifti, _ in arrays if nifti))
        if self.brats_possible and values <= set(BRATS_LABEL_MAPPING):
            self.seen_four |= 4 in values
            return dict(BRATS_LABEL_MAPPING)
        if self.seen_four:
            raise InputError(
                case_id,
                arrays[0][2],
                f"label values {sorted(values)} do not fit the BraTS labels {{0, 1, 2, 4}} "
                "that earlier cases had",
                "pass --labels-map, e.g. 0:0,1:1,2:2,4:3",
            )
        self.brats_possible = False
        top = max(values, default=0)
        return {v: v for v in range(int(top) + 1)}

    def n_classes(self) -> int:
        """Classes needed so far (grows in auto mode)."""
        if self.class_names is not None:
            return len(self.class_names)
        return self.max_id + 1

    def final_names(self) -> list[str]:
        from partseg.metrics import BRATS_CLASSES

        if self.class_names is not None:
            return list(self.class_names)
        if self.is_brats and self.max_id <= 3:
            return list(BRATS_CLASSES)
        top = max(self.max_id, 3) if self.regions_choice == "brats" else self.max_id
        return ["background", *(f"class_{i}" for i in range(1, top + 1))]

    def regions(self) -> dict[str, tuple[int, ...]]:
        """Regions to compute (provisional in auto mode; :meth:`final_regions` decides)."""
        from partseg.metrics import BRATS_REGIONS

        provisional = self.mapping is None and self.brats_possible  # auto mode, BraTS so far
        if self.regions_choice == "brats" or (
            self.regions_choice == "auto" and (provisional or self.is_brats)
        ):
            return dict(BRATS_REGIONS)
        return {}

    def final_regions(self) -> dict[str, tuple[int, ...]]:
        from partseg.metrics import BRATS_REGIONS

        if self.regions_choice == "brats" or (self.regions_choice == "auto" and self.is_brats):
            return dict(BRATS_REGIONS)
        return {}


def make_policy(args: argparse.Namespace, pred: Side, gt: Side) -> LabelPolicy:
    """The label policy from the options and the sides."""
    store = gt.store if gt.store is not None else pred.store
    mapping: dict[int, int] | None = None
    names = list(args.classes) if args.classes else None
    if args.labels_map:
        mapping = parse_labels_map(args.labels_map)
    elif store is not None:
        mapping = {int(k): int(v) for k, v in store.label_mapping.items()}
    if names is None and store is not None:
        names = list(store.classes)
    if names is not None and len(names) < 2:
        raise ConfigError("--classes needs at least two names: the background and one class")
    if args.regions == "brats" and names is not None and len(names) < 4:
        raise ConfigError(f"--regions brats needs class ids 1-3, but the classes are {names}")
    return LabelPolicy(mapping, names, args.regions)


# --------------------------------------------------------------------------------------------
# Evaluating
# --------------------------------------------------------------------------------------------


def extra_sections(case_id: str, pred: Side, gt: Side) -> dict[str, Any]:
    """Hook for further result sections of a case (name -> {target: {metric: value}}).

    The inference helper's ``seam_metrics(...)`` (seam error of stitched predictions) plugs in
    here; :func:`partseg.metrics.summarize` summarises any section of that form. None yet.
    """
    return {}


def evaluate_pair(
    case_id: str, pred: Side, gt: Side, policy: LabelPolicy
) -> tuple[dict[str, Any], int]:
    """Metrics of one case (classes named by id) and the number of classes it was run with."""
    from partseg.metrics import evaluate_case

    pred_raw, pred_spacing = read_labels(pred, case_id)
    gt_raw, spacing = read_labels(gt, case_id)
    if pred_raw.shape != gt_raw.shape:
        raise InputError(
            case_id,
            f"{pred.where(case_id)} vs {gt.where(case_id)}",
            f"prediction shape {pred_raw.shape} differs from ground truth shape {gt_raw.shape} "
            "(axes Z, Y, X)",
            "evaluate predictions exported in the geometry of the ground truth",
        )
    if not np.allclose(pred_spacing, spacing, rtol=1e-3, atol=1e-4):
        print(
            f"partseg evaluate: warning: case {case_id!r}: prediction spacing {pred_spacing} "
            f"differs from ground truth {spacing}; using the ground truth's",
            file=sys.stderr,
        )
    pred_ids, gt_ids = policy.to_class_ids(
        case_id,
        [
            (pred_raw, pred.store is None, pred.where(case_id)),
            (gt_raw, gt.store is None, gt.where(case_id)),
        ],
    )
    n_classes = policy.n_classes()
    top = max(int(pred_ids.max()), int(gt_ids.max()))
    if top >= n_classes:
        raise InputError(
            case_id,
            gt.where(case_id),
            f"class id {top} has no name in the {n_classes} classes {policy.class_names}",
            "pass --classes with a name for every class id",
        )
    regions = policy.regions()
    n_classes = max(n_classes, 4) if regions else n_classes
    result = evaluate_case(
        pred_ids, gt_ids, [str(i) for i in range(n_classes)], spacing, regions=regions
    )
    result = {"pred": pred.where(case_id), "gt": gt.where(case_id), **result}
    result.update(extra_sections(case_id, pred, gt))
    return result, n_classes


def finalize_case(
    result: dict[str, Any], names: Sequence[str], regions: Mapping[str, Any]
) -> dict[str, Any]:
    """Pad a case to all classes (absent classes are 'both empty'), name them, drop regions."""
    from partseg.metrics import binary_metrics

    n = len(names)
    by_id = result["classes"]
    if len(by_id) + 1 < n:
        empty = np.zeros((1,) * len(result["shape"]), dtype=bool)
        both_empty = binary_metrics(empty, empty, result["spacing"])
        by_id = {**by_id, **{str(i): dict(both_empty) for i in range(len(by_id) + 1, n)}}
    matrix = np.zeros((n, n), dtype=np.int64)
    old = np.asarray(result["confusion_matrix"], dtype=np.int64)
    matrix[: min(n, old.shape[0]), : min(n, old.shape[1])] = old[:n, :n]
    out = dict(result)
    out["classes"] = {names[int(i)]: metrics for i, metrics in by_id.items() if int(i) < n}
    out["regions"] = {k: v for k, v in result["regions"].items() if k in regions}
    out["confusion_matrix"] = matrix.tolist()
    return out


def evaluate_all(
    pred: Side, gt: Side, case_ids: Iterable[str], policy: LabelPolicy
) -> dict[str, dict[str, Any]]:
    """Evaluate every case (streaming: one case in memory at a time) and finalise names."""
    raw = {case_id: evaluate_pair(case_id, pred, gt, policy)[0] for case_id in case_ids}
    names, regions = policy.final_names(), policy.final_regions()
    return {case_id: finalize_case(result, names, regions) for case_id, result in raw.items()}


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _targets(cases: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    first = next(iter(cases.values()))
    return [(s, t) for s in ("classes", "regions") for t in first.get(s, {})]


def _fmt(value: float, metric: str) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.3f}" if metric == "dice" else f"{value:.2f}"


def format_table(cases: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    """Dice and HD95 (mm) per case and target, then the mean over cases."""
    targets = _targets(cases)
    width = max([len("case"), len("mean"), *(len(c) for c in cases)])
    header = "case".ljust(width) + "".join(f"  {t:>15}" for _, t in targets)
    sub = " " * width + "".join(f"  {'Dice':>6} {'HD95':>8}" for _ in targets)
    lines = [header, sub]
    for case_id, result in cases.items():
        cells = [
            f"  {_fmt(result[s][t]['dice'], 'dice'):>6} {_fmt(result[s][t]['hd95'], 'hd95'):>8}"
            for s, t in targets
        ]
        lines.append(case_id.ljust(width) + "".join(cells))
    means = [
        f"  {_fmt(summary[s][t]['dice']['mean'], 'dice'):>6} "
        f"{_fmt(summary[s][t]['hd95']['mean'], 'hd95'):>8}"
        for s, t in targets
    ]
    lines.append("mean".ljust(width) + "".join(means))
    return "\n".join(lines)


def csv_rows(
    cases: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: one per (case, section, target), then mean/std/median rows."""
    targets = _targets(cases)
    metrics = list(next(iter(cases.values()))[targets[0][0]][targets[0][1]]) if targets else []
    rows: list[list[Any]] = []
    for case_id, result in cases.items():
        for s, t in targets:
            rows.append([case_id, s, t, *(result[s][t][m] for m in metrics)])
    for stat in CSV_SUMMARY_STATS:
        for s, t in targets:
            rows.append([stat, s, t, *(summary[s][t][m][stat] for m in metrics)])
    return ["case", "section", "target", *metrics], rows


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Evaluate PRED against GT; print the table; write JSON/CSV. Returns 0."""
    from partseg.metrics import summarize

    pred, gt = open_side(args.pred, "PRED"), open_side(args.gt, "GT")
    case_ids, skipped = match_cases(pred, gt, args.allow_missing)
    policy = make_policy(args, pred, gt)
    cases = evaluate_all(pred, gt, case_ids, policy)
    summary = summarize(cases)
    report = {
        "pred": str(args.pred),
        "gt": str(args.gt),
        "classes": policy.final_names(),
        "regions": {k: list(v) for k, v in policy.final_regions().items()},
        "label_mapping": (
            {str(k): v for k, v in policy.mapping.items()}
            if policy.mapping is not None
            else ("brats" if policy.is_brats else "identity")
        ),
        "skipped": skipped,
        "summary": summary,
        "cases": cases,
    }
    text = json.dumps(report, indent=2)
    if args.json and args.json != "-":
        write_atomic(args.json, text + "\n")
    if args.csv:
        write_atomic(args.csv, to_csv(*csv_rows(cases, summary)))
    print(text if args.json == "-" else format_table(cases, summary))
    return 0
