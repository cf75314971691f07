"""``partseg phantom``: write BraTS-like (realistic or simple) or aneurysm-like cases as NIfTI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``phantom`` subcommand."""
    from partseg.cli.options import (
        add_deprecated,
        add_json,
        add_no_progress,
        add_overwrite,
        int_range,
        nonnegative_int,
        positive_int,
        safe_name,
    )
    from partseg.phantom.cases import KINDS

    parser = subparsers.add_parser(
        "phantom",
        help="write synthetic BraTS-like (or aneurysm TOF-like) cases as NIfTI",
        description="Write synthetic cases in the BraTS 2020 layout, "
        "OUT/<id>/<id>_{t1,t1ce,t2,flair,seg}.nii.gz (aneurysm: <id>_{tof,seg}.nii.gz), "
        "RAS affine (1 mm; realistic brats grids smaller than BraTS hold the BraTS field of "
        "view in larger voxels). Same seed, same files; case i depends only on (seed, i), so "
        "adding cases keeps the earlier ones. Complete cases already in OUT are skipped "
        "(resume).",
    )
    parser.add_argument("out", metavar="OUT", type=Path, help="output folder (created)")
    count = parser.add_mutually_exclusive_group(required=True)
    count.add_argument(
        "--count", type=positive_int, metavar="N", help="number of cases to write (required)"
    )
    # --cases names case ids elsewhere (predict --cases ID...): the count was renamed --count
    add_deprecated(count, "--cases", "--count N", dest="count", type=positive_int, metavar="N")
    parser.add_argument(
        "--shape",
        type=int_range(1, 1024),
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=(155, 240, 240),
        help="volume size in voxels, partseg (Z, Y, X) order (default: 155 240 240, BraTS)",
    )
    parser.add_argument(
        "--seed", type=nonnegative_int, default=0, help="data-set seed >= 0 (default: 0)"
    )
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="brats",
        help="brats: t1/t1ce/t2/flair of the MNI152 brain (shipped by nilearn) deformed per "
        "case, with a glioma (tumor labels {0,1,2,4}), about 5 s per BraTS-size case; "
        "brats-simple: the same channels and labels on a fast synthetic ellipsoidal head; "
        "aneurysm: one TOF channel with labels {0,1} (default: brats)",
    )
    parser.add_argument(
        "--prefix",
        type=safe_name,
        default="Phantom",
        help="case id prefix, ids <prefix>_001... (default: Phantom)",
    )
    add_overwrite(parser, "the cases already in OUT")
    add_no_progress(parser)
    add_json(parser, "the case folders written")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the phantoms and print where they are."""
    from partseg.phantom import write_phantoms

    folders = write_phantoms(
        args.out,
        cases=args.count,
        shape=tuple(args.shape),
        seed=args.seed,
        kind=args.kind,
        prefix=args.prefix,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps({"out": str(args.out), "kind": args.kind,
                          "cases": [str(f) for f in folders]}, indent=2))  # fmt: skip
    else:
        print(f"partseg phantom: {len(folders)} {args.kind} cases in {args.out}")
    return 0
