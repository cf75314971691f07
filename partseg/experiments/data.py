"""The data of a comparison: the store (or a phantom store built once) and the shared split."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partseg.atomic import write_json, write_text
from partseg.errors import ConfigError
from partseg.experiments.config import CompareConfig, PhantomSpec


def prepare_store(config: CompareConfig, out: Path, *, progress: bool = True) -> str:
    """The store URL: ``config.store``, else a phantom store built (once) under ``out/data``.

    Phantoms are ingested with the config's ``ingest:`` settings into ``phantom.zarr``; when
    those resample (``ingest.spacing``), the same phantoms are also ingested at their original
    resolution into ``phantom_full.zarr``, the reference the test cases are scored on
    (:func:`reference_store`).
    """
    if config.store:
        return config.store
    if config.phantom is None:
        raise ConfigError(
            "compare config has neither store nor phantom: set store=PATH (an ingested "
            "store, see partseg ingest) or add a phantom section"
        )
    from partseg.phantom import GENERATOR_VERSION, write_phantoms
    from partseg.store.ingest import IngestSettings, ingest
    from partseg.store.writer import store_state

    spec = config.phantom
    data = out / "data"
    store = data / "phantom.zarr"
    stamp = data / "phantom.json"
    # the generator's version too: a phantom kind that changes makes other data for one spec
    wanted = json.dumps({**dataclasses.asdict(spec), "generator": GENERATOR_VERSION,
                         **({"ingest": config.ingest} if config.ingest else {})},
                        sort_keys=True)  # fmt: skip
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
    names = ((1, "aneurysm"),) if spec.kind == "aneurysm" else ()
    settings = IngestSettings(label_names=names, **_ingest_kwargs(config.ingest))
    stores = [(store, settings)]
    if settings.spacing is not None:
        stores.append((data / "phantom_full.zarr", dataclasses.replace(settings, spacing=None)))
    for path, chosen in stores:
        if store_state(path) != "store" or len(_case_ids(path)) < spec.cases:
            ingest(source, path, chosen, progress=progress)
    return str(store)


def _ingest_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def reference_store(config: CompareConfig, out: Path) -> str | None:
    """Where the test cases are scored when that is not the compared store (else None).

    ``evaluation.reference_store`` when set; else, for phantoms resampled by ``ingest.spacing``,
    their original-resolution store ``out/data/phantom_full.zarr``.
    """
    if config.evaluation.reference_store:
        return config.evaluation.reference_store
    if not config.store and config.phantom is not None and config.ingest.get("spacing"):
        return str(out / "data" / "phantom_full.zarr")
    return None


def _case_ids(store: Path) -> tuple[str, ...]:
    from partseg.store.zarrstore import open_store

    return open_store(store).case_ids


def derive_phantoms(raw: Path, out: Path, spec: PhantomSpec) -> None:
    """Rewrite phantom cases as an nnU-Net raw folder with the target and channels asked.

    The result (``dataset.json``, ``imagesTr/<id>_000c.nii.gz``, ``labelsTr/<id>.nii.gz``)
    names its classes, e.g. ``whole_tumor``, so reports read naturally.
    """
    import nibabel as nib

    from partseg.infer.export import save_nifti
    from partseg.phantom import BRATS_KINDS, CHANNELS, case_files

    channels = list(spec.channels or CHANNELS[spec.kind])
    unknown = [c for c in channels if c not in CHANNELS[spec.kind]]
    if unknown:
        raise ConfigError(f"phantom.channels {unknown} are not channels of {spec.kind} phantoms")
    labels = {"background": 0, "whole_tumor": 1} if spec.target == "whole_tumor" else None
    if labels is None:
        labels = (
            {"background": 0, "necrotic": 1, "edema": 2, "enhancing": 4}
            if spec.kind in BRATS_KINDS
            else {"background": 0, "aneurysm": 1}
        )
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    meta = {"channel_names": {str(i): n for i, n in enumerate(channels)}, "labels": labels,
            "file_ending": ".nii.gz"}  # fmt: skip
    write_json(out / "dataset.json", meta)
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
        label = np.asarray(seg.dataobj)  # (X, Y, Z) as stored
        if spec.target == "whole_tumor":
            label = (label > 0).astype(np.uint8)
        save_nifti(done, label.astype(np.uint8).transpose(2, 1, 0), seg.affine)  # takes (Z, Y, X)


@dataclass(frozen=True)
class Split:
    """Held-out test cases and, per fold, the training and validation cases."""

    test: tuple[str, ...]
    folds: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # ((train, val), ...)


def make_split(case_ids: Sequence[str], config: CompareConfig) -> Split:
    """Draw the test cases, then one validation split or ``config.folds`` folds of the rest.

    Example:
        >>> from partseg.experiments import compare_config_from_dict
        >>> cfg = compare_config_from_dict({"variants": [{"name": "a"}], "folds": 2})
        >>> split = make_split([f"c{i}" for i in range(8)], cfg)
        >>> len(split.test), len(split.folds), [len(v) for _, v in split.folds]
        (2, 2, [3, 3])
    """
    from partseg.train.splits import drawn_val_count, kfold_splits

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
        data = config.base.get("data", {})
        n_val = drawn_val_count(
            len(rest), float(data.get("val_fraction", 0.2)), int(data.get("max_val_cases", 0))
        )
        val = sorted(rest[i] for i in rng.permutation(len(rest))[:n_val])
        pairs = ((tuple(c for c in rest if c not in val), tuple(val)),)
    return Split(tuple(test), pairs)
