"""``partseg info STORE``: summarise an ingested dataset."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg info``."""
    p = subparsers.add_parser(
        "info",
        help="summarise a partseg store: cases, shapes, channels, classes, chunks, size",
        description="Print the number of cases, shape range, channels, class voxel counts and "
        "shares, chunking, dtype and size on disk of a partseg store.",
    )
    p.add_argument("store", metavar="STORE", help="store path or fsspec URL")
    p.add_argument("--json", action="store_true", help="print JSON instead of text (default: text)")
    p.set_defaults(func=run)


def summarize(store: Any) -> dict[str, Any]:
    """The dataset summary of an open :class:`~partseg.store.zarrstore.Store` as a dict."""
    shapes = [case.shape for case in store]
    totals = dict.fromkeys(range(len(store.classes)), 0)
    labelled = 0
    for case in store:
        labelled += case.has_label
        for cls, count in case.voxel_counts.items():
            totals[cls] = totals.get(cls, 0) + count
    voxels = sum(totals.values())
    return {
        "store": store.url,
        "cases": len(store),
        "labelled_cases": labelled,
        "shape_min": [min(s[i] for s in shapes) for i in range(3)] if shapes else None,
        "shape_max": [max(s[i] for s in shapes) for i in range(3)] if shapes else None,
        "channels": list(store.channels),
        "classes": [
            {
                "id": cls,
                "name": name,
                "voxels": totals.get(cls, 0),
                "share": totals.get(cls, 0) / voxels if voxels else 0.0,
            }
            for cls, name in enumerate(store.classes)
        ],
        "label_mapping": {str(k): v for k, v in store.label_mapping.items()},
        "chunks": list(store.chunks),
        "dtype": store.attrs.get("dtype"),
        "ingest": store.attrs.get("ingest"),
        "size_bytes": store.size_on_disk(),
    }


def format_summary(info: dict[str, Any]) -> str:
    """Human-readable lines of :func:`summarize`'s dict."""
    lines = [
        f"store      {info['store']}",
        f"cases      {info['cases']} ({info['labelled_cases']} with labels)",
        f"shapes     {info['shape_min']} .. {info['shape_max']} (Z, Y, X)",
        f"channels   {', '.join(info['channels'])}",
        f"chunks     {info['chunks']} (Z, Y, X), dtype {info['dtype']}",
        f"size       {info['size_bytes'] / 2**20:.1f} MiB on disk",
        "classes    id  name              voxels        share",
    ]
    for c in info["classes"]:
        lines.append(
            f"           {c['id']:>2}  {c['name']:<16} {c['voxels']:>12}  {100 * c['share']:8.4f} %"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the summary of ``args.store``."""
    from partseg.store.zarrstore import open_store

    info = summarize(open_store(args.store))
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return 0
