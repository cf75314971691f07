"""The low-res -> full-res cascade: a store whose extra channels are a low-res run's prediction.

nnU-Net's ``3d_lowres`` -> ``3d_cascade_fullres``: a first network segments the scan resampled
to a coarse grid (2 mm: the whole tumour and its surroundings fit one box); a second network,
at full resolution, gets that segmentation, upsampled, as extra input channels, and refines its
boundaries. Here the first stage is any trained run (``configs/brats_cpu_lowres.yaml``) and the
second an ordinary variant trained on a *prior store*:

* :func:`write_prior_store` predicts every case of the coarse store with the coarse run (the
  seam-free ``exact`` mode), resamples the labels to the full-resolution case's grid through the
  original scan's grid (nearest; :func:`~partseg.experiments.evaluate.regrid_labels`) and writes
  the full-resolution image with one more channel per foreground class, ``prior_<class>``
  (1 inside the coarse prediction of that class, else 0), and the full-resolution labels.
* A compare config with ``prior: {run: RUN, store: COARSE_STORE}`` builds it (once, under
  ``OUT/data/prior.zarr``) from its store and trains and scores every variant on it
  (``model.in_channels`` = image channels + foreground classes).

The held-out cases get the coarse run's prediction, made without their labels: their scores
are the cascade's. The training cases get the coarse run's prediction of cases it trained on
(nnU-Net uses out-of-fold predictions of a 5-fold cross-validation instead), so the second
stage sees better priors in training than at test time; a coarse run that trained on a test case
is reported (its prior there is optimistic).

Example (needs a trained run and two stores, so it is not run as a test)::

    write_prior_store("runs/lowres", "brats_2mm.zarr", "brats.zarr", "prior.zarr")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partseg.errors import ConfigError
from partseg.experiments.evaluate import regrid_labels

PRIOR_PREFIX = "prior_"


def prior_channels(classes: Sequence[str]) -> list[str]:
    """The extra channel names: one per foreground class.

    Example:
        >>> prior_channels(["background", "necrotic", "edema"])
        ['prior_necrotic', 'prior_edema']
    """
    return [f"{PRIOR_PREFIX}{name}" for name in list(classes)[1:]]


def one_hot_prior(labels: np.ndarray, classes: int) -> np.ndarray:
    """(Z, Y, X) class ids -> (classes - 1, Z, Y, X) float32 indicator of each foreground class.

    Example:
        >>> one_hot_prior(np.array([[[0, 2, 1]]]), 3)[:, 0, 0].tolist()
        [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    """
    return np.stack([labels == k for k in range(1, classes)]).astype(np.float32)


def write_prior_store(
    run: str | os.PathLike,
    coarse_store: str,
    store: str,
    out: str | os.PathLike,
    *,
    batch_size: int = 2,
    log: Callable[[str], None] = print,
) -> str:
    """Write the prior store of ``store`` from ``run``'s predictions on ``coarse_store``.

    Done once: a complete prior store of the same run and stores is reused.

    Raises:
        ConfigError: the stores do not hold the same cases and classes, the run does not fit
            the coarse store, or ``out`` holds a prior store of another run.
    """
    from partseg.infer.pipeline import CasePredictor
    from partseg.infer.settings import PredictSettings
    from partseg.store.writer import create_store, store_state
    from partseg.store.zarrstore import open_store

    coarse, full = open_store(coarse_store), open_store(store)
    missing = [c for c in full.case_ids if c not in coarse]
    if missing or tuple(coarse.classes) != tuple(full.classes):
        raise ConfigError(
            f"prior.store {coarse.url} must hold the cases and classes of {full.url}: missing "
            f"{missing[:5]}; ingest both from the same source"
        )
    predictor = CasePredictor.from_checkpoints(
        [run], PredictSettings(batch_size=batch_size, nonzero_mask=True), log=log
    )
    predictor.check_store(coarse)
    recorded = {"run": predictor.key, "coarse_store": coarse.url, "store": full.url}
    out = Path(out)
    if store_state(out) == "store":
        existing = open_store(out)
        if existing.attrs.get("prior") != recorded:
            raise ConfigError(
                f"{out} holds a prior store of {existing.attrs.get('prior')}; delete it or use "
                "another output folder"
            )
        if existing.case_ids == full.case_ids:
            return str(out)
    classes = len(full.classes)
    index = {
        **{k: full.attrs[k] for k in ("classes", "label_mapping", "chunks", "ingest") if k in
           full.attrs},
        "channels": [*full.channels, *prior_channels(full.classes)],
        "dtype": "int16",
        "source": full.url,
        "prior": recorded,
        "case_ids": [],
    }  # fmt: skip
    writer = create_store(out, index, overwrite=store_state(out) == "store")
    for case_id in full.case_ids:
        case, low = full[case_id], coarse[case_id]
        labels = predictor.predict(low, probabilities=False).labels
        prior = one_hot_prior(regrid_labels(labels, low, case, classes), classes)
        image = np.concatenate([case.read_image(), prior])  # (C + K - 1, Z, Y, X)
        attrs = {k: v for k, v in case.attrs.items() if k != "chunk_files"}
        attrs["channels"] = index["channels"]
        writer.write_case(
            case_id, image, case.read_label(), attrs, _locations(case, classes),
            tuple(index.get("chunks") or case.shape), dtype="int16", channels_per_chunk=4,
        )  # fmt: skip
        log(f"prior store: {case_id} ({int(prior.sum())} voxels of coarse foreground)")
    writer.write_index({**writer.index(), "case_ids": list(full.case_ids)})
    return str(out)


def _locations(case: Any, classes: int) -> np.ndarray:
    """The case's stored class locations as (N, 4) rows (class, z, y, x)."""
    rows = [
        np.c_[np.full(len(loc), k), loc]
        for k in range(classes)
        if len(loc := case.class_locations(k))
    ]
    return np.concatenate(rows).astype(np.int32) if rows else np.zeros((0, 4), np.int32)


def leaked_test_cases(run: str | os.PathLike, coarse_store: Any, test: Sequence[str]) -> list[str]:
    """The test cases ``run`` trained on (its prior on them is optimistic), from its config."""
    from partseg.checkpoint import load_model
    from partseg.config import config_from_dict
    from partseg.train.splits import resolve_split

    loaded = load_model(run)
    data = config_from_dict(loaded.config).data
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent.parent
    split = resolve_split(data, coarse_store.case_ids, run_dir if data.folds else None)
    return [c for c in test if c in set(split["train"])]


def prior_note(leaked: Sequence[str]) -> str:
    """The report line about priors of test cases the coarse run trained on."""
    return (
        f"cascade: the low-res run trained on test case(s) {', '.join(leaked)}; their prior, "
        "hence their scores, are optimistic (hold the same cases out of both stages)"
    )


__all__: Sequence[str] = (
    "PRIOR_PREFIX",
    "leaked_test_cases",
    "one_hot_prior",
    "prior_channels",
    "prior_note",
    "write_prior_store",
)
