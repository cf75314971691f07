"""The compare config: a base experiment, its variants, ensembles and cascades.

See :mod:`partseg.experiments` for the YAML keys. Every variant's experiment config is built
with :func:`experiment_dict` (base, then the variant's overrides, then the shared split). A
variant's override with a dotted key sets that value; a section in nested form
(``model: {base_width: 8}``, also what ``variants.1.overrides.model.base_width=8`` on the
command line makes) merges into the base's section (:func:`partseg.config.dotted_items`).

The sections' dataclasses (phantom, evaluation, variants, ensembles, cascades) and the checks
of ``ingest``, ``prior`` and ``budget`` are in :mod:`partseg.experiments.specs`.

A recipe is also a training config: :func:`load_training_config` gives ``partseg plan``,
``train`` and ``cv`` one variant's experiment config; :func:`select_variants` keeps the
variants ``partseg compare --variants`` names.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partseg.config import (
    ExperimentConfig,
    config_from_dict,
    dotted_items,
    load_config,
    parse_override,
    read_yaml_mapping,
    set_dotted,
    set_path,
)
from partseg.config.schema import check_type
from partseg.errors import ConfigError
from partseg.experiments.specs import (
    CascadeSpec,
    EnsembleSpec,
    EvaluationSpec,
    PhantomSpec,
    Variant,
    budget_section,
    build_spec,
    ingest_section,
    prior_section,
)
from partseg.names import check_name


@dataclass(frozen=True)
class CompareConfig:
    """A validated compare config; see the module docstring for the YAML keys."""

    variants: tuple[Variant, ...]
    base: Mapping[str, Any] = field(default_factory=dict)
    title: str = "partseg comparison"
    store: str = ""
    phantom: PhantomSpec | None = None
    ingest: Mapping[str, Any] = field(default_factory=dict)
    prior: Mapping[str, str] = field(default_factory=dict)
    folds: int = 0
    budget: str | float = ""
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    ensembles: tuple[EnsembleSpec, ...] = ()
    cascades: tuple[CascadeSpec, ...] = ()
    only_folds: tuple[int, ...] = ()  # set by select_folds (``compare --fold``), not by YAML

    @property
    def fold_indices(self) -> tuple[int, ...]:
        """The folds this comparison trains and scores: all of them unless some were selected.

        Example:
            >>> cfg = compare_config_from_dict({"variants": [{"name": "a"}], "folds": 3})
            >>> cfg.fold_indices, select_folds(cfg, [2])[0].fold_indices
            ((0, 1, 2), (2,))
        """
        return self.only_folds or tuple(range(max(self.folds, 1)))

    @property
    def names(self) -> list[str]:
        return (
            [v.name for v in self.variants]
            + [e.name for e in self.ensembles]
            + [c.name for c in self.cascades]
        )


_TOP_KEYS = (
    "title", "store", "phantom", "ingest", "prior", "folds", "budget", "evaluation", "base",
    "variants",
    "ensembles", "cascades", "quick", "description",
)  # fmt: skip


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
        phantom=None if not phantom else build_spec(PhantomSpec, "phantom", phantom),
        ingest=ingest_section(raw.get("ingest")),
        prior=prior_section(raw.get("prior")),
        folds=check_type("folds", raw.get("folds", 0), int),
        budget=budget_section(raw.get("budget")),
        evaluation=build_spec(EvaluationSpec, "evaluation", raw.get("evaluation")),
        ensembles=tuple(
            build_spec(EnsembleSpec, "ensembles", e) for e in raw.get("ensembles") or []
        ),
        cascades=tuple(build_spec(CascadeSpec, "cascades", c) for c in raw.get("cascades") or []),
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
    for name in names:  # each becomes a folder, OUT/runs/<name>
        check_name(name, "compare config: the variant/ensemble/cascade name", ConfigError)
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
    raw = read_yaml_mapping(path, "compare config")
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
    """The raw experiment config of one variant: base, overrides, the budget, then the split.

    The compare config's ``budget`` is every variant's ``train.budget`` (it wins over the
    variants' own), so every variant trains for the same wall time.
    """
    raw = copy.deepcopy(dict(config.base))
    for entry, entry_value in variant.overrides.items():
        for key, value in dotted_items(entry, entry_value):
            set_path(raw, key, value)
    if config.budget:
        raw.setdefault("train", {})["budget"] = config.budget
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


def _unknown(kind: str, name: str, names: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(
        f"{kind} {name!r} is not in this recipe; {hint}choose from: {', '.join(names)}"
    )


def pick_variant(config: CompareConfig, name: str | None) -> Variant:
    """The variant called ``name``; the only variant when ``name`` is None.

    Raises:
        ConfigError: several variants and no name, or an unknown name (the message lists them).
    """
    names = [v.name for v in config.variants]
    if name is None:
        if len(names) == 1:
            return config.variants[0]
        raise ConfigError(
            f"the recipe has {len(names)} variants: pass --variant NAME, one of: {', '.join(names)}"
        )
    if name not in names:
        combined = {e.name for e in config.ensembles} | {c.name for c in config.cascades}
        if name in combined:
            raise ConfigError(
                f"{name!r} combines trained variants (an ensemble or cascade); train one of its "
                f"members with --variant, one of: {', '.join(names)}"
            )
        raise _unknown("variant", name, names)
    return config.variants[names.index(name)]


def load_training_config(
    path: str | os.PathLike, overrides: Sequence[str] = (), *, variant: str | None = None
) -> tuple[ExperimentConfig, str | None]:
    """The experiment config of a training config, or of one variant of a recipe.

    A YAML file with ``variants`` is a recipe (a compare config): the chosen variant's
    experiment is the base with its overrides (:func:`experiment_dict`), the recipe's ``store``
    as ``data.store``; ``overrides`` then apply to that experiment (``train.epochs=5``).

    Args:
        path: a training config or a recipe.
        overrides: dotted ``section.key=value`` overrides of the experiment.
        variant: the recipe's variant (may be omitted when it has one); None for a training
            config.

    Returns:
        The validated config and the variant's name (None for a training config).

    Raises:
        ConfigError: a bad file, key or value; several variants and none chosen; ``variant``
            given for a training config.

    Example:
        >>> config, name = load_training_config("configs/brats_3d_context.yaml",
        ...                                     variant="3d_context_dice")
        >>> name, config.partition.margin, config.loss.name
        ('3d_context_dice', (10, 10, 10), 'dice')
    """
    path = Path(path)
    raw = read_yaml_mapping(path)
    if "variants" not in raw:
        if variant is not None:
            raise ConfigError(
                f"{path} is a training config, not a recipe with variants: drop --variant"
            )
        return load_config(path, overrides), None
    try:
        recipe = compare_config_from_dict(raw)
        chosen = pick_variant(recipe, variant)
        experiment = experiment_dict(recipe, chosen, store=recipe.store or None)
        for override in overrides:
            set_dotted(experiment, override)
        return config_from_dict(experiment), chosen.name
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def select_variants(config: CompareConfig, names: Sequence[str]) -> tuple[CompareConfig, list[str]]:
    """Keep the named variants (an ensemble's or cascade's name brings its members).

    Ensembles and cascades whose members are all kept stay; the others are left out, each with
    a note saying why.

    Returns:
        The reduced config and the notes.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones).

    Example:
        >>> cfg = compare_config_from_dict({"variants": [{"name": "a"}, {"name": "b"}],
        ...                                 "ensembles": [{"name": "ab", "members": ["a", "b"]}]})
        >>> kept, notes = select_variants(cfg, ["a"])
        >>> [v.name for v in kept.variants], notes
        (['a'], ["ensemble 'ab' left out: it needs b, not selected"])
    """
    combined = {e.name: e.members for e in config.ensembles}
    combined |= {c.name: (c.coarse, c.fine) for c in config.cascades}
    wanted: set[str] = set()
    for name in names:
        if name not in config.names:
            raise _unknown("--variants name", name, config.names)
        wanted |= set(combined.get(name, (name,))) | {name}
    variants = tuple(v for v in config.variants if v.name in wanted)
    kept = {v.name for v in variants}
    notes = []

    def keep(kind: str, name: str, members: Sequence[str]) -> bool:
        missing = [m for m in members if m not in kept]
        if missing:
            notes.append(f"{kind} {name!r} left out: it needs {', '.join(missing)}, not selected")
        return not missing

    ensembles = tuple(e for e in config.ensembles if keep("ensemble", e.name, e.members))
    cascades = tuple(c for c in config.cascades if keep("cascade", c.name, (c.coarse, c.fine)))
    selected = dataclasses.replace(
        config, variants=variants, ensembles=ensembles, cascades=cascades
    )
    return selected, notes


def select_folds(config: CompareConfig, folds: Sequence[int]) -> tuple[CompareConfig, list[str]]:
    """Keep some folds of a cross-validated comparison: one job per fold, as nnU-Net trains them.

    A rerun without a selection in the same output folder resumes the folds already trained and
    reports over all. Ensembles pool every fold's models, so they are left out (with a note)
    unless every fold is kept.

    Returns:
        The reduced config and the notes.

    Raises:
        ConfigError: no ``folds: K`` to select from, or a fold outside 0..K-1.

    Example:
        >>> cfg = compare_config_from_dict({"variants": [{"name": "a"}], "folds": 3,
        ...                                 "ensembles": [{"name": "e", "members": ["a"]}]})
        >>> kept, notes = select_folds(cfg, [1])
        >>> kept.fold_indices, kept.names, notes
        ((1,), ['a'], ["ensemble 'e' left out: it pools every fold, and only fold 1 of 3 runs"])
    """
    if config.folds < 2:
        raise ConfigError("--fold selects folds of a cross-validation: give --folds K (K >= 2)")
    wrong = [k for k in folds if not 0 <= k < config.folds]
    if wrong or not folds:
        raise ConfigError(
            f"--fold {wrong[0] if wrong else '(none)'}: the {config.folds} folds are numbered "
            f"0 to {config.folds - 1}"
        )
    kept = tuple(sorted(set(folds)))
    if len(kept) == config.folds:
        return config, []
    shown = f"fold{'s' if len(kept) > 1 else ''} {', '.join(map(str, kept))} of {config.folds}"
    notes = [
        f"ensemble {e.name!r} left out: it pools every fold, and only {shown} "
        f"run{'' if len(kept) > 1 else 's'}"
        for e in config.ensembles
    ]
    return dataclasses.replace(config, only_folds=kept, ensembles=()), notes
