"""Benchmark minicube reads: partseg zarr store vs whole .nii.gz loads vs chunked HDF5.

Writes ``--cases`` BraTS-size phantoms (``partseg.phantom``) into ``--workdir`` (reused when
present), ingests them, and times random reads of ``4 x 100 x 116 x 116`` minicubes (image +
label) from each format; prints one JSON object with reads/s, seconds per read and size on disk
per format, and the ratios to the targets (store >= 10x .nii.gz reads/s, >= 1x HDF5; store size
<= .nii.gz size). ``--tune`` adds a sweep over store variants (dtype, codec and level, shuffle,
chunks, channels per chunk), rewritten from the base store without re-ingesting. ``--loader`` adds
DataLoader throughput with 0, 1 and 2 workers next to the time of one training step of the
default 3D U-Net (``tools/bench_loader.py``, run in its own process).

Each section is one function ``section_<name>(ctx) -> dict`` registered in :data:`SECTIONS`.

Example::

    python tools/bench_io.py --json --cases 8 --reads 50 --workdir /tmp/partseg-bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partseg.geometry import Box

#: Input box of the default minicube (core 80 x 96 x 96 + margin 10): what training reads.
MINICUBE = (100, 116, 116)
#: Input box of a 2D model (one axial slice, the 192 x 192 crop of configs/brats_2d.yaml, clipped
#: to the 160-wide cropped volumes): reported next to the store's minicube reads.
SLICE = (1, 192, 160)
#: Store variants of the ``--tune`` sweep: name -> IngestSettings fields.
VARIANTS: dict[str, dict[str, Any]] = {
    # the format before int16 (session 1's default): float16 z-scores, zstd 5, a chunk per channel
    "f16_zstd5_c40x48x48_1ch": {
        "dtype": "float16", "codec": "zstd", "clevel": 5, "channels_per_chunk": 1,
        "chunks": (40, 48, 48),
    },
    "i16_zstd5_c40x48x48": {"codec": "zstd", "clevel": 5, "chunks": (40, 48, 48)},
    "i16_lz4hc9_c40x48x48_1ch": {"channels_per_chunk": 1, "chunks": (40, 48, 48)},
    "i16_lz4hc9_c40x48x48": {"chunks": (40, 48, 48)},
    "i16_lz4hc9_c64x64x64": {"chunks": (64, 64, 64)},
    "i16_zstd5_c24x32xW": {"codec": "zstd", "clevel": 5},
    "i16_lz4hc5_c24x32xW": {"clevel": 5},
    "i16_lz4_c24x32xW": {"codec": "lz4", "clevel": 5},
    "i16_lz4hc9_c24x32xW": {},  # the default: rows as wide as the volume (up to 256)
    "i16_lz4hc9_c16x16xW": {"chunks": (16, 16, 256)},
    "i16_lz4hc9_c32x48xW": {"chunks": (32, 48, 256)},
}  # fmt: skip


@dataclass
class Context:
    """What every section needs: paths, the base store and the random boxes to read."""

    args: argparse.Namespace
    workdir: Path
    raw_dir: Path
    store_path: Path
    boxes: list[tuple[str, Box]] = field(default_factory=list)
    slices: list[tuple[str, Box]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


def dir_size(path: Path) -> int:
    """Bytes of all files under ``path`` (or of the file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed_reads(read: Callable[[str, Box], Any], boxes: list[tuple[str, Box]]) -> dict[str, Any]:
    """Time ``read(case_id, box)`` over ``boxes`` after one warm-up read."""
    read(*boxes[0])
    walls, cpus = [], []
    for case_id, box in boxes:
        start, cpu_start = time.perf_counter(), time.process_time()
        read(case_id, box)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    median = float(np.median(walls))
    return {
        "reads": len(boxes),
        "seconds": round(sum(walls), 3),
        "reads_per_s": round(len(boxes) / sum(walls), 3),
        "ms_per_read": round(1000 * sum(walls) / len(boxes), 2),
        "median_ms_per_read": round(1000 * median, 2),
        "median_reads_per_s": round(1 / median, 3),
        "cpu_ms_per_read": round(1000 * sum(cpus) / len(boxes), 2),
    }


def _median_ms(store: Any, boxes: list[tuple[str, Box]]) -> float:
    """Median ms of ``store[case].read(box)`` over ``boxes`` (2D slice reads)."""
    return timed_reads(lambda c, b: store[c].read(b), boxes)["median_ms_per_read"]


def random_boxes(
    store: Any, n: int, size: tuple[int, int, int], seed: int
) -> list[tuple[str, Box]]:
    """``n`` random minicube input boxes; they may reach up to 10 voxels past the volume."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        case = store[store.case_ids[int(rng.integers(len(store)))]]
        start = tuple(
            int(rng.integers(-10, max(-9, s - b + 11)))
            for s, b in zip(case.shape, size, strict=True)
        )
        boxes.append((case.id, Box(start, size)))
    return boxes


def padded_crop(volume: np.ndarray, box: Box) -> np.ndarray:
    """The zero-padded ``box`` of the trailing three axes of ``volume``."""
    out = np.zeros((*volume.shape[:-3], *box.size), dtype=volume.dtype)
    inside, where = box.clip(volume.shape[-3:])
    lead = (slice(None),) * (volume.ndim - 3)
    out[(*lead, *where)] = volume[(*lead, *inside.slices())]
    return out


# ------------------------------------------------------------------------------- sections


def section_setup(ctx: Context) -> dict[str, Any]:
    """Phantoms (reused when complete) and the base store (reused when complete)."""
    from partseg.phantom import write_phantoms
    from partseg.store import open_store
    from partseg.store.ingest import IngestSettings, ingest

    start = time.perf_counter()
    write_phantoms(ctx.raw_dir, ctx.args.cases, tuple(ctx.args.shape), progress=False)
    phantom_s = time.perf_counter() - start
    settings = IngestSettings(
        dtype=ctx.args.dtype,
        chunks=tuple(ctx.args.chunks),
        channels_per_chunk=ctx.args.channels_per_chunk,
        codec=ctx.args.codec,
        clevel=ctx.args.clevel,
        shuffle=ctx.args.shuffle,
    )
    report = ingest(ctx.raw_dir, ctx.store_path, settings, workers=ctx.args.workers, progress=False)
    store = open_store(ctx.store_path)
    ctx.boxes = random_boxes(store, ctx.args.reads, MINICUBE, ctx.args.seed)
    ctx.slices = random_boxes(store, ctx.args.reads, SLICE, ctx.args.seed + 1)
    return {
        "cases": len(store),
        "phantom_shape": list(ctx.args.shape),
        "store_shapes": [list(c.shape) for c in store],
        "phantom_seconds": round(phantom_s, 1),
        "ingest_seconds": report.seconds,
        "ingest_s_per_case": round(report.seconds / len(report.written), 2)
        if report.written
        else None,
        "store_settings": settings.recorded() | settings.compression(),
    }


def section_store(ctx: Context) -> dict[str, Any]:
    """Minicube reads from the zarr store (only the chunks each box touches)."""
    from partseg.store import open_store

    store = open_store(ctx.store_path)
    out = timed_reads(lambda c, b: store[c].read(b), ctx.boxes)
    return out | {
        "size_bytes": dir_size(ctx.store_path),
        "slice_box": list(SLICE),
        "slice_median_ms_per_read": _median_ms(store, ctx.slices),
    }


def section_nifti(ctx: Context) -> dict[str, Any]:
    """Whole-volume loading with nibabel (the fastest way): load every .nii.gz, then crop.

    Fewer reads (``--nifti-reads``) because each one decompresses the whole case.
    """
    import nibabel as nib

    from partseg.store import open_store
    from partseg.store.sources import discover

    source = {c.case_id: c for c in discover(ctx.raw_dir).cases}
    store = open_store(ctx.store_path)

    def read(case_id: str, box: Box) -> tuple[np.ndarray, np.ndarray]:
        case = source[case_id]
        raw_box = box.shift(store[case_id].crop_box.start)  # store -> original voxels
        channels = [
            nib.load(p).get_fdata(dtype=np.float32).transpose(2, 1, 0) for p in case.image_files
        ]
        label = np.asanyarray(nib.load(case.label_file).dataobj).transpose(2, 1, 0)
        return padded_crop(np.stack(channels), raw_box), padded_crop(label, raw_box)

    boxes = ctx.boxes[: ctx.args.nifti_reads]
    files = [p for c in source.values() for p in (*c.image_files, c.label_file) if p is not None]
    return timed_reads(read, boxes) | {"size_bytes": sum(p.stat().st_size for p in files)}


def section_torchio(ctx: Context) -> dict[str, Any]:
    """What TorchIO does: a Subject of ScalarImages + LabelMap, ``load()``, then crop."""
    import torchio as tio

    from partseg.store import open_store
    from partseg.store.sources import discover

    source = {c.case_id: c for c in discover(ctx.raw_dir).cases}
    store = open_store(ctx.store_path)

    def read(case_id: str, box: Box) -> tuple[np.ndarray, np.ndarray]:
        case = source[case_id]
        images = {
            n: tio.ScalarImage(p) for n, p in zip(case.channel_names, case.image_files, strict=True)
        }
        subject = tio.Subject(**images, seg=tio.LabelMap(case.label_file))
        subject.load()
        image = np.concatenate([subject[n].data.numpy() for n in case.channel_names])  # C,X,Y,Z
        label = subject["seg"].data.numpy()[0]
        raw_box = box.shift(store[case_id].crop_box.start)
        zyx_image, zyx_label = image.transpose(0, 3, 2, 1), label.transpose(2, 1, 0)
        return padded_crop(zyx_image, raw_box), padded_crop(zyx_label, raw_box)

    return timed_reads(read, ctx.boxes[: ctx.args.nifti_reads])


def section_hdf5(ctx: Context) -> dict[str, Any]:
    """Chunked HDF5 (gzip 4 + shuffle, chunks like the store's) of the same stored arrays.

    An int16 store's counts go into HDF5 as int16 with the same scale, multiplied on read.
    """
    import h5py

    from partseg.store import open_store
    from partseg.store.encoding import candidate_steps, decode, encode

    store = open_store(ctx.store_path)
    folder = ctx.workdir / f"hdf5_{ctx.args.dtype}_{_chunk_name(ctx.args)}"
    folder.mkdir(exist_ok=True)
    chunks = tuple(ctx.args.chunks)
    cpc = min(ctx.args.channels_per_chunk, len(store.channels))
    for case in store:
        path = folder / f"{case.id}.h5"
        if path.exists():
            continue
        tmp = path.with_suffix(".h5.tmp")
        with h5py.File(tmp, "w") as f:
            steps = candidate_steps(case.attrs["normalization"], case.n_channels)
            image, scale = encode(case.read_image(), ctx.args.dtype, steps)
            kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
            data = f.create_dataset(
                "image", data=image, chunks=(cpc, *_clamp(chunks, case.shape)), **kw
            )
            if scale is not None:
                data.attrs["scale"] = scale
            f.create_dataset(
                "label", data=case.read_label(), chunks=_clamp(chunks, case.shape), **kw
            )
        os.replace(tmp, path)
    files = {case.id: h5py.File(folder / f"{case.id}.h5", "r") for case in store}
    shapes = {case.id: case.shape for case in store}
    scales = {k: f["image"].attrs.get("scale") for k, f in files.items()}

    def read(case_id: str, box: Box) -> tuple[np.ndarray, np.ndarray]:
        f = files[case_id]
        inside, where = box.clip(shapes[case_id])
        image = np.zeros((f["image"].shape[0], *box.size), np.float32)
        label = np.zeros(box.size, np.uint8)
        stored = f["image"][(slice(None), *inside.slices())]
        image[(slice(None), *where)] = decode(stored, scales[case_id])
        label[where] = f["label"][inside.slices()]
        return image, label

    try:
        out = timed_reads(read, ctx.boxes)
    finally:
        for f in files.values():
            f.close()
    return out | {"size_bytes": dir_size(folder)}


def _chunk_name(args: argparse.Namespace) -> str:
    """``4x24x32x256``: channels per chunk and spatial chunk, for folder names."""
    return "x".join(map(str, (args.channels_per_chunk, *args.chunks)))


def _clamp(chunks: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))


def section_tune(ctx: Context) -> dict[str, Any]:
    """Store variants rewritten from the base store: reads/s and size of each (``--tune``)."""
    from partseg.store import open_store
    from partseg.store.ingest import IngestSettings
    from partseg.store.writer import StoreWriter, create_store

    base = open_store(ctx.store_path)
    out = {}
    for name, fields in VARIANTS.items():
        settings = IngestSettings(**fields)
        path = ctx.workdir / "variants" / f"{name}.zarr"
        if not path.exists():
            tmp = path.with_name(path.name + ".tmp")
            writer: StoreWriter = create_store(
                tmp, base.attrs | {"case_ids": []}, overwrite=True, **settings.compression()
            )
            for case in base:
                rows = np.asarray(case._array("locations")[...])
                writer.write_case(
                    case.id,
                    case.read_image(),
                    case.read_label(),
                    case.attrs,
                    rows,
                    settings.chunks,
                    dtype=settings.dtype,
                    channels_per_chunk=settings.channels_per_chunk,
                )
            writer.write_index(base.attrs | {"case_ids": list(base.case_ids)})
            os.replace(tmp, path)
        store = open_store(path)
        out[name] = timed_reads(lambda c, b, s=store: s[c].read(b), ctx.boxes) | {
            "size_bytes": dir_size(path),
            "slice_median_ms_per_read": _median_ms(store, ctx.slices),
        }
    return out


def section_loader(ctx: Context) -> dict[str, Any]:
    """Loader throughput (0, 1, 2 workers) next to one training step: tools/bench_loader.py.

    Runs in its own process on a work folder inside this one, so its timings and memory figures
    are not mixed with the read benchmark's.
    """
    command = [sys.executable, str(Path(__file__).with_name("bench_loader.py")), "--json",
               "--workdir", str(ctx.workdir / "loader"), "--seed", str(ctx.args.seed)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return {"error": tail[0] if tail else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "setup": section_setup,
    "store": section_store,
    "nifti": section_nifti,
    "torchio": section_torchio,
    "hdf5": section_hdf5,
}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios against the targets, from median read times (robust on a shared machine)."""
    store, nifti, hdf5 = results["store"], results["nifti"], results["hdf5"]
    speed_nifti = store["median_reads_per_s"] / nifti["median_reads_per_s"]
    speed_hdf5 = store["median_reads_per_s"] / hdf5["median_reads_per_s"]
    size_ratio = store["size_bytes"] / nifti["size_bytes"]
    return {
        "store_vs_nifti_speed": round(speed_nifti, 2),
        "store_vs_torchio_speed": round(
            store["median_reads_per_s"] / results["torchio"]["median_reads_per_s"], 2
        ),
        "store_vs_nifti_cpu": round(nifti["cpu_ms_per_read"] / store["cpu_ms_per_read"], 2),
        "store_vs_hdf5_speed": round(speed_hdf5, 2),
        "store_vs_hdf5_cpu": round(hdf5["cpu_ms_per_read"] / store["cpu_ms_per_read"], 2),
        "store_vs_nifti_size": round(size_ratio, 3),
        "targets_met": {
            "speed_vs_nifti>=10": speed_nifti >= 10,
            "speed_vs_hdf5>=1": speed_hdf5 >= 1,
            "size_vs_nifti<=1": size_ratio <= 1,
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from partseg.store.encoding import DTYPES
    from partseg.store.ingest import IngestSettings
    from partseg.store.writer import CODECS

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="store options default to partseg ingest's defaults",
    )
    p.add_argument("--json", action="store_true", help="print JSON only (default: also a summary)")
    p.add_argument("--cases", type=int, default=8, help="phantom cases (default: 8)")
    p.add_argument("--reads", type=int, default=50, help="random minicube reads (default: 50)")
    p.add_argument("--nifti-reads", type=int, default=12, help="reads from .nii.gz (default: 12)")
    p.add_argument(
        "--workdir", default="/tmp/partseg-bench", help="work dir (default: /tmp/partseg-bench)"
    )
    p.add_argument(
        "--shape", type=int, nargs=3, default=(155, 240, 240), help="phantom Z Y X (default: BraTS)"
    )
    d = IngestSettings()
    p.add_argument(
        "--dtype", default=d.dtype, choices=DTYPES, help="store dtype (default: %(default)s)"
    )
    p.add_argument(
        "--chunks",
        type=int,
        nargs=3,
        default=d.chunks,
        help="store chunks Z Y X (default: %(default)s)",
    )
    p.add_argument(
        "--channels-per-chunk",
        type=int,
        default=d.channels_per_chunk,
        help="channels stored together in a chunk (default: %(default)s)",
    )
    p.add_argument(
        "--codec", default=d.codec, choices=CODECS, help="Blosc compressor (default: %(default)s)"
    )
    p.add_argument(
        "--clevel", type=int, default=d.clevel, help="compression level 1-9 (default: %(default)s)"
    )
    p.add_argument(
        "--shuffle", default=d.shuffle, help="blosc shuffle filter (default: %(default)s)"
    )
    p.add_argument("--workers", type=int, default=1, help="ingest processes (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random boxes (default: 0)")
    p.add_argument("--tune", action="store_true", help="also sweep store variants (default: off)")
    p.add_argument(
        "--loader",
        action="store_true",
        help="also time the DataLoader (0/1/2 workers) against one training step, via "
        "tools/bench_loader.py (default: off)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"store_{args.dtype}_{_chunk_name(args)}_{args.codec}{args.clevel}_{args.shuffle}.zarr"
    ctx = Context(args, workdir, workdir / "raw", workdir / name)
    sections = dict(SECTIONS)
    if args.tune:
        sections["tune"] = section_tune
    if args.loader:
        sections["loader"] = section_loader
    for section, func in sections.items():
        start = time.perf_counter()
        ctx.results[section] = func(ctx)
        ctx.results[section]["section_seconds"] = round(time.perf_counter() - start, 1)
    ctx.results["summary"] = summarize(ctx.results)
    ctx.results["machine"] = {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }
    print(json.dumps(ctx.results, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
