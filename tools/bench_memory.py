"""Benchmark training memory and step time of the default model: precision x checkpointing.

Network: ``configs/default.yaml``'s 3D U-Net (4 levels, 32 base features, BatchNorm, Dice + CE,
SGD with momentum), 4 input channels, 4 classes, batch 2, at the paper's context minicube
(core 80x96x96 plus margins: input 104x120x120) and, with ``--sizes brats nnunet``, at
nnU-Net's 128^3 patch. Modes: fp32, bf16, fp32 + checkpointing, bf16 + checkpointing.

Memory, per size and mode, measured at full size with batch 1 and multiplied by the batch
(activations are exactly per-sample):

* ``saved_bytes``: what autograd keeps between forward and backward
  (:func:`partseg.models.saved_tensor_bytes` of one forward; checkpoint units count the
  inputs they keep). Autocast's weight copies (2 bytes per parameter, independent of the
  input) are left out here and in the peak, as in the planner's per-voxel figures.
* ``activation_peak``: the planner's ``LiveBytes`` tracker over one forward + loss + backward
  (:func:`partseg.train.activations.measure_step`): the peak of everything the step allocates,
  saved tensors, activation gradients and recomputed units alike.
* ``planner_peak``, ``planner_saved``: the planner's extrapolation from its small probes, and
  its errors against the two measurements.
* ``peak_share_of_fp32_saved``, ``saved_share_of_fp32_saved``: against fp32's saved bytes.

Step time: CPU time (``time.process_time``) of single-thread training steps run by the
trainer's own step code (:mod:`partseg.train.steps`) in fp32, in bf16, and in the CPU's mixed
precision (``amp: auto``: bf16 where the CPU has native bf16, fp32 otherwise) with
checkpointing, interleaved after one warm-up step each, so a machine shared with other work
slows all alike; medians, min / max, and for bf16 / fp32 and checkpointing / no checkpointing
the ratio of the medians and the range of the per-round ratios.

Targets (issue 14): bf16 + checkpointing keeps the activation peak <= 20% of fp32's saved
bytes, at <= 1.35x the bf16 step time.

Usage::

    python tools/bench_memory.py                  # ~10 min on 2 cores; prints one JSON object
    python tools/bench_memory.py --quick          # 40x48x48, 2 repeats: a smoke run
    python tools/bench_memory.py --timing-only    # step times only (fp32, bf16, + checkpointing)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from typing import Any

import torch

SIZES = {"brats": (104, 120, 120), "nnunet": (128, 128, 128)}
QUICK_SIZE = (40, 48, 48)
MODES = {
    "fp32": ("off", False),
    "bf16": ("bf16", False),
    "fp32+checkpointing": ("off", True),
    "bf16+checkpointing": ("bf16", True),
}


def bench_config(spatial: tuple[int, ...], batch: int, amp: str = "off", ckpt: bool = False):
    """``configs/default.yaml`` with ``spatial`` as the whole input box (no margin)."""
    from partseg.config import load_config
    from partseg.recipes import recipe_path

    overrides = [
        f"partition.core={list(spatial)}",
        "partition.margin=[0,0,0]",
        f"train.batch_size={batch}",
        f"train.amp={amp}",
        f"train.checkpointing={str(ckpt).lower()}",
        "train.device=cpu",
        "model.in_channels=4",  # BraTS; the recipe takes them from the store
        "model.out_channels=4",
    ]
    return load_config(recipe_path("default"), overrides)


def memory_row(spatial: tuple[int, ...], batch: int, amp: str, ckpt: bool) -> dict[str, Any]:
    """Measured and planned saved bytes and activation peak of one size and mode."""
    from partseg.models import build_model, saved_tensor_bytes
    from partseg.precision import resolve_precision
    from partseg.train.activations import fit_activations, measure_step

    config = bench_config(spatial, 1, amp, ckpt)
    torch.manual_seed(0)
    model = build_model(config.model).train()
    model.set_grad_checkpointing(ckpt)
    x = torch.randn(1, config.model.in_channels, *spatial)
    with resolve_precision(amp, "cpu").autocast():
        saved = saved_tensor_bytes(model, x, backward=False)
    model.set_grad_checkpointing(False)
    peak = measure_step(config, spatial, spatial, amp=amp, checkpointing=ckpt, model=model).peak
    law = fit_activations(config, amp, ckpt, model=model)
    voxels = math.prod(spatial)
    row = {
        "saved_bytes": saved * batch,
        "activation_peak": peak * batch,
        "planner_saved": law.saved(voxels, batch),
        "planner_peak": law.peak(voxels, batch),
    }
    row["planner_saved_error"] = round(row["planner_saved"] / row["saved_bytes"] - 1, 4)
    row["planner_peak_error"] = round(row["planner_peak"] / row["activation_peak"] - 1, 4)
    return row


def memory(sizes: dict[str, tuple[int, ...]], batch: int, log) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    result: dict[str, Any] = {}
    for name, spatial in sizes.items():
        rows = {}
        for mode, (amp, ckpt) in MODES.items():
            log(f"memory {name} {mode}")
            rows[mode] = memory_row(spatial, batch, amp, ckpt)
        fp32_saved = rows["fp32"]["saved_bytes"]
        for row in rows.values():
            row["saved_share_of_fp32_saved"] = round(row["saved_bytes"] / fp32_saved, 4)
            row["peak_share_of_fp32_saved"] = round(row["activation_peak"] / fp32_saved, 4)
        result[name] = {"spatial": list(spatial), "batch": batch, "modes": rows}
    return result


def timing(spatial: tuple[int, ...], batch: int, repeats: int, log) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Interleaved single-thread CPU times of the trainer's step: fp32, bf16, and the CPU's
    mixed precision (``amp: auto``) with checkpointing."""
    from partseg.precision import resolve_precision
    from partseg.train.steps import step_trainer, synthetic_batch

    torch.set_num_threads(1)
    amp = resolve_precision("auto", "cpu").mode  # bf16 where native, else off (fp32)
    auto = amp if amp != "off" else "fp32"
    modes = {"fp32": ("off", False), "bf16": ("bf16", False), f"{auto}+checkpointing": (amp, True)}
    trainers = {name: step_trainer(bench_config(spatial, batch, a, c), "cpu")
                for name, (a, c) in modes.items()}  # fmt: skip
    batches = {name: synthetic_batch(t) for name, t in trainers.items()}
    times: dict[str, list[float]] = {name: [] for name in modes}
    for i in range(repeats + 1):  # round 0 warms every mode up
        for name, trainer in trainers.items():
            start = time.process_time()
            trainer.train_step(batches[name])
            trainer.optimizer_step()
            if i:
                times[name].append(time.process_time() - start)
        log(f"timing round {i}/{repeats}")
    medians = {name: statistics.median(t) for name, t in times.items()}

    def ratio(slow: str, fast: str) -> dict[str, Any]:
        pairs = [b / a for a, b in zip(times[fast], times[slow], strict=True)]
        return {
            "ratio_of_medians": round(medians[slow] / medians[fast], 3),
            "pair_ratio_range": [round(min(pairs), 3), round(max(pairs), 3)],
        }

    return {
        "spatial": list(spatial),
        "batch": batch,
        "threads": 1,
        "clock": "time.process_time",
        "order": "fp32, bf16, auto+checkpointing, repeated, after one warm-up step each",
        "amp_auto": auto,
        "modes": {
            name: {
                "cpu_s": [round(t, 3) for t in times[name]],
                "median_s": round(medians[name], 3),
                "min_s": round(min(times[name]), 3),
                "max_s": round(max(times[name]), 3),
            }
            for name in modes
        },
        "bf16_over_fp32": ratio("bf16", "fp32"),
        "checkpointing_over_auto": ratio(f"{auto}+checkpointing", auto),
    }


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets: peak share <= 0.20 of fp32 saved, time ratio <= 1.35."""
    shares = {
        name: size["modes"]["bf16+checkpointing"]["peak_share_of_fp32_saved"]
        for name, size in result["memory"].items()
    }
    ratio = result["timing"]["checkpointing_over_auto"]["ratio_of_medians"]
    return {
        "bf16_ckpt_peak_share_of_fp32_saved": shares,
        "peak_share_ok (<= 0.20)": all(s <= 0.2 for s in shares.values()),
        "ckpt_time_ratio": ratio,
        "time_ratio_ok (<= 1.35)": ratio <= 1.35,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", action="store_true", help="accepted; the output is JSON")
    parser.add_argument("--quick", action="store_true", help="40x48x48, 2 repeats (smoke run)")
    parser.add_argument(
        "--sizes", nargs="+", choices=sorted(SIZES), default=["brats"], help="default: brats"
    )
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed steps per mode (default 3; --quick 2)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--timing-only", action="store_true", help="step times only, no memory measurement"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr)

    sizes = {"quick": QUICK_SIZE} if args.quick else {n: SIZES[n] for n in args.sizes}
    repeats = 2 if args.quick else args.repeats
    from partseg.models import build_model
    from partseg.precision import native_bf16

    model = build_model(bench_config(QUICK_SIZE, 1).model)
    result: dict[str, Any] = {
        "network": "configs/default.yaml: 3D U-Net, 4 in, 4 classes, depth 4, base 32, "
        "BatchNorm, Dice + CE, SGD",
        "parameters": model.num_parameters(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "native_bf16": native_bf16("cpu"),
        "memory_threads": torch.get_num_threads(),
    }
    if not args.timing_only:
        result["memory"] = memory(sizes, args.batch, log)
    timing_size = next(iter(sizes.values()))
    result["timing"] = timing(timing_size, args.batch, repeats, log)
    if not args.timing_only:
        result["targets"] = targets(result)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
