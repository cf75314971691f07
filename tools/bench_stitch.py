"""Benchmark seam-free prediction: the layer-wise engine against whole-volume inference and tiling.

The model is the default of ``configs/default.yaml`` (3D U-Net, depth 4, base 32, BatchNorm in
eval mode, receptive field 103), randomly initialised with a fixed seed (He init, so the signal
and the context reach the output), on random 4-channel volumes of BraTS sizes. Every method runs
in its own subprocess with one torch thread, so its peak RSS and CPU time are its own; each
writes its softmax probabilities, which the parent compares with the reference: the whole-volume
forward ``model(volume)`` of the volume zero-padded at the end to a multiple of the stride
(``partseg predict --partition none``).

Methods:
    whole            the reference (skipped where it cannot fit in RAM)
    exact            the layer-wise engine (``--partition exact``), buffers in RAM
    exact_zarr       the same with feature rows and the output in zarr on disk
    grid_exact       the previous exact mode: overlapping minicubes, core 80x96x96, margin 52
    crop_m10         the seed paper's tiling: core 80x96x96, 10-voxel margin, crop
    monai_gaussian   MONAI sliding_window_inference, 128^3 windows, overlap 0.5, gaussian
    torchio_hann     TorchIO GridSampler + GridAggregator, 128^3 patches, overlap 64, hann

Usage:
    python tools/bench_stitch.py --json                   # default model, the three volumes
    python tools/bench_stitch.py --json --quick           # small model and volumes (smoke)
    python tools/bench_stitch.py --json --volumes 4x144x176x144 --methods whole exact
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = (
    "whole",
    "exact",
    "exact_zarr",
    "grid_exact",
    "crop_m10",
    "monai_gaussian",
    "torchio_hann",
)
VOLUMES = ("4x144x176x144", "4x155x240x240", "4x256x512x512")
QUICK_VOLUMES = ("4x40x48x44", "4x48x64x56")
#: Methods run at volumes where the whole-volume forward does not fit (reported alone).
HUGE_METHODS = ("exact", "exact_zarr")
PAPER_CORE = (80, 96, 96)
PAPER_MARGIN = 10
WINDOW = (128, 128, 128)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model(args: argparse.Namespace):
    import torch

    from partseg.config import load_config
    from partseg.models import ModelConfig, build_model

    if args.quick:
        cfg = ModelConfig(depth=3, base_width=8, in_channels=4, out_channels=4)
    else:
        recipe = Path(__file__).parents[1] / "configs" / "default.yaml"  # BraTS: 4 in, 4 out
        cfg = load_config(recipe, ["model.in_channels=4", "model.out_channels=4"]).model
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d | torch.nn.ConvTranspose3d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model


def _volume(shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal(size=shape, dtype=np.float32)  # (C, Z, Y, X)


def _softmax(logits):
    import torch

    return torch.softmax(torch.as_tensor(logits), 0).numpy()


def _whole(model, volume):
    import torch

    from partseg.infer.engine import stride_padded

    shape = volume.shape[1:]
    x = torch.zeros(1, volume.shape[0], *stride_padded(shape, int(model.total_stride)))
    x[0, :, : shape[0], : shape[1], : shape[2]] = torch.from_numpy(volume)
    with torch.inference_mode():
        logits = model(x)[0, :, : shape[0], : shape[1], : shape[2]]
    del x
    return torch.softmax(logits, 0).numpy()


def _engine(model, volume, out: Path, zarr_buffers: bool):
    from partseg.dataset import InputLayout
    from partseg.infer.engine import EngineStats, predict_layerwise
    from partseg.infer.predictor import ArrayCase
    from partseg.infer.stitch import ZarrBackend

    stats = EngineStats()
    backend = None
    if zarr_buffers:
        shape = (int(model.out_channels), *volume.shape[1:])
        chunks = (shape[0], 8, *shape[2:])
        backend = ZarrBackend.create(out.with_suffix(".zarr"), shape, chunks, np.float32)
    probs = predict_layerwise(model, ArrayCase("bench", volume), InputLayout(),
                              buffers="zarr" if zarr_buffers else "memory", backend=backend,
                              stats=stats)  # fmt: skip
    info = {"peak_buffer_mib": round(stats.peak_buffer_bytes / 2**20, 1), "nodes": stats.nodes}
    return (None if zarr_buffers else probs), info


def _grid(model, volume, margin: str):
    from partseg.dataset import InputLayout
    from partseg.geometry import make_partition
    from partseg.infer.predictor import ArrayCase, exact_partition, predict_case

    layout = InputLayout()
    if margin == "exact":
        partition = exact_partition(model, PAPER_CORE, layout)
    else:
        partition = make_partition(PAPER_CORE, PAPER_MARGIN, stride=model.total_stride)
    probs = predict_case(model, ArrayCase("bench", volume), partition, layout, batch_size=1)
    return probs, {"core": list(partition.core), "margin": list(partition.margin_before)}


def _monai(model, volume):
    import torch
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        out = sliding_window_inference(torch.from_numpy(volume[None]), WINDOW, 1, model,
                                       overlap=0.5, mode="gaussian")  # fmt: skip
    return _softmax(out[0]), {"roi": list(WINDOW), "overlap": 0.5}


def _torchio(model, volume):
    import torch
    import torchio as tio

    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(volume)))
    sampler = tio.inference.GridSampler(subject, WINDOW, 64, padding_mode="constant")
    aggregator = tio.inference.GridAggregator(sampler, overlap_mode="hann")
    loader = torch.utils.data.DataLoader(sampler, batch_size=1)
    with torch.inference_mode():
        for batch in loader:
            aggregator.add_batch(model(batch["image"][tio.DATA]), batch[tio.LOCATION])
    return _softmax(aggregator.get_output_tensor()), {"roi": list(WINDOW), "patch_overlap": 64}


def worker(args: argparse.Namespace) -> None:
    """Run one method, save its probabilities, print time and memory as JSON."""
    import torch

    torch.set_num_threads(1)
    model = _model(args)
    volume = _volume(tuple(args.shape))
    out = Path(args.out)
    base_rss = _rss_mib()
    cpu, wall = time.process_time(), time.perf_counter()
    method = args.worker
    if method == "whole":
        probs, info = _whole(model, volume), {}
    elif method.startswith("exact"):
        probs, info = _engine(model, volume, out, method == "exact_zarr")
    elif method.startswith("monai"):
        probs, info = _monai(model, volume)
    elif method.startswith("torchio"):
        probs, info = _torchio(model, volume)
    else:
        probs, info = _grid(model, volume, "exact" if method == "grid_exact" else "m10")
    info.update(cpu_s=round(time.process_time() - cpu, 1),
                wall_s=round(time.perf_counter() - wall, 1), peak_rss_mib=round(_rss_mib()),
                rss_before_mib=round(base_rss))  # fmt: skip
    if probs is not None:
        np.save(out, np.asarray(probs, np.float32))
    print(json.dumps(info))


def _compare(path: Path, reference: np.ndarray) -> dict:
    """Max |p - p_ref| of the probabilities and the share of voxels whose argmax differs."""
    zarr_path = path.with_suffix(".zarr")
    if zarr_path.exists():
        import zarr

        values = zarr.open_array(str(zarr_path), mode="r")
    else:
        values = np.load(path, mmap_mode="r")
    worst, changed = 0.0, 0
    for z in range(0, reference.shape[1], 16):  # slabs: no second volume in RAM
        p, r = np.asarray(values[:, z : z + 16]), reference[:, z : z + 16]
        worst = max(worst, float(np.abs(p - r).max()))
        changed += int((p.argmax(0) != r.argmax(0)).sum())
    share = changed / float(np.prod(reference.shape[1:]))
    return {"max_abs_diff": float(f"{worst:.3g}"), "labels_changed": float(f"{share:.3g}")}


def _run(args, method: str, shape: tuple[int, ...], tmp: Path) -> dict:
    out = tmp / f"{method}.npy"
    command = [sys.executable, __file__, "--worker", method, "--out", str(out),
               "--shape", *map(str, shape)] + (["--quick"] if args.quick else [])  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return {"error": tail[0] if tail else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratios(table: dict) -> dict:
    whole, exact = table.get("whole", {}), table.get("exact", {})
    if "cpu_s" not in whole or "cpu_s" not in exact:
        return {}
    return {
        "exact_cpu_over_whole": round(exact["cpu_s"] / whole["cpu_s"], 3),
        "exact_peak_rss_over_whole": round(exact["peak_rss_mib"] / whole["peak_rss_mib"], 3),
    }


def bench_volume(args, key: str) -> dict:
    """Every requested method on one volume size, errors against ``whole``."""
    shape = tuple(int(s) for s in key.split("x"))
    huge = key == VOLUMES[2]
    methods = [m for m in args.methods if not huge or m in HUGE_METHODS]
    table: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-stitch-") as folder:
        tmp = Path(folder)
        for method in methods:
            print(f"bench_stitch: {key} {method}", file=sys.stderr, flush=True)
            table[method] = _run(args, method, shape, tmp)
        if "whole" in table and "error" not in table["whole"]:
            reference = np.load(tmp / "whole.npy", mmap_mode="r")
            for method, row in table.items():
                if "error" not in row:
                    row.update(_compare(tmp / f"{method}.npy", reference))
    if huge:
        table["note"] = "the whole-volume forward needs ~70 GB here: exact mode is reported alone"
    table.update(_ratios(table))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (default)")
    parser.add_argument("--quick", action="store_true", help="small model and volumes (smoke)")
    parser.add_argument("--volumes", nargs="+", help=f"C x Z x Y x X sizes (default: {VOLUMES})")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--shape", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    volumes = args.volumes or (QUICK_VOLUMES if args.quick else VOLUMES)
    start = time.perf_counter()
    results = {
        "model": "depth 3, base 8 (--quick)"
        if args.quick
        else "configs/default.yaml: unet, depth 4, base 32, batch norm (eval), receptive field 103",
        "init": "torch.manual_seed(0), kaiming_normal (relu)",
        "threads": 1,
        "reference": "softmax of model(volume zero-padded at the end to a multiple of 8)",
        "volumes": {key: bench_volume(args, key) for key in volumes},
    }
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
