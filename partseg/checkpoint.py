"""Checkpoints: atomic save, safe load, and a model rebuilt with its geometry.

Training writes checkpoints and inference reads them, so the file format lives below both
(``partseg.train`` and ``partseg.infer`` import it, never each other for it).

A checkpoint is a plain dict of tensors and primitives, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code runs). It carries what inference needs to
reproduce training's geometry and input: the model config, the partition (core and margins) and
the input layout (2D/3D, slice axis), plus the classes, channels, label mapping and ingest
settings of the store it was trained on.

Payload keys: ``format`` (``"partseg-checkpoint"``), ``version``, ``model_config``,
``model_state``, ``partition``, ``layout``, ``classes``, ``channels``, ``label_mapping``,
``ingest`` (the store's recorded ingest settings, ``IngestSettings.recorded()``; absent in older
checkpoints), ``regions`` (the store's region-based labels in class ids, or None:
:mod:`partseg.store.regions`), ``config``; training state adds ``optimizer``, ``scaler``,
``scheduler``, ``loss_state``, ``epoch``, ``step``, ``rng``, ``sampler``, ``metrics``, ``best``,
``budget`` (the plan of a ``train.budget`` run, else None; absent in older checkpoints).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ck.pt"
    >>> save_checkpoint(path, {"format": FORMAT, "version": VERSION, "epoch": 3})
    >>> load_checkpoint(path)["epoch"]
    3
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from partseg.atomic import atomic_path
from partseg.errors import CheckpointError, ConfigError
from partseg.geometry import Partition
from partseg.names import check_shape
from partseg.store.regions import Regions

if TYPE_CHECKING:
    from partseg.channels import Derive

FORMAT = "partseg-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, then rename).

    Raises:
        CheckpointError: the folder is not writable or the disk is full; the previous file at
            ``path``, if any, is left intact.
    """
    try:
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise CheckpointError(
            f"cannot write checkpoint {path}: {err.strerror or err}; the previous checkpoint, if "
            "any, is kept; free disk space or choose a writable run directory (--out)"
        ) from err


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Map a run directory to its best (else last) checkpoint; a file maps to itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate
        hint = (
            "it is a cross-validation folder: name one fold's run (e.g. "
            f"{next(iter(fold_runs(path).values()))})"
            if fold_runs(path)
            else "pass a run directory written by `partseg train` or a .pt file"
        )
        raise CheckpointError(
            f"{path} is a directory without checkpoints/best.pt or checkpoints/last.pt; {hint}"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


_FOLD = re.compile(r"^fold_?(\d+)$")


def fold_runs(path: str | os.PathLike) -> dict[int, Path]:
    """The fold run directories of a cross-validation folder, by fold number.

    ``partseg cv --out DIR`` writes ``DIR/fold_K``; a compare writes ``OUT/runs/VARIANT/foldK``.
    A run directory (it has ``checkpoints/``) or a file has no folds.

    Example:
        >>> import tempfile, pathlib
        >>> cv = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("fold_1", "fold_0", "plots"):
        ...     (cv / name).mkdir()
        >>> {k: p.name for k, p in fold_runs(cv).items()}
        {0: 'fold_0', 1: 'fold_1'}
    """
    path = Path(path)
    if not path.is_dir() or (path / "checkpoints").is_dir():
        return {}
    found = {}
    for child in path.iterdir():
        match = _FOLD.match(child.name)
        if match and child.is_dir() and not child.is_symlink():
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def expand_models(
    paths: Sequence[str | os.PathLike], folds: Sequence[int] | None = None
) -> list[Path]:
    """The models to predict with: run directories and checkpoint files as given, and a
    cross-validation folder as its folds' runs (an ensemble), all of them or ``folds`` only
    (nnU-Net's ``-f``).

    Raises:
        CheckpointError: a selected fold is missing or has no checkpoint yet.
        ConfigError: ``folds`` given but no path is a cross-validation folder.

    Example:
        >>> import tempfile, pathlib
        >>> cv = pathlib.Path(tempfile.mkdtemp())
        >>> for k in range(3):
        ...     save_checkpoint(cv / f"fold_{k}" / "checkpoints" / "last.pt", {"epoch": k})
        >>> [p.name for p in expand_models([cv], folds=[0, 2])]
        ['fold_0', 'fold_2']
    """
    models: list[Path] = []
    expanded = False
    for path in map(Path, paths):
        runs = fold_runs(path)
        if not runs:
            models.append(path)
            continue
        expanded = True
        wanted = list(runs) if folds is None else list(dict.fromkeys(folds))
        missing = [k for k in wanted if k not in runs]
        if missing:
            raise CheckpointError(
                f"{path} has no fold {', '.join(map(str, missing))} (it has folds "
                f"{', '.join(map(str, runs))}); choose --fold among them"
            )
        for k in wanted:
            try:
                resolve_checkpoint(runs[k])
            except CheckpointError:
                raise CheckpointError(
                    f"fold {k} of {path} has no checkpoint yet ({runs[k]}): finish the "
                    "cross-validation (rerun `partseg cv`, it resumes) or leave the fold out "
                    "with --fold"
                ) from None
            models.append(runs[k])
    if folds is not None and not expanded:
        raise ConfigError(
            "--fold selects folds of a cross-validation folder (partseg cv --out DIR, or a "
            "compare's runs/VARIANT); none of the models given is one: "
            + ", ".join(map(str, paths))
        )
    return models


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True``.

    Raises:
        CheckpointError: unreadable, truncated, or not a partseg checkpoint.
    """
    path = resolve_checkpoint(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise CheckpointError(
            f"cannot read checkpoint {path}: {err}; the file is truncated, corrupt or not a "
            "partseg checkpoint (re-run training or pick checkpoints/last.pt)"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a partseg checkpoint (no format={FORMAT!r} key)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload['version']}, newer than this partseg "
            f"understands ({VERSION}); upgrade partseg"
        )
    return payload


def partition_to_dict(partition: Partition) -> dict[str, list[int]]:
    """The JSON/checkpoint form of a partition (notes are not kept)."""
    return {
        "core": list(partition.core),
        "margin_before": list(partition.margin_before),
        "margin_after": list(partition.margin_after),
        "stride": list(partition.stride),
    }


def partition_from_dict(data: dict[str, Any]) -> Partition:
    """Inverse of :func:`partition_to_dict`."""
    return Partition(
        core=check_shape(data["core"], "the checkpoint's partition core"),
        margin_before=check_shape(
            data["margin_before"], "the checkpoint's margin", allow_zero=True
        ),
        margin_after=check_shape(data["margin_after"], "the checkpoint's margin", allow_zero=True),
        stride=check_shape(data["stride"], "the checkpoint's stride"),
    )


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a checkpoint, in eval mode, with the geometry it was trained with.

    ``derived_channels`` is the run's ``data.derived_channels`` (e.g. ``("sobel:0",)``);
    :attr:`derive` rebuilds the callable the predictor applies to every input box, so the
    network sees the channels it was trained on. ``ingest`` holds the training store's
    recorded ingest settings (None for checkpoints written before they were recorded).
    ``regions`` is set for a model trained on region-based labels: one sigmoid output per region,
    labels by nnU-Net's rule (:mod:`partseg.store.regions`).
    """

    model: torch.nn.Module
    model_config: Any
    partition: Partition
    layout: Any
    classes: tuple[str, ...]
    channels: tuple[str, ...]
    label_mapping: dict[int, int]
    config: dict[str, Any]
    path: Path
    derived_channels: tuple[str, ...] = ()
    ingest: dict[str, Any] | None = None
    regions: Regions | None = None

    @property
    def derive(self) -> Derive | None:
        """The derived-channel function (C, *box) -> (C + n, *box), or None."""
        from partseg.channels import build_derive

        return build_derive(self.derived_channels)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model stored in a checkpoint or run directory, ready for inference.

    Raises:
        CheckpointError: unreadable checkpoint, or weights that do not fit the stored config.
    """
    from partseg.channels import build_derive
    from partseg.dataset import InputLayout
    from partseg.models import ModelConfig, build_model

    resolved = resolve_checkpoint(path)
    payload = load_checkpoint(resolved, map_location=device)
    try:
        model_config = ModelConfig(**payload["model_config"])
        model = build_model(model_config)
        model.load_state_dict(payload["model_state"])
        partition = partition_from_dict(payload["partition"])
        layout = InputLayout(**payload.get("layout", {}))
        config = dict(payload.get("config", {}))
        derived = tuple(config.get("data", {}).get("derived_channels", ()))
        build_derive(derived)  # a name this partseg does not know -> CheckpointError below
        regions = Regions.from_json(payload.get("regions"))
        mapping = {int(k): int(v) for k, v in payload.get("label_mapping", {}).items()}
    except (KeyError, TypeError, RuntimeError, ValueError, AttributeError, ConfigError) as err:
        raise CheckpointError(
            f"checkpoint {resolved} does not fit this partseg version: {err}"
        ) from err
    model.to(device).eval()
    ingest = payload.get("ingest")
    return LoadedModel(
        model=model,
        model_config=model_config,
        partition=partition,
        layout=layout,
        classes=tuple(payload.get("classes", ())),
        channels=tuple(payload.get("channels", ())),
        label_mapping=mapping,
        config=config,
        path=resolved,
        derived_channels=derived,
        ingest=dict(ingest) if isinstance(ingest, dict) else None,
        regions=regions,
    )


def checkpoint_key(paths: Sequence[str | os.PathLike]) -> str:
    """A key of checkpoints (resolved path, size, mtime) that changes when one is rewritten.

    Run directories resolve to their best (else last) checkpoint first.
    """
    digest = hashlib.sha256()
    for path in map(resolve_checkpoint, paths):
        stat = path.stat()
        digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]
