"""Benchmark the training loader: minicubes per second vs one training step, and its memory.

Writes ``--cases`` BraTS-size phantoms (``partseg.phantom``) into ``--workdir`` (reused when
present), ingests them into a store, then measures, at the BraTS paper's minicube (core
80 x 96 x 96 + margin 10, aligned to the 3D U-Net's stride 8: a 4 x 104 x 120 x 120 input box):

* ``loader``: minicubes/s of a torch ``DataLoader`` over :class:`partseg.dataset.MinicubeDataset`
  with 0, 1 and 2 workers (foreground sampler, default augmentation), plus read-only and
  ``reuse=4`` variants;
* ``bytes``: bytes read from the store per minicube (compressed chunk files touched, and their
  decompressed size) next to a case's size;
* ``step``: seconds of one training step of the default 3D U-Net (depth 4, width 32, batch 2,
  bf16 autocast on CPU, forward + backward + SGD) at ``--step-box`` (default a smaller box;
  the time at the full box is extrapolated by voxel count and marked as such);
* ``memory``: peak memory of a fresh process iterating a 2-worker loader over stores of 1, 4
  and 16 cases (copies of the phantoms, hard-linked), next to the stores' decompressed sizes:
  the pipeline's memory must not grow with the dataset. Peaks are sampled from ``/proc``
  (main process peak RSS, largest worker RSS, and the peak PSS sum of main + workers, which
  counts shared pages once); see :func:`rss_child` for why not ``getrusage``.

Prints one JSON object. About 3-5 minutes on 2 CPU cores with the defaults.

Example::

    python tools/bench_loader.py --json --workdir /tmp/partseg-bench-loader
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partseg.dataset import AugmentConfig, InputLayout, MinicubeDataset
from partseg.geometry import Box, Partition, make_partition
from partseg.sampling import Sample, SamplerConfig, make_sampler

CORE = (80, 96, 96)
MARGIN = 10
STRIDE = 8  # the default 3D U-Net: depth 4 -> 3 poolings


def partition() -> Partition:
    """The BraTS paper's minicube aligned to stride 8: input box 104 x 120 x 120."""
    return make_partition(CORE, MARGIN, stride=STRIDE)


def build_store(workdir: Path, cases: int, seed: int) -> Path:
    """Phantoms -> ingest (default settings), reused when ``workdir`` already holds them."""
    from partseg.errors import StoreError
    from partseg.phantom import write_phantoms
    from partseg.store.ingest import IngestSettings, ingest
    from partseg.store.zarrstore import open_store

    raw, store = workdir / "raw", workdir / "store.zarr"
    with contextlib.suppress(StoreError):
        if len(open_store(store).case_ids) >= cases:
            return store
    write_phantoms(raw, cases, seed=seed, progress=False)
    ingest(raw, store, IngestSettings(), progress=False)
    return store


def scaled_store(base: Path, n_cases: int, workdir: Path) -> Path:
    """A store of ``n_cases`` cases: the base cases repeated under new ids (hard links)."""
    from partseg.store.writer import StoreWriter
    from partseg.store.zarrstore import open_store

    target = workdir / f"store_{n_cases}.zarr"
    if target.exists():
        return target
    source = open_store(base)
    shutil.copytree(base, target, copy_function=os.link, ignore=lambda *_: ["cases"])
    (target / "cases").mkdir()
    shutil.copy(base / "cases" / "zarr.json", target / "cases" / "zarr.json")
    ids = []
    for i in range(n_cases):
        original = source.case_ids[i % len(source.case_ids)]
        case_id = f"{original}_copy{i:03d}"
        shutil.copytree(
            base / "cases" / original, target / "cases" / case_id, copy_function=os.link
        )
        ids.append(case_id)
    os.remove(target / "zarr.json")  # hard link: rewrite a fresh file, not the base's
    shutil.copy(base / "zarr.json", target / "zarr.json")
    StoreWriter(target).write_index({**source.attrs, "case_ids": ids})
    return target


def samples_for(store: Any, n: int, seed: int) -> list[Sample]:
    """``n`` foreground-sampler minicubes spread over every case of ``store``."""
    per_case = max(1, math.ceil(n / len(store.case_ids)))
    config = SamplerConfig("foreground", samples_per_case=per_case)
    return make_sampler(config, store, partition(), store.case_ids, seed=seed).epoch(0)[:n]


def time_loader(dataset: MinicubeDataset, workers: int, batch_size: int = 2) -> dict[str, float]:
    """Minicubes/s of one pass of a DataLoader (worker start-up included)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    count = sum(len(batch["case_id"]) for batch in loader)
    seconds = time.perf_counter() - start
    return {"items": count, "seconds": round(seconds, 3), "per_s": round(count / seconds, 3)}


def section_loader(store_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from partseg.store.zarrstore import open_store

    store = open_store(store_path)
    samples = samples_for(store, args.items, args.seed)
    layout = InputLayout(3)
    out: dict[str, Any] = {"box": list(partition().input_size), "channels": len(store.channels)}
    plain = MinicubeDataset(str(store_path), samples, layout, AugmentConfig(enabled=False))
    out["read_only_0_workers"] = time_loader(plain, 0)
    for workers in args.workers:
        dataset = MinicubeDataset(str(store_path), samples, layout, AugmentConfig(), seed=1)
        out[f"augment_{workers}_workers"] = time_loader(dataset, workers)
    reused = MinicubeDataset(
        str(store_path), samples[: max(1, args.items // 4)], layout, AugmentConfig(), reuse=4
    )
    out[f"augment_reuse4_{max(args.workers)}_workers"] = time_loader(reused, max(args.workers))
    return out


def section_bytes(store_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Bytes of the chunk files each minicube touches, vs the case's size."""
    from partseg.store.zarrstore import open_store

    store = open_store(store_path)
    samples = samples_for(store, args.items, args.seed)
    compressed, decompressed = [], []
    for sample in samples:
        case = store[sample.case_id]
        files, raw = 0, 0
        for name in ("image", "label"):
            f, r = _chunk_bytes(store_path / "cases" / sample.case_id / name, case.shape,
                                sample.cube.input_box)  # fmt: skip
            files, raw = files + f, raw + r
        compressed.append(files)
        decompressed.append(raw)
    case_bytes = [_dir_bytes(store_path / "cases" / cid) for cid in store.case_ids]
    box = partition().input_size
    return {
        "compressed_bytes_per_sample": int(np.mean(compressed)),
        "decompressed_bytes_per_sample": int(np.mean(decompressed)),
        "box_bytes_float32": int(np.prod(box)) * len(store.channels) * 4 + int(np.prod(box)),
        "case_bytes_on_disk_mean": int(np.mean(case_bytes)),
        "case_shape_example": list(store[store.case_ids[0]].shape),
        "share_of_case_read": round(float(np.mean(compressed)) / float(np.mean(case_bytes)), 3),
    }


def _chunk_bytes(array_dir: Path, shape: tuple[int, ...], box: Box) -> tuple[int, int]:
    """(bytes of chunk files, decompressed bytes of those chunks) that ``box`` touches."""
    meta = json.loads((array_dir / "zarr.json").read_text())
    chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
    itemsize = np.dtype(meta["data_type"]).itemsize
    separator = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
    spatial = chunks[-3:]
    inside, _ = box.clip(shape)
    ranges = [
        range(a // c, (b - 1) // c + 1)
        for a, b, c in zip(inside.start, inside.stop, spatial, strict=True)
    ]
    leading = [range(math.ceil(meta["shape"][0] / chunks[0]))] if len(chunks) == 4 else []
    total = 0
    count = 0
    for index in np.ndindex(*(len(r) for r in leading + ranges)):
        key = [str(r[i]) for r, i in zip(leading + ranges, index, strict=True)]
        path = array_dir / ("c" + separator + separator.join(key))
        count += 1
        if path.exists():
            total += path.stat().st_size
    return total, count * int(np.prod(chunks)) * itemsize


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def section_step(args: argparse.Namespace) -> dict[str, Any]:
    """One training step of the default 3D U-Net, bf16 autocast on CPU."""
    from partseg.models import ModelConfig, build_model

    config = ModelConfig(name="unet", spatial_dims=3, in_channels=4, out_channels=4, depth=4,
                         base_width=32)  # fmt: skip
    model = build_model(config)
    full = partition().input_size
    box = full if args.step_box == "full" else tuple(int(s) for s in args.step_box.split(","))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(2, 4, *box)
    y = torch.randint(0, 4, (2, *box))
    times = []
    for _ in range(args.steps + 1):  # the first step warms up
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times[1:]))
    scale = float(np.prod(full)) / float(np.prod(box))
    return {
        "model": "unet depth 4 width 32, batch 2, bf16 autocast, CPU",
        "threads": torch.get_num_threads(),
        "box": list(box),
        "seconds_per_step": round(seconds, 3),
        "full_box": list(full),
        "seconds_per_step_full_box": round(seconds * scale, 3),
        "full_box_is_extrapolated": box != full,
        "minicubes_per_s_needed_full_box": round(2 / (seconds * scale), 3),
    }


def section_memory(base: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of a fresh process per store size; the store's decompressed size beside it."""
    from partseg.store.zarrstore import open_store

    out: dict[str, Any] = {}
    for n in args.scale:
        path = scaled_store(base, n, workdir)
        store = open_store(path)
        voxels = sum(int(np.prod(store[c].shape)) for c in store.case_ids)
        child = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(path), "--rss-items", str(args.rss_items),
             "--seed", str(args.seed)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["store_decompressed_mb"] = round(voxels * (len(store.channels) * 4 + 1) / 2**20, 1)
        result["store_on_disk_mb"] = round(_dir_bytes(path) / 2**20, 1)
        out[f"{n}_cases"] = result
    return out


def rss_child(store_path: str, items: int, seed: int) -> dict[str, Any]:
    """Iterate a 2-worker loader over ``items`` minicubes of every case; report peak memory.

    Peaks come from ``/proc`` sampled every 20 ms: ``getrusage`` max RSS would report the RSS
    of the parent bench process that forked this one (Linux keeps ``ru_maxrss`` across exec),
    and double-counts pages the workers share with the main process.
    """
    from partseg.store.zarrstore import open_store

    baseline = _proc_kb(os.getpid(), "status", "VmRSS:") / 1024
    store = open_store(store_path)
    samples = samples_for(store, items, seed)
    dataset = MinicubeDataset(store_path, samples, InputLayout(3), AugmentConfig(), seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    monitor = MemoryMonitor()
    monitor.start()
    count = sum(len(batch["case_id"]) for batch in loader)
    monitor.stop()
    return {
        "cases": len(store.case_ids),
        "items": count,
        "cases_touched": len({s.case_id for s in samples}),
        "main_rss_after_imports_mb": round(baseline, 1),
        "main_peak_rss_mb": round(_proc_kb(os.getpid(), "status", "VmHWM:") / 1024, 1),
        "worker_peak_rss_mb": round(monitor.worker_rss_kb / 1024, 1),
        "pipeline_peak_pss_mb": round(monitor.total_pss_kb / 1024, 1),
    }


class MemoryMonitor(threading.Thread):
    """Samples this process and its children in ``/proc``: peak PSS sum, peak child RSS."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.total_pss_kb = 0
        self.worker_rss_kb = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.sample()

    def sample(self) -> None:
        children = _children(os.getpid())
        total = sum(_proc_kb(pid, "smaps_rollup", "Pss:") for pid in [os.getpid(), *children])
        self.total_pss_kb = max(self.total_pss_kb, total)
        for pid in children:
            self.worker_rss_kb = max(self.worker_rss_kb, _proc_kb(pid, "status", "VmRSS:"))


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    return found


def _proc_kb(pid: int, name: str, key: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/<name>`` (0 when the process is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/{name}") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print compact JSON (default: indented)")
    p.add_argument("--workdir", help="folder for phantoms and stores, reused (default: a temp dir)")
    p.add_argument("--cases", type=int, default=4, help="distinct phantom cases (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="phantom and sampler seed (default: 0)")
    p.add_argument("--items", type=int, default=16, help="minicubes per loader run (default: 16)")
    p.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2],
                   help="DataLoader worker counts to time (default: 0,1,2)")  # fmt: skip
    p.add_argument("--step-box", default="56,64,64",
                   help="training-step box Z,Y,X, or 'full' (default: 56,64,64)")  # fmt: skip
    p.add_argument("--steps", type=int, default=1, help="timed training steps (default: 1)")
    p.add_argument("--scale", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 16],
                   help="case counts of the memory runs (default: 1,4,16)")  # fmt: skip
    p.add_argument("--rss-items", type=int, default=32,
                   help="minicubes per memory run (default: 32)")  # fmt: skip
    p.add_argument("--skip", default="", help="sections to skip, comma separated (default: none)")
    p.add_argument("--rss-child", metavar="STORE", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from partseg.store.zarrstore import open_store

    args = parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args.rss_items, args.seed)))
        return 0
    temporary = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="partseg-bench-loader-"))
    workdir.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    try:
        start = time.perf_counter()
        store = build_store(workdir, args.cases, args.seed)
        results["setup_seconds"] = round(time.perf_counter() - start, 1)
        results["store"] = {k: open_store(store).attrs.get(k) for k in ("dtype", "chunks")}
        results["partition"] = {
            "core": list(CORE), "margin": MARGIN, "stride": STRIDE,
            "input_box": list(partition().input_size), "notes": list(partition().notes),
        }  # fmt: skip
        sections = {
            "bytes": lambda: section_bytes(store, args),
            "loader": lambda: section_loader(store, args),
            "step": lambda: section_step(args),
            "memory": lambda: section_memory(store, workdir, args),
        }
        for name, run in sections.items():
            if name not in skip:
                results[name] = run()
        if "loader" in results and "step" in results:
            best = max(v["per_s"] for k, v in results["loader"].items() if k.startswith("augment_"))
            needed = results["step"]["minicubes_per_s_needed_full_box"]
            results["loader_keeps_up_with_cpu_step"] = best >= needed
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
