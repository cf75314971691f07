"""Run several variants of an experiment side by side and report them together.

A *compare config* (``configs/compare_brats.yaml``, the recipes, ``configs/demo.yaml``) is a base
experiment config (the sections of :mod:`partseg.config`) plus a list of *variants*, each a name
and dotted overrides of the base. Every variant trains on the same store, the same training /
validation / test split, the same seeds and the same budget; then every trained run predicts the
same held-out test cases by stitched minicubes and is scored with :mod:`partseg.metrics`.
Optional *ensembles* average the probabilities of several runs (the loss-ensemble recipe) and
*cascades* chain a coarse and a fine run (the aneurysm coarse-to-fine recipe).

YAML keys of a compare config (all but ``variants`` optional)::

    title: "..."                       # report title
    store: ""                          # an ingested store; empty: build one from `phantom`
    phantom: {kind: brats, cases: 12, shape: [48, 64, 64], seed: 0,
              target: labels,          # labels | whole_tumor (one foreground class)
              channels: []}            # keep only these channels (default: all)
    folds: 0                           # k-fold cross-validation of every variant (0: one split)
    budget: ""                         # e.g. 60m: every variant's train.budget (same wall time)
    evaluation: {test_fraction: 0.25, test_cases: [], blend: crop, min_component_size: 0,
                 overlay_slices: 3, seam: true, batch_size: 2,
                 hd95_convention: max_directed}   # or pooled (partseg.metrics)
    base: {data: ..., model: ..., partition: ..., train: ...}
    variants:                          # overrides: a dotted key sets that value; a section
                                       # as a mapping ({model: {depth: 3}}) merges into it
      - {name: 3d, description: "...", overrides: {partition.margin: [0, 0, 0]}}
    ensembles: [{name: ens, members: [a, b], best: 5}]
    cascades: [{name: cascade, coarse: a, fine: b, voi: 64, min_size: 1}]
    quick: {base.train.epochs: 1, phantom.cases: 4, cascades.0.voi: 16,   # applied by --quick
            variants: {3d: {partition.core: [8, 8, 8]}}}           # per-variant additions

Output folder::

    OUT/data/phantom_raw/, OUT/data/phantom.zarr      the generated data (phantom only)
    OUT/split.json                                    test cases and the train/val folds
    OUT/runs/<variant>/fold<k>/                       each training run (partseg train layout)
    OUT/runs/<variant>/fold<k>/evaluation/            its test predictions' scores (cached)
    OUT/report/{report.md, results.csv, results.json, *.png}   mean ± sd over folds, paired
                                                      Wilcoxon tests over the test cases

**Resumable.** A run whose ``summary.json`` exists is not retrained; an interrupted run resumes
from its ``last.pt``; a scored run is not re-scored while its checkpoint and the test cases are
unchanged. Changing a variant's config under the same ``OUT`` raises an error instead of
silently mixing results.

Modules, one concept each: :mod:`~partseg.experiments.config` (the compare config) and
:mod:`~partseg.experiments.specs` (its sections),
:mod:`~partseg.experiments.data` (stores and split), :mod:`~partseg.experiments.prior` (the
cascade's prior store), :mod:`~partseg.experiments.training`
(resumable runs and their costs), :mod:`~partseg.experiments.predictors` (run, ensemble,
cascade), :mod:`~partseg.experiments.evaluate` (cached test scores and overlay slices),
:mod:`~partseg.experiments.reporting` (run results, tables, figures) and
:mod:`~partseg.experiments.runner` (:func:`run_compare`, which ties them together).

Example:
    >>> cfg = compare_config_from_dict({
    ...     "base": {"train": {"epochs": 2}},
    ...     "variants": [{"name": "a"}, {"name": "b", "overrides": {"train.epochs": 3}}]})
    >>> [v.name for v in cfg.variants], experiment_dict(cfg, cfg.variants[1])["train"]["epochs"]
    (['a', 'b'], 3)
"""

from partseg.experiments.config import (
    CascadeSpec,
    CompareConfig,
    EnsembleSpec,
    EvaluationSpec,
    PhantomSpec,
    Variant,
    compare_config_from_dict,
    experiment_dict,
    load_compare_config,
    parse_override,
    set_path,
)
from partseg.experiments.data import Split, derive_phantoms, make_split, prepare_store
from partseg.experiments.evaluate import OverlaySlice, evaluate_predictor, overlay_slices
from partseg.experiments.predictors import Predictor, cascade_predictor, model_predictor
from partseg.experiments.reporting import (
    REPORT_METRICS,
    class_counts,
    scores_of,
    write_compare_report,
)
from partseg.experiments.runner import CompareOutcome, run_compare
from partseg.experiments.training import (
    read_history,
    run_dir_of,
    saved_activation_mb,
    train_variant,
    training_costs,
)

__all__ = [
    "REPORT_METRICS",
    "CascadeSpec",
    "CompareConfig",
    "CompareOutcome",
    "EnsembleSpec",
    "EvaluationSpec",
    "OverlaySlice",
    "PhantomSpec",
    "Predictor",
    "Split",
    "Variant",
    "cascade_predictor",
    "class_counts",
    "compare_config_from_dict",
    "derive_phantoms",
    "evaluate_predictor",
    "experiment_dict",
    "load_compare_config",
    "make_split",
    "model_predictor",
    "overlay_slices",
    "parse_override",
    "prepare_store",
    "read_history",
    "run_compare",
    "run_dir_of",
    "saved_activation_mb",
    "scores_of",
    "set_path",
    "train_variant",
    "training_costs",
    "write_compare_report",
]
