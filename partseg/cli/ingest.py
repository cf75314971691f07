"""``partseg ingest SRC STORE``: build a zarr chunk store from a raw dataset (resumable)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg ingest``."""
    from partseg.cli.options import (
        add_json,
        add_no_progress,
        add_overwrite,
        int_range,
        nonnegative_int,
        positive_float,
        positive_int,
        value_name,
    )
    from partseg.store.encoding import DTYPES
    from partseg.store.ingest import IngestSettings
    from partseg.store.preprocess import NORMALIZATIONS
    from partseg.store.sources import LAYOUTS
    from partseg.store.writer import CODECS

    defaults = IngestSettings()
    p = subparsers.add_parser(
        "ingest",
        help="ingest BraTS / MSD / nnU-Net / HDF5 / NumPy data into a zarr chunk store",
        description="Read, check, crop, normalise and remap each case of SRC and write it into "
        "the zarr v3 store STORE, one case at a time, atomically. Rerun the same command to "
        "resume an interrupted run.",
    )
    p.add_argument("src", metavar="SRC", help="raw dataset folder (or one HDF5/NumPy file)")
    p.add_argument(
        "store",
        metavar="STORE",
        help="store path, or an fsspec URL (s3://bucket/brats.zarr; remote protocols need "
        "pip install 'partseg[remote]')",
    )
    p.add_argument(
        "--layout",
        choices=("auto", *LAYOUTS.names()),
        default="auto",
        help=f"source layout; auto tries {', '.join(LAYOUTS.names())} in turn (default: auto)",
    )
    p.add_argument(
        "--crop",
        choices=("foreground", "dataset", "none"),
        default="foreground",
        help="foreground: each case to the nonzero box of all channels; dataset: one box for "
        "all cases, the union of the per-case boxes; none (default: foreground)",
    )
    p.add_argument(
        "--normalize",
        choices=NORMALIZATIONS,
        default=defaults.normalize,
        help="zscore-nonzero: z-score each channel over the voxels nonzero in any channel "
        "(the head), keep the outside at 0 (nnU-Net's BraTS setting); zscore-all: over every "
        "voxel; none; auto: zscore-nonzero, or zscore-all when a channel is named CT (0 HU is "
        "water, not background). The store records the method; a resume must match "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--spacing",
        nargs=3,
        type=positive_float,
        metavar=("Z", "Y", "X"),
        default=None,
        help="resample to this voxel size in mm, image trilinear, label nearest "
        "(default: keep the original grid)",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default=defaults.dtype,
        help="stored image dtype; int16 keeps an integer scan's values exactly as whole "
        "counts of a per-channel step (other scans: quantised to 1/32767 of their largest "
        "value) and reads fastest; float16 keeps 11 significant bits (default: %(default)s)",
    )
    p.add_argument(
        "--chunks",
        nargs=3,
        type=positive_int,
        metavar=("Z", "Y", "X"),
        default=None,
        help="spatial chunk shape, clamped to each volume; rows span the whole width of volumes "
        "up to 256 voxels, so minicube rows are copied in one piece (default: 24 32 256; for "
        "wider volumes such as 512 x 512 CT try 24 32 64)",
    )
    p.add_argument(
        "--channels-per-chunk",
        type=positive_int,
        default=defaults.channels_per_chunk,
        metavar="K",
        help="image channels stored together in one chunk; every read takes all channels, so "
        "fewer chunk files read faster (default: %(default)s)",
    )
    p.add_argument(
        "--codec",
        choices=CODECS,
        default=defaults.codec,
        help="Blosc compressor; minicubes read 1.5-2x faster with lz4hc 9 than with zstd 5, "
        "which stores 5-8%% smaller files (default: %(default)s)",
    )
    p.add_argument(
        "--clevel",
        type=int_range(1, 9),
        default=defaults.clevel,
        help="compression level 1-9 (default: %(default)s)",
    )
    p.add_argument(
        "--labels",
        nargs="+",
        type=nonnegative_int,
        default=None,
        help="declared label values, e.g. 0 1 2 4 (default: BraTS {0,1,2,4} or {0,1,2,3}, "
        "dataset.json for MSD, else the values of the first labelled case)",
    )
    p.add_argument(
        "--label-names",
        nargs="+",
        type=value_name,
        default=(),
        metavar="VALUE=NAME",
        help="class names for label values the layout does not name, e.g. 1=aneurysm "
        "(default: names from the layout, else label_<value>)",
    )
    p.add_argument(
        "--channel-map",
        nargs="+",
        type=_channel_map,
        default=(),
        metavar="OLD=NEW[,OLD=NEW...]",
        help="rename channels, e.g. t1n=t1,t1c=t1ce,t2w=t2,t2f=flair (BraTS 2023 under the 2020 "
        "names) or ch0=t1,... (files that do not name their channels); recorded in the store, "
        "so a resume must give the same map. Models match BraTS 2020/2023 and MSD names by "
        "alias without it (default: keep the layout's names)",
    )
    p.add_argument(
        "--split",
        choices=("train", "test", "all"),
        default="train",
        help="MSD/nnU-Net: imagesTr (train), imagesTs (test) or both (default: train)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="processes working on cases in parallel (default: 1)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave bad cases out and report them at the end; exit 0 if the store has at least "
        "one case (default: the first bad case stops the run with exit status 2)",
    )
    add_json(p, "the ingest summary")
    p.add_argument(
        "--hdf5-image",
        default="image",
        metavar="NAME",
        help="HDF5 dataset (or .npz key) of the image (default: image)",
    )
    p.add_argument(
        "--hdf5-label",
        default="label",
        metavar="NAME",
        help="HDF5 dataset (or .npz key) of the label (default: label)",
    )
    add_overwrite(p, "an existing partseg store")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Ingest and print the summary; 0 on success, 2 when no case could be ingested."""
    from partseg.store.ingest import IngestSettings, ingest
    from partseg.store.zarrstore import DEFAULT_CHUNKS

    settings = IngestSettings(
        layout=args.layout,
        crop=args.crop,
        normalize=args.normalize,
        spacing=tuple(args.spacing) if args.spacing else None,
        dtype=args.dtype,
        chunks=tuple(args.chunks) if args.chunks else DEFAULT_CHUNKS,
        channels_per_chunk=args.channels_per_chunk,
        codec=args.codec,
        clevel=args.clevel,
        labels=tuple(args.labels) if args.labels else None,
        label_names=tuple(args.label_names),
        image_key=args.hdf5_image,
        label_key=args.hdf5_label,
        split=args.split,
        channel_map=tuple(pair for pairs in args.channel_map for pair in pairs),
    )
    report = ingest(
        args.src,
        args.store,
        settings,
        workers=args.workers,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.summary())
    if report.total == 0:
        print("partseg ingest: error: no case could be ingested", file=sys.stderr)
        return 2
    return 0


def _channel_map(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``OLD=NEW[,OLD=NEW...]`` for ``--channel-map``."""
    from partseg.store.editions import parse_channel_map

    try:
        return parse_channel_map(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
