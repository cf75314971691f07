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
    evaluation: {test_fraction: 0.25, test_cases: [], blend: crop, min_component_size: 0,
                 overlay_slices: 3, seam: true, batch_size: 2}
    base: {data: ..., model: ..., partition: ..., train: ...}
    variants:
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
    OUT/report/{report.md, results.csv, results.json, *.png}

**Resumable.** A run whose ``summary.json`` exists is not retrained; an interrupted run resumes
from its ``last.pt``; a scored run is not re-scored while its checkpoint and the test cases are
unchanged. Changing a variant's config under the same ``OUT`` raises an error instead of
silently mixing results.

Example:
    >>> cfg = compare_config_from_dict({
    ...     "base": {"train": {"epochs": 2}},
    ...     "variants": [{"name": "a"}, {"name": "b", "overrides": {"train.epochs": 3}}]})
    >>> [v.name for v in cfg.variants], experiment_dict(cfg, cfg.variants[1])["train"]["epochs"]
    (['a', 'b'], 3)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from partseg.atomic import atomic_path, write_text
from partseg.errors import ConfigError

#: Metrics kept in the comparison tables (the per-case files keep every metric).
REPORT_METRICS = (
    "dice",
    "precision",
    "recall",
    "f2",
    "specificity",
    "hd95",
    "hd",
    "volumetric_similarity",
    "lesion_sensitivity",
    "lesion_fp",
    "lesion_ppv",
)
#: Keys of the run configs that do not change results (ignored when checking a rerun).
_VOLATILE = {("train", "progress"), ("train", "workers"), ("train", "device")}


# --------------------------------------------------------------------------------------------
# The compare config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomSpec:
    """Synthetic data a compare run builds when no store is given.

    Attributes:
        kind: ``"brats"`` or ``"aneurysm"`` (see :mod:`partseg.phantom`).
        cases: number of cases.
        shape: volume size (Z, Y, X) before the foreground crop of ingest.
        seed: data-set seed.
        target: ``"labels"`` (the kind's classes) or ``"whole_tumor"`` (brats: every tumour
            label merged into one foreground class named ``whole_tumor``).
        channels: keep only these channels (empty: all).

    Derived input channels (e.g. the Sobel contour of the aneurysm recipe) are not stored: a
    variant asks for them with ``data.derived_channels`` (see :mod:`partseg.channels`).
    """

    kind: str = "brats"
    cases: int = 12
    shape: tuple[int, int, int] = (48, 64, 64)
    seed: int = 0
    target: str = "labels"
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("brats", "aneurysm"):
            raise ConfigError(f"phantom.kind={self.kind!r}: use brats or aneurysm")
        if self.target not in ("labels", "whole_tumor"):
            raise ConfigError(f"phantom.target={self.target!r}: use labels or whole_tumor")
        if self.target == "whole_tumor" and self.kind != "brats":
            raise ConfigError("phantom.target=whole_tumor needs phantom.kind=brats")
        if self.cases < 2:
            raise ConfigError(f"phantom.cases={self.cases}: need at least 2 (train and test)")

    @property
    def derived(self) -> bool:
        """Whether the phantom files are rewritten as an nnU-Net raw folder before ingest.

        Only for another target or a channel subset; otherwise ingest reads the phantom's
        ``<id>/<id>_<channel>.nii.gz`` folders directly (BraTS names, or ``_tof`` for aneurysm
        phantoms, whose labels {0, 1} ingest declares from the data).
        """
        return self.target != "labels" or bool(self.channels)


@dataclass(frozen=True)
class EvaluationSpec:
    """How trained runs are scored on the held-out test cases.

    Attributes:
        test_fraction: share of the cases held out for testing (when ``test_cases`` is empty).
        test_cases: explicit test case ids.
        split_seed: seed of the test draw and of the folds.
        blend: stitching mode (``crop`` | ``average`` | ``gaussian`` | ``hann``).
        min_component_size: remove predicted components smaller than this (0: keep all).
        overlay_slices: slices shown in the overlay figure.
        seam: compute the seam index of each stitched prediction.
        batch_size: minicubes per forward pass at prediction.
    """

    test_fraction: float = 0.25
    test_cases: tuple[str, ...] = ()
    split_seed: int = 0
    blend: str = "crop"
    min_component_size: int = 0
    overlay_slices: int = 3
    seam: bool = True
    batch_size: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"evaluation.test_fraction={self.test_fraction}: must lie in (0, 1)")


@dataclass(frozen=True)
class Variant:
    """One arm of the comparison: dotted overrides of the base config."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class EnsembleSpec:
    """Average the probabilities of the runs of ``members`` (the ``best`` by validation Dice)."""

    name: str
    members: tuple[str, ...]
    best: int = 0
    description: str = ""


@dataclass(frozen=True)
class CascadeSpec:
    """Coarse run -> VOIs of ``voi`` voxels around its components -> fine run."""

    name: str
    coarse: str
    fine: str
    voi: int = 64
    min_size: int = 1
    description: str = ""


@dataclass(frozen=True)
class CompareConfig:
    """A validated compare config; see the module docstring for the YAML keys."""

    variants: tuple[Variant, ...]
    base: Mapping[str, Any] = field(default_factory=dict)
    title: str = "partseg comparison"
    store: str = ""
    phantom: PhantomSpec | None = None
    folds: int = 0
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    ensembles: tuple[EnsembleSpec, ...] = ()
    cascades: tuple[CascadeSpec, ...] = ()

    @property
    def names(self) -> list[str]:
        return (
            [v.name for v in self.variants]
            + [e.name for e in self.ensembles]
            + [c.name for c in self.cascades]
        )


_TOP_KEYS = (
    "title", "store", "phantom", "folds", "evaluation", "base", "variants", "ensembles",
    "cascades", "quick", "description",
)  # fmt: skip


def set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` in a nested dict, creating sections on the way.

    A part made of digits indexes a list (``cascades.0.voi``).

    Example:
        >>> raw = {"a": {"b": 1}, "l": [{"x": 1}]}
        >>> set_path(raw, "a.c.d", 2)
        >>> set_path(raw, "l.0.x", 3)
        >>> raw
        {'a': {'b': 1, 'c': {'d': 2}}, 'l': [{'x': 3}]}
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"override key {key!r} has an empty part; write e.g. train.epochs")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key}: {part} is not an index of a {len(node)}-list")
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
            if not last and node.get(part) is None:
                node[part] = {}
        else:
            raise ConfigError(f"override {key}: {parts[i - 1]} is a value, not a section")
        if last:
            node[index] = copy.deepcopy(value)
        else:
            node = node[index]


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` with the value parsed as YAML (``1`` int, ``[1, 2]`` list, ``off`` str)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({err})") from err


def _build(cls: type, name: str, values: Any) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"compare config: {name} must be a mapping, got {values!r}")
    valid = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(
            f"compare config: unknown key {name}.{unknown[0]}; valid keys: {', '.join(valid)}"
        )
    kwargs = {}
    for key, value in values.items():
        if isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"compare config: {name}: {err}") from err


def compare_config_from_dict(
    raw: Mapping[str, Any], *, quick: bool = False, overrides: Sequence[str] = ()
) -> CompareConfig:
    """Validate a parsed compare config; ``quick`` applies its ``quick:`` overrides first.

    Raises:
        ConfigError: unknown key, a variant without name, duplicate names, an override of an
            unknown experiment key (checked by building every variant's experiment config).
    """
    raw = copy.deepcopy(dict(raw))
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(
            f"compare config: unknown key {unknown[0]!r}; valid keys: {', '.join(_TOP_KEYS)}"
        )
    quick_overrides = raw.pop("quick", None) or {}
    raw.pop("description", None)
    quick_overrides = dict(quick_overrides)
    per_variant = quick_overrides.pop("variants", None) or {}
    if quick:
        for key, value in quick_overrides.items():
            set_path(raw, key, value)
        _merge_variant_overrides(raw, per_variant)
    for text in overrides:
        set_path(raw, *parse_override(text))
    variants = tuple(_variant(v, i) for i, v in enumerate(raw.get("variants") or []))
    if not variants:
        raise ConfigError("compare config: give at least one entry under variants")
    phantom = raw.get("phantom")
    config = CompareConfig(
        variants=variants,
        base=dict(raw.get("base") or {}),
        title=str(raw.get("title", "partseg comparison")),
        store=str(raw.get("store") or ""),
        phantom=None if not phantom else _build(PhantomSpec, "phantom", phantom),
        folds=int(raw.get("folds", 0)),
        evaluation=_build(EvaluationSpec, "evaluation", raw.get("evaluation")),
        ensembles=tuple(_build(EnsembleSpec, "ensembles", e) for e in raw.get("ensembles") or []),
        cascades=tuple(_build(CascadeSpec, "cascades", c) for c in raw.get("cascades") or []),
    )
    _check(config)
    return config


def _merge_variant_overrides(raw: dict[str, Any], per_variant: Mapping[str, Any]) -> None:
    """Add ``quick: variants: {name: {dotted: value}}`` to those variants' overrides."""
    by_name = {v.get("name"): v for v in raw.get("variants") or [] if isinstance(v, dict)}
    for name, overrides in per_variant.items():
        if name not in by_name:
            raise ConfigError(f"compare config: quick.variants names unknown variant {name!r}")
        by_name[name].setdefault("overrides", {}).update(dict(overrides))


def _variant(raw: Any, index: int) -> Variant:
    if not isinstance(raw, Mapping) or not raw.get("name"):
        raise ConfigError(f"compare config: variants[{index}] needs a name")
    unknown = sorted(set(raw) - {"name", "overrides", "description"})
    if unknown:
        raise ConfigError(
            f"compare config: variants[{index}] has unknown key {unknown[0]!r} "
            "(use name, description, overrides)"
        )
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"variant {raw['name']}: overrides must map dotted keys to values")
    return Variant(str(raw["name"]), dict(overrides), str(raw.get("description", "")))


def _check(config: CompareConfig) -> None:
    names = config.names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"compare config: the name {duplicates[0]!r} is used twice")
    if config.folds == 1 or config.folds < 0:
        raise ConfigError(f"compare config: folds={config.folds}; use 0 or k >= 2")
    trained = {v.name for v in config.variants}
    for ensemble in config.ensembles:
        missing = [m for m in ensemble.members if m not in trained]
        if missing or not ensemble.members:
            raise ConfigError(f"ensemble {ensemble.name}: unknown members {missing}")
    for cascade in config.cascades:
        for member in (cascade.coarse, cascade.fine):
            if member not in trained:
                raise ConfigError(f"cascade {cascade.name}: unknown variant {member!r}")
    from partseg.config import config_from_dict

    for variant in config.variants:
        try:
            config_from_dict(experiment_dict(config, variant, store="(checked later)"))
        except ConfigError as err:
            raise ConfigError(f"variant {variant.name}: {err}") from err


def load_compare_config(
    path: str | os.PathLike, *, quick: bool = False, overrides: Sequence[str] = ()
) -> CompareConfig:
    """Read a compare config YAML (``yaml.safe_load``) and validate it.

    Raises:
        ConfigError: unreadable file, bad YAML, or an invalid key or value (named).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read compare config {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"compare config {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"compare config {path} must be a mapping")
    try:
        return compare_config_from_dict(raw, quick=quick, overrides=overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def experiment_dict(
    config: CompareConfig,
    variant: Variant,
    *,
    store: str | None = None,
    train_cases: Sequence[str] = (),
    val_cases: Sequence[str] = (),
) -> dict[str, Any]:
    """The raw experiment config of one variant: base, overrides, then the shared split."""
    raw = copy.deepcopy(dict(config.base))
    for key, value in variant.overrides.items():
        set_path(raw, key, value)
    data = raw.setdefault("data", {})
    if store is not None:
        data["store"] = store
    if train_cases:
        data["train_cases"] = list(train_cases)
        data["val_cases"] = list(val_cases)
        data["folds"] = 0
        data["fold"] = None
        data["val_fraction"] = 0.0 if not val_cases else data.get("val_fraction", 0.2)
    return raw


# --------------------------------------------------------------------------------------------
# Data: phantom store and split
# --------------------------------------------------------------------------------------------


def prepare_store(config: CompareConfig, out: Path, *, progress: bool = True) -> str:
    """The store URL: ``config.store``, else a phantom store built (once) under ``out/data``."""
    if config.store:
        return config.store
    if config.phantom is None:
        raise ConfigError(
            "compare config has neither store nor phantom: set store=PATH (an ingested "
            "store, see partseg ingest) or add a phantom section"
        )
    from partseg.phantom import write_phantoms
    from partseg.store.ingest import IngestSettings, ingest
    from partseg.store.zarrstore import store_state

    spec = config.phantom
    data = out / "data"
    store = data / "phantom.zarr"
    stamp = data / "phantom.json"
    wanted = json.dumps(dataclasses.asdict(spec), sort_keys=True)
    if stamp.is_file() and stamp.read_text() != wanted:
        raise ConfigError(
            f"{data} holds phantom data made with other settings ({stamp.read_text()}); "
            "use another --out or delete that folder"
        )
    write_text(stamp, wanted)
    raw = data / "phantom_raw"
    write_phantoms(raw, spec.cases, spec.shape, spec.seed, spec.kind, progress=progress)
    source = raw
    if spec.derived:
        source = data / "phantom_derived"
        derive_phantoms(raw, source, spec)
    if store_state(store) != "store" or len(_case_ids(store)) < spec.cases:
        names = ((1, "aneurysm"),) if spec.kind == "aneurysm" else ()
        ingest(source, store, IngestSettings(label_names=names), progress=progress)
    return str(store)


def _case_ids(store: Path) -> tuple[str, ...]:
    from partseg.store.zarrstore import open_store

    return open_store(store).case_ids


def derive_phantoms(raw: Path, out: Path, spec: PhantomSpec) -> None:
    """Rewrite phantom cases as an nnU-Net raw folder with the target and channels asked.

    The result (``dataset.json``, ``imagesTr/<id>_000c.nii.gz``, ``labelsTr/<id>.nii.gz``)
    names its classes, e.g. ``whole_tumor``, so reports read naturally.
    """
    import nibabel as nib

    from partseg.phantom import CHANNELS, case_files

    channels = list(spec.channels or CHANNELS[spec.kind])
    unknown = [c for c in channels if c not in CHANNELS[spec.kind]]
    if unknown:
        raise ConfigError(f"phantom.channels {unknown} are not channels of {spec.kind} phantoms")
    labels = {"background": 0, "whole_tumor": 1} if spec.target == "whole_tumor" else None
    if labels is None:
        labels = (
            {"background": 0, "necrotic": 1, "edema": 2, "enhancing": 4}
            if spec.kind == "brats"
            else {"background": 0, "aneurysm": 1}
        )
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    meta = {"channel_names": {str(i): n for i, n in enumerate(channels)}, "labels": labels,
            "file_ending": ".nii.gz"}  # fmt: skip
    write_text(out / "dataset.json", json.dumps(meta, indent=1))
    for folder in sorted(p for p in raw.iterdir() if p.is_dir()):
        case = folder.name
        done = out / "labelsTr" / f"{case}.nii.gz"
        if done.is_file():
            continue
        files = dict(zip([*CHANNELS[spec.kind], "seg"], case_files(folder, case, spec.kind),
                         strict=True))  # fmt: skip
        for i, name in enumerate(channels):
            shutil.copyfile(files[name], out / "imagesTr" / f"{case}_{i:04d}.nii.gz")
        seg = nib.load(files["seg"])
        label = np.asarray(seg.dataobj)
        if spec.target == "whole_tumor":
            label = (label > 0).astype(np.uint8)
        _save_nifti(done, label.astype(np.uint8), seg)


def _save_nifti(path: Path, array: np.ndarray, like: Any) -> None:
    import nibabel as nib

    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(nib.Nifti1Image(array, like.affine), tmp)


@dataclass(frozen=True)
class Split:
    """Held-out test cases and, per fold, the training and validation cases."""

    test: tuple[str, ...]
    folds: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # ((train, val), ...)


def make_split(case_ids: Sequence[str], config: CompareConfig) -> Split:
    """Draw the test cases, then one validation split or ``config.folds`` folds of the rest.

    Example:
        >>> cfg = compare_config_from_dict({"variants": [{"name": "a"}], "folds": 2})
        >>> split = make_split([f"c{i}" for i in range(8)], cfg)
        >>> len(split.test), len(split.folds), [len(v) for _, v in split.folds]
        (2, 2, [3, 3])
    """
    from partseg.train.splits import kfold_splits

    spec = config.evaluation
    ids = sorted(case_ids)
    missing = [c for c in spec.test_cases if c not in ids]
    if missing:
        raise ConfigError(f"evaluation.test_cases {missing} are not in the store")
    rng = np.random.default_rng(spec.split_seed)
    if spec.test_cases:
        test = sorted(spec.test_cases)
    else:
        n_test = min(len(ids) - 1, max(1, round(spec.test_fraction * len(ids))))
        test = sorted(ids[i] for i in rng.permutation(len(ids))[:n_test])
    rest = [c for c in ids if c not in test]
    if not rest:
        raise ConfigError("no training cases left after the test split; add cases")
    if config.folds:
        folds = kfold_splits(rest, config.folds, spec.split_seed)
        pairs = tuple((tuple(f["train"]), tuple(f["val"])) for f in folds)
    else:
        val_fraction = float(config.base.get("data", {}).get("val_fraction", 0.2))
        n_val = round(val_fraction * len(rest)) if len(rest) > 1 else 0
        n_val = min(len(rest) - 1, max(1 if val_fraction > 0 else 0, n_val))
        val = sorted(rest[i] for i in rng.permutation(len(rest))[:n_val])
        pairs = ((tuple(c for c in rest if c not in val), tuple(val)),)
    return Split(tuple(test), pairs)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def run_dir_of(out: Path, name: str, fold: int) -> Path:
    return out / "runs" / name / f"fold{fold}"


def _comparable(raw: Mapping[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(raw, default=list))
    for section, key in _VOLATILE:
        data.get(section, {}).pop(key, None)
    return data


def train_variant(
    config: CompareConfig,
    variant: Variant,
    fold: int,
    store: str,
    split: Split,
    out: Path,
    *,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Path:
    """Train (or resume, or skip when finished) one variant on one fold; returns the run dir.

    Raises:
        ConfigError: the run directory holds a run of a different config.
    """
    from partseg.config import config_from_dict
    from partseg.train.trainer import Trainer

    train_cases, val_cases = split.folds[fold]
    raw = experiment_dict(
        config, variant, store=store, train_cases=train_cases, val_cases=val_cases
    )
    raw.setdefault("train", {})["progress"] = progress and bool(raw["train"].get("progress", True))
    experiment = config_from_dict(raw)
    run_dir = run_dir_of(out, variant.name, fold)
    stored = run_dir / "config.yaml"
    if stored.is_file():
        previous = yaml.safe_load(stored.read_text()) or {}
        if _comparable(previous) != _comparable(experiment.to_dict()):
            raise ConfigError(
                f"{run_dir} holds a run of variant {variant.name} with another config; use "
                "another --out, or delete that folder to retrain it"
            )
    if (run_dir / "summary.json").is_file():
        log(f"{variant.name} fold {fold}: finished run found in {run_dir}, not retrained")
        return run_dir
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    log(f"{variant.name} fold {fold}: {'resuming' if resume else 'training'} in {run_dir}")
    cuda = _reset_cuda_peak(experiment.train.device)
    Trainer(experiment, run_dir, resume=resume, log=log).run()
    if cuda:
        import torch

        peak = torch.cuda.max_memory_allocated() / 2**20
        write_text(run_dir / "cost.json", json.dumps({"peak_memory_mb": peak}))
    return run_dir


def _reset_cuda_peak(device: str) -> bool:
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return False
    torch.cuda.reset_peak_memory_stats()
    return True


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl`` (empty when missing)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _best_value(run_dir: Path) -> float:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        return float(summary["best"]["value"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("-inf")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverlaySlice:
    """One slice of the overlay figure: case and Z index."""

    case_id: str
    z: int


def overlay_slices(store: Any, test: Sequence[str], count: int) -> list[OverlaySlice]:
    """The ``count`` slices shown: per test case in turn, the Z slice with most foreground."""
    from partseg.geometry import Box

    picks: list[OverlaySlice] = []
    for case_id in list(test)[: max(count, 0)]:
        case = store[case_id]
        _, label = case.read(Box.whole(case.shape))
        area = (label > 0).sum(axis=(1, 2))
        picks.append(OverlaySlice(case_id, int(np.argmax(area))))
    while len(picks) < count and picks:  # fewer test cases than slices: more slices per case
        first = picks[len(picks) % len(test)]
        case = store[first.case_id]
        _, label = case.read(Box.whole(case.shape))
        area = (label > 0).sum(axis=(1, 2)).astype(float)
        for p in picks:
            if p.case_id == first.case_id:
                area[max(0, p.z - 2) : p.z + 3] = -1
        picks.append(OverlaySlice(first.case_id, int(np.argmax(area))))
    return picks


@dataclass
class Predictor:
    """How to turn one test case into labels: a model on a partition, or a cascade."""

    name: str
    predict: Callable[[Any], tuple[np.ndarray, np.ndarray | None]]  # case -> (labels, probs)
    core: tuple[int, ...] | None
    parameters: int
    key: str  # changes when the checkpoints change


def model_predictor(name: str, run_dirs: Sequence[Path], spec: EvaluationSpec) -> Predictor:
    """Stitched minicube prediction of one run, or the ensemble of several."""
    import torch

    from partseg.infer.ensemble import EnsembleModel, check_members, ensemble_partition
    from partseg.infer.predictor import predict_case
    from partseg.infer.stitch import labels_from_probabilities
    from partseg.train.checkpoint import load_model, resolve_checkpoint

    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = [load_model(d, device=device) for d in run_dirs]
    if len(loaded) == 1:
        model, partition = loaded[0].model, loaded[0].partition
    else:
        check_members(loaded)
        _check_same_derived(name, loaded)
        model = EnsembleModel([m.model for m in loaded]).eval()
        partition = ensemble_partition([m.partition for m in loaded])
    layout = loaded[0].layout
    derive = loaded[0].derive  # the run's data.derived_channels (None without)

    def predict(case: Any) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            probs = predict_case(
                model, case, partition, layout, batch_size=spec.batch_size, device=device,
                blend=spec.blend, derive=derive,
            )  # fmt: skip  # (K, Z, Y, X)
        return labels_from_probabilities(probs), probs

    key = _checkpoint_key([resolve_checkpoint(d) for d in run_dirs])
    params = sum(int(m.model.num_parameters()) for m in loaded)
    return Predictor(name, predict, tuple(partition.core), params, key)


def _check_same_derived(name: str, loaded: Sequence[Any]) -> None:
    """Ensemble members see one input, so they must derive the same channels."""
    kinds = {tuple(m.derived_channels) for m in loaded}
    if len(kinds) > 1:
        raise ConfigError(
            f"ensemble {name}: its members were trained with different data.derived_channels "
            f"({sorted(list(k) for k in kinds)}); ensemble only variants with the same inputs"
        )


def cascade_predictor(spec: CascadeSpec, coarse: Path, fine: Path, ev: EvaluationSpec) -> Predictor:
    """The coarse-to-fine cascade of two trained runs."""
    import torch

    from partseg.infer.cascade import Stage, predict_cascade
    from partseg.train.checkpoint import load_model, resolve_checkpoint

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = load_model(coarse, device=device), load_model(fine, device=device)

    def predict(case: Any) -> tuple[np.ndarray, None]:
        with torch.no_grad():
            result = predict_cascade(
                Stage(a.model, a.partition, a.layout, a.derive),
                Stage(b.model, b.partition, b.layout, b.derive),
                case, voi_size=spec.voi, min_size=spec.min_size, batch_size=ev.batch_size,
                device=device,
            )  # fmt: skip
        return result.labels.astype(np.uint8), None

    key = _checkpoint_key([resolve_checkpoint(coarse), resolve_checkpoint(fine)])
    params = int(a.model.num_parameters()) + int(b.model.num_parameters())
    return Predictor(spec.name, predict, None, params, key)


def _checkpoint_key(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def evaluate_predictor(
    predictor: Predictor,
    store: Any,
    test: Sequence[str],
    slices: Sequence[OverlaySlice],
    spec: EvaluationSpec,
    cache: Path,
    *,
    progress: bool = True,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Score one predictor on the test cases (cached in ``cache``).

    Returns:
        The evaluation dict (``summary`` from :func:`partseg.metrics.summarize`, ``cases``,
        ``seam_index``, ``predict_seconds``) and the predicted overlay slices, (Y, X) uint8 each.
    """
    from tqdm import tqdm

    from partseg.geometry import Box
    from partseg.infer.postprocess import postprocess
    from partseg.infer.seams import seam_index
    from partseg.metrics import BRATS_CLASSES, BRATS_REGIONS, evaluate_case, summarize

    key = json.dumps(
        {"checkpoint": predictor.key, "test": list(test), "slices": [dataclasses.astuple(s)
         for s in slices], "spec": dataclasses.asdict(spec)}, sort_keys=True, default=list,
    )  # fmt: skip
    result_file, slices_file = cache / "evaluation.json", cache / "overlay.npz"
    if result_file.is_file() and slices_file.is_file():
        stored = json.loads(result_file.read_text())
        if stored.get("key") == key:
            with np.load(slices_file) as archive:
                return stored, [archive[f"arr_{i}"] for i in range(len(slices))]
    classes = tuple(store.classes)
    regions = dict(BRATS_REGIONS) if classes == BRATS_CLASSES else {}
    cases, seams, picked = {}, [], {}
    start = time.perf_counter()
    for case_id in tqdm(test, desc=f"evaluate {predictor.name}", unit="case", disable=not progress):
        case = store[case_id]
        labels, probs = predictor.predict(case)  # (Z, Y, X), (K, Z, Y, X) | None
        if spec.min_component_size > 1:
            labels = postprocess(labels, min_component_size=spec.min_component_size)
        _, gt = case.read(Box.whole(case.shape))
        cases[case_id] = evaluate_case(labels, gt, classes, case.spacing, regions)
        if spec.seam and probs is not None and predictor.core is not None:
            seams.append(seam_index(probs, predictor.core))
        for i, s in enumerate(slices):
            if s.case_id == case_id:
                picked[i] = labels[s.z]
    seconds = time.perf_counter() - start
    finite = [s for s in seams if np.isfinite(s)]
    result = {
        "key": key,
        "summary": summarize(cases),
        "cases": cases,
        "seam_index": float(np.mean(finite)) if finite else None,
        "predict_seconds": seconds / max(len(test), 1),
    }
    overlay = [picked[i].astype(np.uint8) for i in range(len(slices))]
    with atomic_path(slices_file, suffix=".npz") as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, *overlay)
    write_text(result_file, json.dumps(result, indent=1, default=float))
    return result, overlay


def scores_of(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Target -> metric -> mean over cases, for the metrics of :data:`REPORT_METRICS`."""
    scores: dict[str, dict[str, float]] = {}
    for section in ("classes", "regions"):
        for target, stats in summary.get(section, {}).items():
            scores[target] = {
                m: float(stats[m]["mean"]) if stats[m].get("n") else None
                for m in REPORT_METRICS
                if m in stats
            }
    return scores


def training_costs(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Time per epoch (mean of ``time_s``), total training time, memory."""
    costs: dict[str, float] = {}
    times = [float(r["time_s"]) for r in history if "time_s" in r]
    if times:
        costs["epoch_seconds"] = float(np.mean(times))
        costs["train_seconds"] = float(
            sum(times) + sum(float(r.get("val_time_s", 0.0)) for r in history)
        )
    cost_file = run_dir / "cost.json"
    if cost_file.is_file():
        costs.update(json.loads(cost_file.read_text()))
    else:
        saved = saved_activation_mb(run_dir)
        if saved is not None:
            costs["saved_activation_mb"] = saved
    return costs


def saved_activation_mb(run_dir: Path) -> float | None:
    """MiB autograd keeps for backward in one training step of the run's model and batch."""
    import torch

    from partseg.models.memory import saved_tensor_bytes
    from partseg.train.checkpoint import load_model

    try:
        loaded = load_model(run_dir)
    except Exception:  # a missing/odd checkpoint only loses this cost column
        return None
    batch = int(loaded.config.get("train", {}).get("batch_size", 1))
    size = loaded.layout.spatial_size(loaded.partition)
    channels = int(loaded.model_config.in_channels)
    model = loaded.model.train()
    x = torch.zeros((batch, channels, *size))
    return saved_tensor_bytes(model, x) / 2**20


# --------------------------------------------------------------------------------------------
# The whole comparison
# --------------------------------------------------------------------------------------------


@dataclass
class CompareOutcome:
    """What :func:`run_compare` produced."""

    report_dir: Path
    runs: list[Any]  # partseg.report.RunResult
    table: str  # the Markdown headline table


def run_compare(
    config: CompareConfig,
    out: str | os.PathLike,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> CompareOutcome:
    """Train every variant (and fold), score them on the same test cases, write the report.

    Example:
        >>> # outcome = run_compare(load_compare_config("configs/compare_brats.yaml"), "cmp")
        >>> # print(outcome.table)
    """
    from partseg.store.zarrstore import open_store

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store_url = prepare_store(config, out, progress=progress)
    store = open_store(store_url)
    split = make_split(store.case_ids, config)
    write_text(out / "split.json", json.dumps(dataclasses.asdict(split), indent=1))
    log(
        f"store {store_url}: {len(store.case_ids)} cases, {len(split.test)} held out for test; "
        f"{len(config.variants)} variant(s) x {len(split.folds)} fold(s)"
    )
    run_dirs = {
        (v.name, k): train_variant(config, v, k, store_url, split, out, log=log, progress=progress)
        for v in config.variants
        for k in range(len(split.folds))
    }
    slices = overlay_slices(store, split.test, config.evaluation.overlay_slices)
    results, overlays = [], {}
    for name, fold, predictor, costs, history in _predictors(config, run_dirs, split):
        cache = out / "runs" / name / f"fold{fold}" / "evaluation"
        evaluation, overlay = evaluate_predictor(
            predictor, store, split.test, slices, config.evaluation, cache, progress=progress
        )
        results.append(_run_result(name, fold, predictor, evaluation, costs, history, cache))
        if fold == 0:
            overlays[name] = overlay
    report_dir = write_compare_report(config, out, store, split, results, slices, overlays)
    from partseg.report import headline_table

    return CompareOutcome(report_dir, results, headline_table(results))


def _predictors(
    config: CompareConfig, run_dirs: Mapping[tuple[str, int], Path], split: Split
) -> list[tuple[str, int, Predictor, dict, list]]:
    items = []
    folds = range(len(split.folds))
    for variant in config.variants:
        for k in folds:
            run_dir = run_dirs[(variant.name, k)]
            history = read_history(run_dir)
            predictor = model_predictor(variant.name, [run_dir], config.evaluation)
            items.append((variant.name, k, predictor, training_costs(run_dir, history), history))
    for ensemble in config.ensembles:
        members = [run_dirs[(m, k)] for m in ensemble.members for k in folds]
        if ensemble.best:
            members = sorted(members, key=_best_value, reverse=True)[: ensemble.best]
        predictor = model_predictor(ensemble.name, members, config.evaluation)
        items.append((ensemble.name, 0, predictor, {}, []))
    for cascade in config.cascades:
        for k in folds:
            predictor = cascade_predictor(
                cascade, run_dirs[(cascade.coarse, k)], run_dirs[(cascade.fine, k)],
                config.evaluation,
            )  # fmt: skip
            items.append((cascade.name, k, predictor, {}, []))
    return items


def _run_result(
    name: str,
    fold: int,
    predictor: Predictor,
    evaluation: Mapping[str, Any],
    costs: Mapping[str, float],
    history: Sequence[Mapping[str, Any]],
    cache: Path,
) -> Any:
    from partseg.report import RunResult

    summary = evaluation["summary"]
    matrix = summary.get("confusion_matrix")
    all_costs = {
        "parameters": predictor.parameters,
        **costs,
        "predict_seconds": evaluation.get("predict_seconds"),
        "seam_index": evaluation.get("seam_index"),
    }
    return RunResult(
        variant=name,
        fold=fold,
        scores=scores_of(summary),
        costs=all_costs,
        confusion=None if matrix is None else tuple(tuple(int(v) for v in r) for r in matrix),
        history=tuple(history),
        run_dir=str(cache.parent),
    )


def class_counts(store: Any, case_ids: Sequence[str]) -> list[int]:
    """Voxels per class summed over ``case_ids`` (from the store's recorded counts)."""
    totals = [0] * len(store.classes)
    for case_id in case_ids:
        for cls, count in store[case_id].voxel_counts.items():
            totals[int(cls)] += int(count)
    return totals


def write_compare_report(
    config: CompareConfig,
    out: Path,
    store: Any,
    split: Split,
    results: Sequence[Any],
    slices: Sequence[OverlaySlice],
    overlays: Mapping[str, Sequence[np.ndarray]],
) -> Path:
    """Tables and figures of a comparison into ``out/report``."""
    from partseg import report as rep
    from partseg.geometry import Box

    report_dir = out / "report"
    classes = tuple(store.classes)
    figures: dict[str, str] = {}
    histories = {}
    for result in results:
        if result.history:
            histories.setdefault(result.variant, []).append(list(result.history))
    if histories:
        rep.plot_loss_curves(histories, report_dir / "loss_curves.png")
        figures["Training loss and validation Dice per epoch"] = "loss_curves.png"
    train_ids = sorted({c for train, val in split.folds for c in (*train, *val)})
    rep.plot_class_distribution(
        {"train": class_counts(store, train_ids), "test": class_counts(store, split.test)},
        classes,
        report_dir / "class_distribution.png",
    )
    figures["Class distribution of the training and test cases"] = "class_distribution.png"
    matrices = {r.variant: np.asarray(r.confusion) for r in results if r.fold == 0 and r.confusion}
    if matrices:
        rep.plot_confusion_matrices(matrices, classes, report_dir / "confusion.png")
        figures["Confusion matrices (rows: ground truth, normalised)"] = "confusion.png"
    if slices and overlays:
        images, truths = [], []
        show = _display_channel(store)
        for s in slices:
            case = store[s.case_id]
            box = Box((s.z, 0, 0), (1, *case.shape[1:]))
            image, label = case.read(box)
            images.append(image[show, 0])
            truths.append(label[0])
        columns = {"ground truth": truths, **{k: list(v) for k, v in overlays.items()}}
        titles = [f"{s.case_id} z={s.z}" for s in slices]
        rep.plot_overlays(images, columns, classes, report_dir / "overlays.png", row_titles=titles)
        figures["Predictions on the same test slices"] = "overlays.png"
    folds = len(split.folds)
    settings = {
        "store": store.url,
        "classes": ", ".join(classes),
        "test cases": f"{len(split.test)} held out ({', '.join(split.test)})",
        "training": f"{folds} fold(s); {len(split.folds[0][0])} training / "
        f"{len(split.folds[0][1])} validation cases per fold",
        "variants": "; ".join(
            f"{v.name}: {v.description or _describe(v.overrides)}" for v in config.variants
        ),
    }
    for e in config.ensembles:
        settings[f"ensemble {e.name}"] = e.description or f"mean of {', '.join(e.members)}"
    for c in config.cascades:
        settings[f"cascade {c.name}"] = c.description or f"{c.coarse} -> {c.voi}^3 VOIs -> {c.fine}"
    cleaned = ""
    if config.evaluation.min_component_size > 1:
        cleaned = f", components < {config.evaluation.min_component_size} voxels removed"
    notes = [
        "Scores are means over the test cases (stitched full-volume predictions, "
        f"blend={config.evaluation.blend}{cleaned}). Per-case values: "
        "`runs/<variant>/fold<k>/evaluation/evaluation.json`."
    ]
    rep.write_report(report_dir, results, title=config.title, settings=settings,
                     figures=figures, notes=notes)  # fmt: skip
    return report_dir


def _display_channel(store: Any) -> int:
    for name in ("flair", "t1ce", "tof"):
        if name in store.channels:
            return list(store.channels).index(name)
    return 0


def _describe(overrides: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the base config"
