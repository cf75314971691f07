"""``partseg predict MODEL... --store STORE | --input DIR --out OUT``: segment whole cases."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg predict``."""
    p = subparsers.add_parser(
        "predict",
        help="segment cases by minicubes with one model or an ensemble, stitched seam-free",
        description="Run the training minicube grid over each case, stitch the cores (each "
        "output chunk written once), post-process and export labels in the original geometry "
        "and label values as OUT/<case>.nii.gz.",
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="run directory (uses checkpoints/best.pt, else last.pt) or checkpoint file; "
        "several: an ensemble averaging their probabilities",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", help="partseg store (path or fsspec URL) holding the cases")
    source.add_argument(
        "--input",
        metavar="NIFTI_DIR",
        help="raw folder (BraTS / MSD layout); ingested into a temporary store first",
    )
    p.add_argument("--out", required=True, help="output folder, created if missing")
    p.add_argument("--cases", nargs="+", default=None, help="case ids (default: every case)")
    p.add_argument(
        "--margin",
        default=None,
        help="context margin per side in voxels, or 'exact' (half the receptive field: crop "
        "stitching then equals whole-volume inference) (default: the trained margin)",
    )
    p.add_argument(
        "--blend",
        choices=("crop", "average", "gaussian", "hann"),
        default="crop",
        help="crop keeps each core once; the others also predict the margin and blend "
        "overlaps with per-voxel weights (default: crop)",
    )
    p.add_argument(
        "--partition",
        choices=("grid", "none"),
        default="grid",
        help="grid: minicubes; none: the whole padded volume in one pass, the reference "
        "(default: grid)",
    )
    p.add_argument("--tta", action="store_true", help="average all axis flips (default: off)")
    p.add_argument(
        "--min-component-size",
        type=int,
        default=0,
        metavar="N",
        help="remove connected components smaller than N voxels, per class (default: 0, off)",
    )
    p.add_argument(
        "--keep-largest",
        action="store_true",
        help="keep only the largest connected foreground component (default: off)",
    )
    p.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write the class probabilities (default: off)",
    )
    p.add_argument(
        "--probabilities-format",
        choices=("nifti", "zarr"),
        default="nifti",
        help="nifti: OUT/<case>_probabilities.nii.gz in the original geometry; zarr: "
        "OUT/<case>_probabilities.zarr float16 (K, Z, Y, X) over the stored case, chunk = core, "
        "streamed to disk (default: nifti)",
    )
    p.add_argument(
        "--export",
        choices=("nifti", "none"),
        default="nifti",
        help="label export format; none writes no label file (default: nifti)",
    )
    p.add_argument("--batch", type=int, default=2, help="minicubes per forward pass (default: 2)")
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto: cuda if any)"
    )
    p.add_argument(
        "--amp", action="store_true", help="autocast: bf16 on CPU, fp16 on CUDA (default: off)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: refuse)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict every requested case; returns 0 (errors raise PartsegError -> exit 2)."""
    import tempfile

    from partseg.errors import ConfigError

    if args.batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {args.batch}")
    if args.min_component_size < 0:
        raise ConfigError(f"--min-component-size must be >= 0, got {args.min_component_size}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(args.device)
    predictor = _build_predictor(args, device)
    if args.store is not None:
        return _predict_store(args, predictor, args.store, out)
    with tempfile.TemporaryDirectory(prefix=".partseg-ingest-", dir=out) as tmp:
        from partseg.store.ingest import ingest

        store_path = Path(tmp) / "input.zarr"
        print(f"partseg predict: ingesting {args.input} into a temporary store", file=sys.stderr)
        ingest(args.input, store_path, progress=False)
        return _predict_store(args, predictor, str(store_path), out)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _build_predictor(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Load the model(s) and resolve the partition the prediction runs on."""
    from partseg.infer.ensemble import EnsembleModel, check_members, ensemble_partition
    from partseg.infer.predictor import norm_warning
    from partseg.train.checkpoint import load_model

    loaded = [load_model(path, device=device) for path in args.models]
    check_members(loaded)
    _check_derived(loaded)
    if len(loaded) == 1:
        model, partition = loaded[0].model, loaded[0].partition
    else:
        model = EnsembleModel([m.model for m in loaded]).eval()
        partition = ensemble_partition([m.partition for m in loaded])
    partition = _with_margin(model, partition, loaded[0].layout, args.margin)
    for note in partition.notes:
        print(f"partseg predict: note: {note}", file=sys.stderr)
    warning = norm_warning(model)
    if warning:
        print(f"partseg predict: warning: {warning}", file=sys.stderr)
    return {
        "loaded": loaded,
        "model": model,
        "partition": partition,
        "device": device,
        "derive": loaded[0].derive,  # the run's data.derived_channels, e.g. the Sobel contour
    }


def _check_derived(loaded: list[Any]) -> None:
    """An ensemble feeds every member the same input: their derived channels must agree."""
    from partseg.errors import CheckpointError

    first = loaded[0]
    for other in loaded[1:]:
        if tuple(other.derived_channels) != tuple(first.derived_channels):
            raise CheckpointError(
                f"models {first.path} and {other.path} were trained with different derived "
                f"channels ({list(first.derived_channels)} vs {list(other.derived_channels)}, "
                "data.derived_channels); ensemble only models trained with the same inputs"
            )


def _with_margin(model, partition, layout, margin: str | None):
    from partseg.errors import ConfigError
    from partseg.geometry import make_partition
    from partseg.infer.predictor import exact_partition

    if margin is None:
        return partition
    if margin == "exact":
        return exact_partition(model, partition.core, layout, base=partition)
    try:
        value = int(margin)
    except ValueError:
        raise ConfigError(
            f"--margin must be a whole number of voxels or 'exact', got {margin!r}"
        ) from None
    margins = [(value, value)] * partition.ndim
    if int(layout.spatial_dims) == 2:  # the slice axis carries the trained context slices
        axis = int(layout.slice_axis)
        margins[axis] = (partition.margin_before[axis], partition.margin_after[axis])
    return make_partition(partition.core, margins, partition.stride, ndim=partition.ndim)


def check_fit(loaded: Any, store: Any) -> None:
    """Raise CheckpointError when the model's channels or classes do not match the store."""
    from partseg.channels import derived_channel_names
    from partseg.errors import CheckpointError, ConfigError

    name = loaded.path
    if loaded.channels and tuple(loaded.channels) != tuple(store.channels):
        raise CheckpointError(
            f"model {name} was trained on channels {list(loaded.channels)} but store "
            f"{store.url} has {list(store.channels)}; ingest the data with the same modalities"
        )
    try:
        derived = derived_channel_names(loaded.derived_channels, store.channels)
    except ConfigError as err:
        raise CheckpointError(f"model {name}: {err}") from err
    n_channels = len(store.channels) + len(derived)
    expected = loaded.layout.in_channels(n_channels, loaded.partition)
    if int(loaded.model.in_channels) != expected:
        extra = f" + {len(derived)} derived {list(derived)}" if derived else ""
        raise CheckpointError(
            f"model {name} takes {loaded.model.in_channels} input channels but store "
            f"{store.url} gives {expected} ({len(store.channels)} channels{extra} with this "
            "layout)"
        )
    if loaded.classes and store.classes and tuple(loaded.classes) != tuple(store.classes):
        raise CheckpointError(
            f"model {name} predicts classes {list(loaded.classes)} but store {store.url} has "
            f"{list(store.classes)}; use a model trained on this label set"
        )


def _outputs(args: argparse.Namespace, out: Path, case_id: str) -> list[Path]:
    paths = []
    if args.export == "nifti":
        paths.append(out / f"{case_id}.nii.gz")
    if args.save_probabilities:
        suffix = ".zarr" if args.probabilities_format == "zarr" else ".nii.gz"
        paths.append(out / f"{case_id}_probabilities{suffix}")
    return paths


def _predict_store(args: argparse.Namespace, predictor: dict, url: str, out: Path) -> int:
    from partseg.errors import ConfigError, StoreError
    from partseg.store import open_store

    store = open_store(url)
    for loaded in predictor["loaded"]:
        check_fit(loaded, store)
    case_ids = list(args.cases) if args.cases else list(store.case_ids)
    missing = [c for c in case_ids if c not in store]
    if missing:
        raise StoreError(
            f"cases {missing} are not in store {store.url}; it holds {len(store)} cases "
            f"(e.g. {list(store.case_ids[:3])}); check --cases"
        )
    if not case_ids:
        raise StoreError(f"store {store.url} holds no cases")
    if not args.overwrite:
        existing = [str(p) for c in case_ids for p in _outputs(args, out, c) if p.exists()]
        if existing:
            raise ConfigError(
                f"outputs already exist: {existing[:3]}{' ...' if len(existing) > 3 else ''}; "
                "pass --overwrite to replace them or choose another --out"
            )
    for case_id in case_ids:
        start = time.perf_counter()
        written = predict_one(args, predictor, store, store[case_id], out)
        seconds = time.perf_counter() - start
        names = ", ".join(str(p) for p in written) or "nothing written (--export none)"
        print(f"{case_id}: {seconds:.1f} s -> {names}")
    return 0


def predict_one(args: argparse.Namespace, predictor: dict, store: Any, case: Any, out: Path):
    """Predict, post-process and export one case; returns the paths written."""
    import numpy as np

    from partseg.infer.export import export_case
    from partseg.infer.postprocess import postprocess
    from partseg.infer.predictor import predict_case, whole_partition
    from partseg.infer.stitch import Stitcher, default_activation

    model, partition = predictor["model"], predictor["partition"]
    layout = predictor["loaded"][0].layout
    if args.partition == "none":
        partition = whole_partition(partition, case.shape)
    want_values = args.save_probabilities
    zarr_path = out / f"{case.id}_probabilities.zarr"
    stitcher = Stitcher(
        case.shape,
        partition,
        int(model.out_channels),
        blend=args.blend,
        activation=default_activation(int(model.out_channels)),
        output="values" if want_values else "labels",
        dtype=np.float16,
        backend=_zarr_backend(case, partition, model, zarr_path, args) if want_values else None,
    )
    result = predict_case(
        model, case, partition, layout, batch_size=args.batch, device=predictor["device"],
        amp=args.amp, tta=args.tta, stitcher=stitcher, derive=predictor.get("derive"),
    )  # fmt: skip
    labels = _labels_of(result) if want_values else result
    labels = postprocess(
        labels, min_component_size=args.min_component_size, keep_largest=args.keep_largest
    )
    written: list[Path] = []
    if want_values and args.probabilities_format == "zarr":
        written.append(_commit_zarr(zarr_path))
    probabilities = (
        np.asarray(result) if want_values and args.probabilities_format == "nifti" else None
    )
    keep_labels = labels if args.export == "nifti" else None
    written += export_case(case, keep_labels, out, store.label_mapping, probabilities=probabilities)
    return written


def _labels_of(probabilities: Any, slab: int = 16):
    """Labels of (K, Z, Y, X) probabilities, slab by slab (works on a zarr array larger than RAM).

    Argmax over classes, or ``p > 0.5`` for a one-channel (sigmoid) model: see
    :func:`partseg.infer.stitch.labels_from_probabilities`.
    """
    import numpy as np

    from partseg.infer.stitch import labels_from_probabilities

    depth = probabilities.shape[1]
    labels = np.zeros(probabilities.shape[1:], np.uint8)
    for z in range(0, depth, slab):
        labels[z : z + slab] = labels_from_probabilities(np.asarray(probabilities[:, z : z + slab]))
    return labels


def _zarr_backend(case, partition, model, path: Path, args):
    """A zarr backend at a temporary name when probabilities go to zarr, else in memory."""
    if args.probabilities_format != "zarr":
        return None
    import numpy as np

    from partseg.infer.stitch import ZarrBackend

    tmp = path.with_name(f".tmp-{path.name}")
    shape = (int(model.out_channels), *case.shape)
    chunks = (
        int(model.out_channels),
        *(min(c, s) for c, s in zip(partition.core, case.shape, strict=True)),
    )
    attrs = {"case_id": case.id, "axes": "KZYX", "core": list(partition.core)}
    return ZarrBackend.create(tmp, shape, chunks, np.float16, attrs=attrs)


def _commit_zarr(path: Path) -> Path:
    """Move the finished temporary probability store to its final name."""
    import shutil

    tmp = path.with_name(f".tmp-{path.name}")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path
