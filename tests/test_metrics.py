"""Tests of partseg.metrics against hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from partseg.errors import ConfigError, StoreError
from partseg.metrics import (
    BRATS_CLASSES,
    BRATS_REGIONS,
    DEFAULT_HD95,
    HD95_CONVENTIONS,
    METRICS,
    binary_metrics,
    confusion_matrix,
    count_metrics,
    evaluate_case,
    image_diagonal,
    lesion_detection,
    original_diagonal,
    summarize,
    surface_distance_metrics,
    surface_distances,
)


def test_count_metrics_by_hand() -> None:
    m = count_metrics(tp=3, fp=1, fn=2, tn=4)
    assert m["dice"] == pytest.approx(6 / 9)
    assert m["f1"] == m["dice"]
    assert m["jaccard"] == pytest.approx(3 / 6)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == m["sensitivity"] == pytest.approx(3 / 5)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["f2"] == pytest.approx(15 / 24)  # 5TP / (5TP + 4FN + FP)
    assert m["volumetric_similarity"] == pytest.approx(1 - 1 / 9)  # 1 - |FN - FP| / (2TP+FP+FN)


def test_confusion_matrix_rows_are_ground_truth() -> None:
    gt = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 2, 2])
    assert confusion_matrix(pred, gt, 3).tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix(pred, gt, 2)


@pytest.mark.parametrize("ndim", [2, 3])
def test_empty_and_empty(ndim: int) -> None:
    empty = np.zeros((3,) * ndim, bool)
    m = binary_metrics(empty, empty)
    for key in ("dice", "precision", "recall", "specificity", "f2", "volumetric_similarity"):
        assert m[key] == 1.0, key
    assert m["hd"] == m["hd95"] == 0.0
    assert m["lesion_sensitivity"] == m["lesion_ppv"] == 1.0 and m["lesion_fp"] == 0.0
    assert all(math.isfinite(v) for v in m.values())


def test_empty_ground_truth_full_prediction_and_back() -> None:
    empty, full = np.zeros((2, 3, 4), bool), np.ones((2, 3, 4), bool)
    spacing = (1.0, 2.0, 3.0)
    diagonal = math.sqrt(2**2 + 6**2 + 12**2)  # (2*1, 3*2, 4*3) mm
    assert image_diagonal((2, 3, 4), spacing) == pytest.approx(diagonal)
    hallucinated = binary_metrics(full, empty, spacing)
    assert hallucinated["dice"] == hallucinated["precision"] == 0.0
    assert hallucinated["recall"] == 1.0 and hallucinated["specificity"] == 0.0
    assert hallucinated["hd95"] == hallucinated["hd"] == pytest.approx(diagonal)
    assert hallucinated["lesion_fp"] == 1.0 and hallucinated["lesion_ppv"] == 0.0
    missed = binary_metrics(empty, full, spacing)
    assert missed["dice"] == missed["recall"] == missed["precision"] == 0.0
    assert missed["specificity"] == 1.0
    assert missed["hd95"] == pytest.approx(diagonal)
    assert missed["lesion_sensitivity"] == 0.0 and missed["gt_lesions"] == 1.0


def test_brats_diagonal() -> None:
    assert image_diagonal((155, 240, 240), (1, 1, 1)) == pytest.approx(373.13, abs=0.005)


def test_missed_class_scores_the_diagonal_of_the_original_image() -> None:
    # a BraTS case cropped at ingest to 20 x 30 x 40 voxels of its 155 x 240 x 240 (1 mm) scan
    attrs = {"original_shape": [155, 240, 240], "original_spacing": [1.0, 1.0, 1.0]}
    gt = np.zeros((20, 30, 40), np.uint8)
    gt[5:8, 5:9, 5:10] = 3  # enhancing tumour, missed by the prediction
    pred = np.where(gt == 3, 2, gt)
    diagonal = original_diagonal(attrs, gt.shape, (1.0, 1.0, 1.0))
    assert diagonal == pytest.approx(373.13, abs=0.005)
    result = evaluate_case(pred, gt, BRATS_CLASSES, (1, 1, 1), max_distance=diagonal)
    for metrics in (result["classes"]["enhancing"], result["regions"]["enhancing_tumor"]):
        assert metrics["hd95"] == metrics["hd"] == pytest.approx(373.13, abs=0.005)
    assert result["classes"]["edema"]["hd95"] == pytest.approx(373.13, abs=0.005)  # hallucinated
    assert result["regions"]["whole_tumor"]["hd95"] == 0.0  # found, with the wrong class
    cropped = evaluate_case(pred, gt, BRATS_CLASSES, (1, 1, 1))  # default: the array's diagonal
    assert cropped["classes"]["enhancing"]["hd95"] == pytest.approx(
        math.sqrt(20**2 + 30**2 + 40**2)
    )


def test_original_diagonal_of_resampled_old_and_damaged_stores() -> None:
    resampled = {"original_shape": [10, 20, 20], "original_spacing": [3.0, 0.5, 0.5]}
    assert original_diagonal(resampled, (30, 10, 10), (1, 1, 1)) == pytest.approx(math.sqrt(1100))
    assert original_diagonal({}, (3, 4, 12), (1, 1, 1)) == pytest.approx(13.0)  # older store
    with pytest.raises(StoreError, match="original_shape"):
        original_diagonal({"original_shape": [0, 5, 5]}, (3, 4, 12), (1, 1, 1))


def hd_example(ndim: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """A GT line on row 0, the prediction on row 1, plus one stray voxel on row 3 at the end.

    Row spacing 3 mm, column spacing 1 mm. Every voxel of a one-voxel-thick line is surface.
    Distances: 10 prediction line voxels -> 3 mm, the stray voxel -> 9 mm (to (0, 9)),
    10 GT voxels -> 3 mm. HD = 9. Pooled (21 values): 95th percentile (index 19 of 0..20) = 3.
    Directed: prediction -> GT (11 values) at index 0.95 * 10 = 9.5, halfway between 3 and 9
    = 6; GT -> prediction = 3; max_directed = 6.
    """
    gt = np.zeros((4, 10), bool)
    gt[0] = True
    pred = np.zeros((4, 10), bool)
    pred[1] = True
    pred[3, 9] = True
    spacing: tuple[float, ...] = (3.0, 1.0)
    if ndim == 3:  # rows along Z, a singleton Y axis
        gt, pred, spacing = gt[:, None], pred[:, None], (3.0, 0.5, 1.0)
    return pred, gt, spacing


@pytest.mark.parametrize("ndim", [2, 3])
def test_hausdorff_with_anisotropic_spacing(ndim: int) -> None:
    pred, gt, spacing = hd_example(ndim)
    m = surface_distance_metrics(pred, gt, spacing)
    assert m["hd"] == pytest.approx(9.0)
    assert m["hd95"] == pytest.approx(6.0)  # max_directed, the default
    assert surface_distance_metrics(pred, gt, spacing, hd95="pooled")["hd95"] == 3.0
    assert m["assd"] == pytest.approx((20 * 3 + 9) / 21)
    # the spacing is (Z, Y, X) like the array: swapped spacing gives other numbers
    swapped = surface_distance_metrics(pred, gt, spacing[::-1])
    assert swapped["hd"] != pytest.approx(9.0)


def test_hausdorff_uses_surfaces_not_volumes() -> None:
    # a filled 5 x 5 square against the same square with a hole in its centre: the hole's 4
    # face neighbours become prediction surface voxels, 1 voxel from the GT's outer ring
    gt = np.zeros((7, 7), bool)
    gt[1:6, 1:6] = True
    pred = gt.copy()
    pred[3, 3] = False  # a hole: pred surface gains the 4 voxels around the hole
    to_gt, to_pred = surface_distances(pred, gt, (1.0, 1.0))
    # 16 outer ring voxels at 0 plus the 4 neighbours of the hole at distance 1 from the ring
    assert sorted(to_gt.tolist()) == [0.0] * 16 + [1.0] * 4
    assert sorted(to_pred.tolist()) == [0.0] * 16


def brute_force(pred: np.ndarray, gt: np.ndarray, spacing) -> tuple[float, float]:
    """HD, pooled HD95 and max-directed HD95 from pairwise distances of surface coordinates."""
    from scipy import ndimage

    def surface(mask):
        return np.argwhere(mask & ~ndimage.binary_erosion(mask)) * np.asarray(spacing)

    a, b = surface(pred), surface(gt)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    pooled = np.concatenate([d.min(1), d.min(0)])
    directed = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))
    return float(pooled.max()), float(np.percentile(pooled, 95)), float(directed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hausdorff_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gt = np.zeros((6, 9, 11), bool)
    gt[1:4, 2:7, 3:9] = True
    pred = rng.random(gt.shape) > 0.8
    pred[0] = True  # touches the image border: border voxels count as surface
    spacing = (2.5, 1.0, 0.7)
    hd, pooled, directed = brute_force(pred, gt, spacing)
    m = surface_distance_metrics(pred, gt, spacing, hd95="max_directed")
    assert m["hd"] == pytest.approx(hd)
    assert m["hd95"] == pytest.approx(directed)
    assert surface_distance_metrics(pred, gt, spacing, hd95="pooled")["hd95"] == pytest.approx(
        pooled
    )


def far_speck() -> tuple[np.ndarray, np.ndarray]:
    """GT: row 0, columns 0..9; prediction: row 1, columns 0..9, plus one speck at (1, 29).

    Spacing 1 mm. Prediction -> GT: 10 line voxels at 1 mm and the speck at sqrt(1 + 20**2)
    (to (0, 9)); GT -> prediction: 10 voxels at 1 mm.
    max_directed: the 11 prediction distances at index 9.5: 1 + 0.5 * (sqrt(401) - 1) = 10.51.
    pooled: 21 distances, index 19 is still 1 mm: the speck is invisible.
    """
    gt = np.zeros((3, 30), bool)
    gt[0, :10] = True
    pred = np.zeros_like(gt)
    pred[1, :10] = True
    pred[1, 29] = True
    return pred, gt


def test_hd95_conventions_on_a_far_false_positive_speck() -> None:
    pred, gt = far_speck()
    directed = binary_metrics(pred, gt, hd95="max_directed")["hd95"]
    pooled = binary_metrics(pred, gt, hd95="pooled")["hd95"]
    assert directed == pytest.approx(1 + 0.5 * (math.sqrt(401) - 1))
    assert pooled == 1.0
    assert DEFAULT_HD95 == "max_directed" and binary_metrics(pred, gt)["hd95"] == directed
    by_case = evaluate_case(pred.astype(int), gt.astype(int), ("bg", "fg"), regions={},
                            hd95="pooled")  # fmt: skip
    assert by_case["classes"]["fg"]["hd95"] == 1.0
    with pytest.raises(ConfigError, match="hd95_convention='mean'; choose one of"):
        evaluate_case(pred.astype(int), gt.astype(int), ("bg", "fg"), regions={}, hd95="mean")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notes
@pytest.mark.parametrize("seed", [0, 1])
def test_max_directed_hd95_equals_monai(seed: int) -> None:
    monai = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    gt = np.zeros((6, 9, 11), bool)
    gt[1:4, 2:7, 3:9] = True
    pred = rng.random(gt.shape) > 0.8
    spacing = (2.5, 1.0, 0.7)

    def one_hot(mask: np.ndarray):
        fg = torch.from_numpy(mask.astype(np.float32))[None, None]  # (B=1, 1, Z, Y, X)
        return torch.cat([1 - fg, fg], dim=1)

    expected = monai.compute_hausdorff_distance(
        one_hot(pred), one_hot(gt), include_background=False, percentile=95, spacing=spacing
    )
    ours = surface_distance_metrics(pred, gt, spacing, hd95="max_directed")["hd95"]
    assert ours == pytest.approx(float(expected), rel=1e-6)
    speck_pred, speck_gt = far_speck()
    expected = monai.compute_hausdorff_distance(
        one_hot(speck_pred[None]), one_hot(speck_gt[None]), percentile=95
    )
    assert binary_metrics(speck_pred, speck_gt)["hd95"] == pytest.approx(float(expected))


def test_metric_registry_lists_every_metric_evaluate_case_reports() -> None:
    pred, gt = far_speck()
    result = evaluate_case(pred.astype(int), gt.astype(int), ("bg", "fg"), regions={})
    assert set(result["classes"]["fg"]) == set(METRICS.names())
    assert set(HD95_CONVENTIONS.names()) == {"max_directed", "pooled"}


def lesion_example() -> tuple[np.ndarray, np.ndarray]:
    """3 GT lesions (A, B, C) and 4 predicted components (p, q, r, s) on a 1 x 5 x 12 grid.

    p overlaps A; q and r both overlap B; C is missed; s overlaps nothing.
    """
    gt = np.zeros((1, 5, 12), bool)
    gt[0, 0:2, 0:2] = True  # A
    gt[0, 0:3, 4:8] = True  # B
    gt[0, 4, 10:12] = True  # C
    pred = np.zeros_like(gt)
    pred[0, 1, 1] = True  # p
    pred[0, 0, 4] = True  # q
    pred[0, 2, 7] = True  # r
    pred[0, 4, 0:3] = True  # s
    return pred, gt


def test_lesion_detection_counts() -> None:
    pred, gt = lesion_example()
    d = lesion_detection(pred, gt)
    assert d["gt_lesions"] == 3 and d["pred_lesions"] == 4
    assert d["detected_lesions"] == 2
    assert d["lesion_sensitivity"] == pytest.approx(2 / 3)
    assert d["lesion_fp"] == 1
    assert d["lesion_ppv"] == pytest.approx(3 / 4)


def test_lesion_connectivity() -> None:
    gt = np.zeros((3, 3), bool)
    gt[0, 0] = gt[1, 1] = True  # diagonal neighbours
    assert lesion_detection(gt, gt)["gt_lesions"] == 1  # full connectivity (default)
    assert lesion_detection(gt, gt, connectivity=1)["gt_lesions"] == 2


# The BraTS example worked by hand (contiguous ids 1 necrotic, 2 edema, 3 enhancing):
#   gt   = 0 1 2 3 | 3 2 1 0        pred = 0 1 1 3 | 2 2 0 0
GT = np.array([[[0, 1, 2, 3], [3, 2, 1, 0]]])
PRED = np.array([[[0, 1, 1, 3], [2, 2, 0, 0]]])


def test_evaluate_case_brats_regions_by_hand() -> None:
    result = evaluate_case(PRED, GT, BRATS_CLASSES, spacing=(1.0, 1.0, 1.0))
    assert set(result["classes"]) == {"necrotic", "edema", "enhancing"}
    assert set(result["regions"]) == set(BRATS_REGIONS)
    classes, regions = result["classes"], result["regions"]
    assert classes["necrotic"]["dice"] == pytest.approx(0.5)  # TP 1, FP 1, FN 1
    assert classes["edema"]["dice"] == pytest.approx(0.5)  # TP 1, FP 1, FN 1
    assert classes["enhancing"]["dice"] == pytest.approx(2 / 3)  # TP 1, FN 1
    assert regions["whole_tumor"]["dice"] == pytest.approx(10 / 11)  # TP 5, FN 1
    assert regions["tumor_core"]["dice"] == pytest.approx(4 / 7)  # TP 2, FP 1, FN 2
    assert regions["enhancing_tumor"]["dice"] == pytest.approx(2 / 3)
    assert regions["tumor_core"]["precision"] == pytest.approx(2 / 3)
    assert regions["tumor_core"]["recall"] == pytest.approx(2 / 4)
    assert result["confusion_matrix"] == [[2, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    assert regions["whole_tumor"]["gt_voxels"] == 6 and regions["whole_tumor"]["pred_voxels"] == 5


def test_evaluate_case_volume_uses_spacing_and_custom_regions() -> None:
    result = evaluate_case(
        PRED, GT, BRATS_CLASSES, spacing=(2.0, 1.0, 0.5), regions={"tumor": (1, 2, 3)}
    )
    assert list(result["regions"]) == ["tumor"]
    assert result["regions"]["tumor"]["gt_volume_ml"] == pytest.approx(6 * 1.0 / 1000)
    with pytest.raises(ValueError, match="outside"):
        evaluate_case(PRED, GT, ("background", "a"), regions=BRATS_REGIONS)


def test_summarize_means_counts_and_no_nan() -> None:
    a = evaluate_case(PRED, GT, BRATS_CLASSES)
    empty = np.zeros_like(GT)
    b = evaluate_case(empty, empty, BRATS_CLASSES)  # everything empty: Dice 1, HD95 0
    b["classes"]["edema"]["dice"] = float("nan")  # a NaN is left out, never propagated
    summary = summarize({"a": a, "b": b})
    necrotic = summary["classes"]["necrotic"]
    assert necrotic["dice"]["mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert necrotic["dice"]["std"] == pytest.approx(0.25)
    assert necrotic["dice"]["median"] == pytest.approx(0.75)
    assert necrotic["dice"]["n"] == 2
    assert necrotic["n_cases"] == 2 and necrotic["n_gt_empty"] == 1
    assert summary["classes"]["edema"]["dice"] == {
        "mean": 0.5,
        "std": 0.0,
        "median": 0.5,
        "min": 0.5,
        "max": 0.5,
        "n": 1,
    }
    assert summary["regions"]["whole_tumor"]["dice"]["mean"] == pytest.approx((10 / 11 + 1) / 2)
    assert summary["confusion_matrix"][0][0] == 2 + 8
    assert summary["n_cases"] == 2


def test_summarize_picks_up_extra_sections() -> None:
    case = {"seam": {"all": {"max_abs_diff": 0.25}}, "classes": {}}
    assert summarize([case])["seam"]["all"]["max_abs_diff"]["mean"] == 0.25


def test_confusion_matrix_counts() -> None:
    gt = np.array([[0, 0, 1], [2, 2, 2]])
    pred = np.array([[0, 1, 1], [2, 0, 2]])
    matrix = confusion_matrix(pred, gt, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert matrix.sum() == gt.size
