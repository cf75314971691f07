"""BraTS lesion-wise metrics, computed by the official BraTS evaluation package.

Since 2023 BraTS ranks segmentations lesion by lesion: each connected component (lesion) of a
region is matched to the prediction's, and Dice, HD95 and NSD are reported per matched lesion
together with the detection counts (true, false and missed lesions) and the "global" metrics of
the whole region. partseg does not reimplement this: :class:`LesionwiseRun` calls the official
package, ``brats-evaluation`` (import ``brats_evaluation``, built on ``panoptica``; install with
``pip install 'partseg[brats]'``), exactly as its own ``brats-evaluate`` command does:

1. one ``panoptica.Panoptica_Evaluator`` from the package's bundled config (``gli`` by default:
   regions ``wt`` {1, 2, 3}, ``tc`` {1, 3}, ``et`` {3}, ``netc``, ``snfh``, ``rc`` {4}; a lesion
   is matched when it overlaps, Dice > 1e-6);
2. per case, ``brats_evaluation.evaluate_single_exam(prediction, reference, case_id,
   evaluator)`` on NIfTI images of partseg's class ids (0 background, 1 necrotic, 2 edema,
   3 enhancing: the BraTS 2023 labels, whatever the files held) with the ground truth's spacing;
3. the package's parser (``parse_seg_results``; ``parse_mets_results`` with its default
   thresholds for ``mets``) turns the results into the leaderboard columns per case and their
   mean / std (pandas, ddof 1) / median; cases without a prediction (skipped with
   ``allow_missing``) enter as the package's "missings": HD95 373, every other metric 0.

The numbers are the package's, unchanged. In version 0.0.10 with ``gli``, ``lesionwise_dsc_mean``
is panoptica's segmentation quality: the mean Dice over *matched* lesions; missed and false
lesions count in the detection columns (``all_instance_fn``, ``all_instance_fp``, ``..._f1``),
and only a region with no matched lesion scores Dice 0 and HD95 infinity (a global HD95 of an
empty side becomes 373). Per case, for each region (``wt``, ``tc``, ``et``, ...):
``all_instance_tp/fp/fn/prec/rec/f1``, ``global_dsc/nsd/hd95`` and
``lesionwise_dsc/nsd/hd95_mean`` (``_std``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from partseg.errors import ConfigError, InputError

__all__ = ["CONFIGS", "INSTALL", "TABLE_METRICS", "LesionwiseRun"]

#: The package's bundled configs whose labels are partseg's BraTS class ids (1 NETC, 2 SNFH,
#: 3 ET); ``ped`` and ``MenRT`` number their labels differently and are not offered.
CONFIGS = ("gli", "mets", "GoAT", "MenPre")
#: How to install the optional extra, named in the error when it is missing.
INSTALL = "pip install 'partseg[brats]' (or: pip install brats-evaluation)"
#: Columns the terminal table shows per region (JSON and CSV keep every column).
TABLE_METRICS = ("lesionwise_dsc_mean", "lesionwise_hd95_mean", "lesionwise_nsd_mean")
_STATS = ("mean", "std", "median")


def _official() -> Any:
    """The ``brats_evaluation`` module, or a ConfigError naming the pip command."""
    try:
        import brats_evaluation
    except ImportError as err:
        raise ConfigError(
            f"--brats-lesionwise needs the official BraTS evaluation package, which is not "
            f"installed ({err}); install it with {INSTALL}"
        ) from err
    return brats_evaluation


def _number(text: str) -> float:
    """A CSV cell of the official parser as a float (empty = NaN, ``inf`` kept)."""
    return float(text) if text.strip() else math.nan


class LesionwiseRun:
    """Collects the official per-case results, then parses them as the package does.

    Example (needs the optional extra, so it is not run as a test)::

        run = LesionwiseRun("gli")
        run.add("c1", pred_ids, gt_ids, spacing=(1.0, 1.0, 1.0))  # (Z, Y, X) class ids
        per_case, summary = run.finish(missing=[])
        per_case["c1"]["et"]["lesionwise_dsc_mean"]
    """

    def __init__(self, config: str = "gli") -> None:
        if config not in CONFIGS:
            raise ConfigError(
                f"--brats-config {config!r}: use one of {', '.join(CONFIGS)} (the official "
                "package's configs whose labels are BraTS's 1 necrotic, 2 edema, 3 enhancing)"
            )
        self.module = _official()
        from panoptica import Panoptica_Evaluator

        self.config = config
        path = str(self.module.config_path(config))
        with contextlib.redirect_stdout(sys.stderr):  # panoptica prints notes on stdout
            self.evaluator = Panoptica_Evaluator.load_from_config(path)
        self.results: list[dict[str, Any]] = []

    @property
    def versions(self) -> dict[str, str]:
        """The versions of the official package and of panoptica, for the report."""
        return {
            "brats-evaluation": metadata.version("brats-evaluation"),
            "panoptica": metadata.version("panoptica"),
            "config": self.config,
        }

    def add(self, case_id: str, pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> None:
        """Evaluate one case: (Z, Y, X) class ids of the prediction and the ground truth.

        Raises:
            InputError: the official evaluation failed for this case (its message is kept).
        """
        import nibabel as nib

        affine = np.diag([*(float(s) for s in reversed(spacing)), 1.0])  # (X, Y, Z) voxel sizes

        def image(ids: np.ndarray) -> Any:
            return nib.Nifti1Image(np.ascontiguousarray(ids.T.astype(np.uint8)), affine)

        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            # the official config keeps panoptica's default NSD threshold, which warns each time
            warnings.filterwarnings("ignore", message="The threshold is set to 0.5")
            result = self.module.evaluate_single_exam(
                image(pred), image(gt), case_id, self.evaluator
            )
        if "error" in result:
            raise InputError(
                case_id,
                "(brats-evaluation)",
                f"the official BraTS evaluation failed: {result['error']}",
                "check the labels of this case, or run without --brats-lesionwise",
            )
        self.results.append(json.loads(json.dumps(result, default=float)))

    def finish(
        self, missing: Iterable[str] = ()
    ) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, dict[str, float]]]]:
        """The official parser's numbers: per case and region, and mean/std/median per region.

        Args:
            missing: case ids with ground truth but no prediction; the parser scores them with
                its penalties (HD95 373, the rest 0) in the summary.

        Returns:
            ``(per_case, summary)``: ``per_case[case][region][column]`` and
            ``summary[region][column] = {"mean", "std", "median"}``.
        """
        groups = list(self.evaluator.segmentation_class_groups_names)
        with tempfile.TemporaryDirectory(prefix="partseg-brats-") as folder:
            summary_json, table_csv = Path(folder) / "summary.json", Path(folder) / "table.csv"
            summary_json.write_text(
                json.dumps({"metrics": self.results, "missings": list(missing)})
            )
            parse = self.module.parse_seg_results
            args: tuple[Any, ...] = (str(summary_json), str(table_csv))
            if self.config == "mets":  # the official CLI's default thresholds
                parse, args = self.module.parse_mets_results, (args[0], 20.0, 0.1, args[1])
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore", RuntimeWarning)  # pandas' std of one value
                parse(*args)
            if not table_csv.is_file():
                raise InputError("-", "(brats-evaluation)", "the official parser wrote no table")
            with table_csv.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
        cases, stats = rows[: -len(_STATS)], rows[-len(_STATS) :]  # the parser appends them
        per_case = {row.pop("subject_id"): _by_region(row, groups) for row in cases}
        summary: dict[str, dict[str, dict[str, float]]] = {}
        for stat, row in zip(_STATS, stats, strict=True):
            row.pop("subject_id")
            for region, values in _by_region(row, groups).items():
                for column, value in values.items():
                    summary.setdefault(region, {}).setdefault(column, {})[stat] = value
        return per_case, summary


def _by_region(row: dict[str, str], groups: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{"lesionwise_dsc_mean_et": "0.9", ...}`` -> ``{"et": {"lesionwise_dsc_mean": 0.9}}``."""
    out: dict[str, dict[str, float]] = {g: {} for g in groups}
    for key, text in row.items():
        group = next((g for g in groups if key.endswith(f"_{g}")), None)
        if group is not None:
            out[group][key[: -len(group) - 1]] = _number(text)
    return {g: values for g, values in out.items() if values}
