"""``partseg info STORE``: summarise an ingested dataset."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg info``."""
    from partseg.cli.options import add_json

    p = subparsers.add_parser(
        "info",
        help="summarise a partseg store: cases, shapes, channels, classes, chunks, size",
        description="Print the number of cases, shape range, channels, class voxel counts and "
        "shares, chunking, dtype and size on disk of a partseg store.",
    )
    p.add_argument("store", metavar="STORE", help="store path or fsspec URL")
    add_json(p, "the summary")
    p.set_defaults(func=run)


def summarize(store: Any) -> dict[str, Any]:
    """The dataset summary of an open :class:`~partseg.store.zarrstore.Store` as a dict.

    Raises:
        StoreError: a case's metadata is unreadable, or its chunk files differ from the count
            recorded at ingest (a lost chunk would otherwise read as zeros).
    """
    shapes = [case.shape for case in store]
    chunk_check = check_chunk_files(store)
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
        "regions": store.regions.to_json() if store.regions is not None else None,
        "chunks": list(store.chunks),
        "dtype": store.attrs.get("dtype"),
        "ingest": store.attrs.get("ingest"),
        "size_bytes": store.size_on_disk(),
        "chunk_check": chunk_check,
    }


def check_chunk_files(store: Any) -> dict[str, int]:
    """Compare every case's chunk files with the count recorded at ingest.

    Returns ``{"checked": cases with a record, "unrecorded": cases written before partseg
    recorded chunk files}`` (their missing chunks cannot be told from empty ones).
    """
    from partseg.errors import StoreError

    checked = unrecorded = 0
    for case in store:
        if "chunk_files" not in case.attrs:
            unrecorded += 1
            continue
        checked += 1
        for name, (recorded, found) in case.missing_chunk_files().items():
            raise StoreError(
                f"store {store.url}, case {case.id!r}: array {name!r} has {found} chunk files, "
                f"{recorded} were written; delete that case's folder (cases/{case.id}) and "
                "rerun the same `partseg ingest` command, which rewrites missing cases"
            )
    return {"checked": checked, "unrecorded": unrecorded}


def format_summary(info: dict[str, Any]) -> str:
    """Human-readable lines of :func:`summarize`'s dict."""
    lines = [
        f"store      {info['store']}",
        f"cases      {info['cases']} ({info['labelled_cases']} with labels)",
        f"shapes     {info['shape_min']} .. {info['shape_max']} (Z, Y, X)",
        f"channels   {', '.join(info['channels'])}",
        f"chunks     {info['chunks']} (Z, Y, X), dtype {info['dtype']}",
        f"size       {info['size_bytes'] / 2**20:.1f} MiB on disk",
        _chunk_line(info["chunk_check"]),
        "classes    id  name              voxels        share",
    ]
    for c in info["classes"]:
        lines.append(
            f"           {c['id']:>2}  {c['name']:<16} {c['voxels']:>12}  {100 * c['share']:8.4f} %"
        )
    regions = info.get("regions")
    if regions:  # class ids per region, and the id each writes (regions_class_order)
        rows = zip(regions["names"], regions["labels"], regions["order"], strict=True)
        for name, ids, value in rows:
            lines.append(f"region     {name}: classes {ids}, writes class {value}")
    return "\n".join(lines)


def _chunk_line(check: dict[str, int]) -> str:
    line = f"chunk files complete in {check['checked']} case(s)"
    if check["unrecorded"]:
        line += (
            f"; {check['unrecorded']} case(s) were ingested before partseg recorded chunk files, "
            "so a lost chunk there reads as zeros: re-ingest with --overwrite to check them"
        )
    return f"files      {line}"


def run(args: argparse.Namespace) -> int:
    """Print the summary of ``args.store``."""
    from partseg.store.zarrstore import open_store

    info = summarize(open_store(args.store))
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return 0
