"""The sections of a compare config: phantoms, evaluation, variants, ensembles, cascades, and
the checks of its ``ingest``, ``prior`` and ``budget`` entries (see :mod:`partseg.experiments`).

Example:
    >>> build_spec(EnsembleSpec, "ensembles", {"name": "e", "members": ["a", "b"]}).members
    ('a', 'b')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from partseg.errors import ConfigError
from partseg.metrics import DEFAULT_HD95, HD95_CONVENTIONS


@dataclass(frozen=True)
class PhantomSpec:
    """Synthetic data a compare run builds when no store is given.

    Attributes:
        kind: ``"brats"`` (realistic), ``"brats-simple"`` or ``"aneurysm"`` (see
            :mod:`partseg.phantom`).
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
        from partseg.phantom.cases import BRATS_KINDS, KINDS

        if self.kind not in KINDS:
            raise ConfigError(f"phantom.kind={self.kind!r}: use one of {', '.join(KINDS)}")
        if self.target not in ("labels", "whole_tumor"):
            raise ConfigError(f"phantom.target={self.target!r}: use labels or whole_tumor")
        if self.target == "whole_tumor" and self.kind not in BRATS_KINDS:
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
        partition: prediction mode (``exact``: the layer-wise engine, equal to whole-volume
            inference; ``grid``: minicubes, for blends; ``none``): see
            :mod:`partseg.infer.modes`.
        blend: stitching mode of ``grid`` (``crop`` | ``average`` | ``gaussian`` | ``hann``).
        overlap: for blends, how much neighbouring predicted regions overlap: a fraction of
            the core (float) or even voxels (int); None: 0.5 for blends (see
            :mod:`partseg.infer.blends`).
        min_component_size: remove predicted components smaller than this (0: keep all).
        nonzero_mask: set predictions outside the head's nonzero mask to background (see
            :func:`partseg.infer.postprocess.case_nonzero_mask`).
        reference_store: a store of the same cases at their original resolution: predictions
            are resampled to its grid (nearest) and scored against its labels, so a variant
            trained on a resampled store (``ingest.spacing``) is scored like the others. Empty:
            the phantom store at the original resolution when ``ingest.spacing`` resamples
            phantoms, else the compared store itself.
        overlay_slices: slices shown in the overlay figure.
        seam: compute the seam index of each stitched prediction.
        batch_size: minicubes per forward pass at prediction.
        hd95_convention: ``max_directed`` (the larger of the two directed 95th percentiles:
            MONAI, the ADAM challenge) or ``pooled`` (MedPy); see :mod:`partseg.metrics`.
        out_of_fold: with ``folds`` > 1, also score every fold's validation cases with that
            fold's model: each training case once, unseen (:mod:`partseg.report.crossval`),
            the cases a paired test between variants can rest on when the test set is small.
    """

    test_fraction: float = 0.25
    test_cases: tuple[str, ...] = ()
    split_seed: int = 0
    partition: str = "exact"
    blend: str = "crop"
    overlap: float | int | None = None
    min_component_size: int = 0
    nonzero_mask: bool = False
    reference_store: str = ""
    overlay_slices: int = 3
    seam: bool = True
    batch_size: int = 2
    hd95_convention: str = DEFAULT_HD95
    out_of_fold: bool = True

    def __post_init__(self) -> None:
        from partseg.infer.blends import check_overlap  # loads no torch
        from partseg.infer.settings import PredictSettings

        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"evaluation.test_fraction={self.test_fraction}: must lie in (0, 1)")
        # checked when the compare config is loaded, not after every variant has trained
        check_overlap(
            self.blend, self.overlap, key="evaluation.overlap", blend_key="evaluation.blend"
        )
        PredictSettings(mode=self.partition, blend=self.blend, overlap=self.overlap)
        HD95_CONVENTIONS.check(self.hd95_convention, key="evaluation.hd95_convention")


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


def build_spec(cls: type, name: str, values: Any) -> Any:
    """One section of a compare config: keys and value types checked as in a training config
    (:func:`partseg.config.schema.build_section`), so ``evaluation.batch_size=two`` is refused
    when the config is loaded, not after every variant has trained."""
    from partseg.config.schema import build_section

    return build_section(name, cls, values)


def ingest_section(values: Any) -> dict[str, Any]:
    """The ``ingest:`` section (phantom stores only), checked by building the settings."""
    if not values:
        return {}
    from partseg.store.ingest import IngestSettings

    settings = build_spec(IngestSettings, "ingest", values)
    given = {k: getattr(settings, k) for k in values}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}


def prior_section(values: Any) -> dict[str, str]:
    """The ``prior:`` section of a cascade's second stage: ``run`` and ``store`` (both or none).

    ``run`` is the low-resolution run (a run folder or checkpoint) whose prediction becomes the
    prior channels, ``store`` the store it predicts from (see :mod:`partseg.experiments.prior`).
    """
    if not values:
        return {}
    if not isinstance(values, Mapping) or set(values) - {"run", "store"}:
        raise ConfigError(f"compare config: prior takes run and store, got {values!r}")
    run, store = str(values.get("run") or ""), str(values.get("store") or "")
    if bool(run) != bool(store):
        raise ConfigError(
            "compare config: prior needs both run (the low-res run) and store (the store it "
            f"predicts from), got run={run!r} store={store!r}"
        )
    return {"run": run, "store": store} if run else {}


def budget_section(value: Any) -> str | float:
    """The compare config's ``budget`` (checked), or ``""`` for none."""
    if value in (None, "", 0):
        return ""
    from partseg.durations import parse_duration

    try:
        parse_duration(value)
    except ConfigError as err:
        raise ConfigError(f"compare config: {err}") from None
    return value if isinstance(value, str) else float(value)
