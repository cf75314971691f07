"""Benchmark training memory of a BraTS-scale 3D U-Net: precision x gradient checkpointing.

Network: 3D U-Net, 4 input channels, 4 classes, 4 resolution levels, 32 base features, BatchNorm,
Dice + CE loss, AdamW. Sizes (batch 2): the BraTS paper's context minicube (core 80x96x96 plus
margins, aligned to 104x120x120) and nnU-Net's 128^3 patch. Modes: fp32, bf16, checkpointing,
bf16 + checkpointing (fp16 instead of bf16 on GPUs without native bf16).

Measured per size and mode:

* ``saved_bytes``: bytes autograd keeps for backward, counted with saved-tensor hooks during a
  forward pass at full size (storages deduplicated; checkpointed stages count their kept
  inputs). Measured at batch 1 and multiplied by the batch (it is exactly per-sample), which
  halves the benchmark's own RAM need.
* ``planner``: :mod:`partseg.train.planner`'s estimate for the same input (saved bytes and
  activation peak extrapolated from two small probes; total with parameters, gradients, AdamW
  state and 15% workspace).
* timing in a fresh process per mode (1 warm-up + ``--steps`` full training steps): median
  step time, peak RSS (``ru_maxrss``) and its increase over the process' RSS before the step;
  on CUDA also ``torch.cuda.max_memory_allocated``. On a CPU the timed steps run at a smaller
  size (``timing.spatial`` in the JSON; 64^3 by default, 32^3 with ``--quick``) so the run
  stays within a few minutes; on CUDA they run at full size.

Usage: ``python tools/bench_memory.py --json [--quick] [--steps 2]``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any

import torch

SIZES = {"brats_context_104x120x120": (104, 120, 120), "nnunet_patch_128": (128, 128, 128)}
MODES = {
    "fp32": ("off", False),
    "mixed": ("auto", False),
    "checkpointing": ("off", True),
    "mixed+checkpointing": ("auto", True),
}


def bench_config(spatial: tuple[int, ...], batch: int) -> Any:
    """The benchmark network as an ExperimentConfig whose input box is ``spatial``."""
    from partseg.config import config_from_dict

    return config_from_dict(
        {
            "model": {
                "name": "unet",
                "spatial_dims": 3,
                "in_channels": 4,
                "out_channels": 4,
                "depth": 4,
                "base_width": 32,
                "norm": "batch",
            },
            "partition": {"core": list(spatial), "margin": [0, 0, 0]},
            "loss": {"name": "dice_ce"},
            "optim": {"name": "adamw"},
            "train": {"batch_size": batch, "device": "cpu"},
        }
    )


def saved_bytes_forward(model: torch.nn.Module, x: torch.Tensor, amp: str) -> int:
    """Bytes saved for backward by one forward pass, autocast copies of the weights included."""
    from partseg.models.memory import saved_tensor_bytes
    from partseg.precision import resolve_precision

    with resolve_precision(amp, x.device).autocast():
        return saved_tensor_bytes(model, x, parameter_copies=True, backward=False)


def planner_estimate(spatial: tuple[int, ...], batch: int, amp: str, ckpt: bool, device: str):
    """The planner's estimate for one size and mode."""
    from partseg.models import build_model
    from partseg.train.planner import estimate, fit_activations

    config = bench_config(spatial, batch)
    model = build_model(config.model)
    largest = max(p.numel() for p in model.parameters())
    act = fit_activations(config, amp, ckpt, device)
    return estimate(config, act, model.num_parameters(), spatial, batch, device, largest)


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_rss() -> int:
    """VmHWM of this process (ru_maxrss would include the parent's RSS at fork)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed_steps(spatial, batch, amp, ckpt, steps, device, threads, queue) -> None:  # type: ignore[no-untyped-def]
    """Child process: warm-up + ``steps`` training steps; reports times and memory."""
    torch.set_num_threads(threads)
    from partseg.models import build_model
    from partseg.precision import resolve_precision
    from partseg.train.trainer import build_optimizer, compute_loss

    config = bench_config(spatial, batch)
    dev = torch.device(device)
    model = build_model(config.model).to(dev).train()
    model.set_grad_checkpointing(ckpt)
    optimizer = build_optimizer(model, config.optim)
    loss_fn = config.loss.build()
    settings = resolve_precision(amp, dev)
    scaler = settings.scaler()
    x = torch.randn(batch, 4, *spatial, device=dev)
    target = torch.randint(0, 4, (batch, *spatial), device=dev)
    mask = torch.ones(batch, *spatial, dtype=torch.bool, device=dev)
    core = tuple(slice(0, s) for s in spatial)
    times, baseline = [], 0
    for i in range(steps + 1):
        if i == 1:
            baseline = _rss()
            _reset_peak_rss()
            if dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(dev)
        start = time.perf_counter()
        with settings.autocast():
            out = model(x)
        loss = compute_loss(loss_fn, out, target, mask, core)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        del out, loss
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - start)
    peak_rss = _peak_rss()
    result = {
        "step_s": statistics.median(times),
        "amp": settings.mode,
        "peak_rss_bytes": peak_rss,
        "rss_before_step_bytes": baseline,
    }
    if dev.type == "cuda":
        result["cuda_max_memory_allocated"] = int(torch.cuda.max_memory_allocated(dev))
    queue.put(result)


def saved_in_child(spatial, amp, ckpt, device, threads, queue) -> None:  # type: ignore[no-untyped-def]
    """Child process: saved-for-backward bytes of one batch-1 forward at full size."""
    torch.set_num_threads(threads)
    from partseg.models import build_model

    model = build_model(bench_config(spatial, 1).model).to(device).train()
    model.set_grad_checkpointing(ckpt)
    x = torch.randn(1, 4, *spatial, device=device)
    queue.put(saved_bytes_forward(model, x, amp))


def in_child(target, *args):  # type: ignore[no-untyped-def]
    """Run ``target(*args, queue)`` in a fresh process (its memory is returned on exit)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def run_timed(spatial, batch, amp, ckpt, steps, device, threads) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return in_child(timed_steps, spatial, batch, amp, ckpt, steps, device, threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON only (default: text)")
    parser.add_argument(
        "--quick", action="store_true", help="time steps at 32^3 on CPU (default: 64^3)"
    )
    parser.add_argument("--steps", type=int, default=2, help="timed steps per mode (default 2)")
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    from partseg.models import build_model

    started = time.perf_counter()
    model = build_model(bench_config(SIZES["nnunet_patch_128"], 1).model).to(device)
    result: dict[str, Any] = {
        "network": "3D U-Net, 4 in, 4 classes, depth 4 (3 poolings), base 32, BatchNorm",
        "parameters": model.num_parameters(),
        "batch": args.batch,
        "device": device,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "saved_bytes": {},
    }
    for name, spatial in SIZES.items():
        rows: dict[str, Any] = {}
        for mode, (amp, ckpt) in MODES.items():
            saved = in_child(saved_in_child, spatial, amp, ckpt, device, args.threads)
            measured = saved * args.batch
            est = planner_estimate(spatial, args.batch, amp, ckpt, device)
            rows[mode] = {
                "measured": measured,
                "planner_saved": est.saved_for_backward,
                "planner_error": round(est.saved_for_backward / measured - 1, 4),
                "planner_activation_peak": est.activations,
                "planner_total": est.total,
            }
        for mode in rows:
            rows[mode]["share_of_fp32"] = round(
                rows[mode]["measured"] / rows["fp32"]["measured"], 4
            )
        result["saved_bytes"][name] = rows
    del model
    if device == "cuda":
        timing_sizes = SIZES
    else:
        side = 32 if args.quick else 64
        timing_sizes = {f"cpu_{side}^3": (side, side, side)}
    result["timing"] = {}
    for name, spatial in timing_sizes.items():
        rows = {}
        for mode, (amp, ckpt) in MODES.items():
            row = run_timed(spatial, args.batch, amp, ckpt, args.steps, device, args.threads)
            est = planner_estimate(spatial, args.batch, amp, ckpt, device)
            row["planner_total"] = est.total
            row["planner_allocated"] = est.allocated
            if "cuda_max_memory_allocated" in row:
                row["planner_error_vs_cuda"] = round(
                    est.allocated / row["cuda_max_memory_allocated"] - 1, 4
                )
            rows[mode] = row
        result["timing"][name] = {"spatial": list(spatial), "quick": args.quick, "modes": rows}
    result["targets"] = targets(result)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(json.dumps(result["targets"], indent=1))
    return 0


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Checkpointing + mixed precision: <= 20% of fp32 saved bytes at <= 1.3x the mixed step
    time; planner saved-bytes estimate within 15% of the hook measurement."""
    shares = {
        n: r["mixed+checkpointing"]["share_of_fp32"] for n, r in result["saved_bytes"].items()
    }
    errors = [abs(m["planner_error"]) for r in result["saved_bytes"].values() for m in r.values()]
    ratios = {
        n: round(t["modes"]["mixed+checkpointing"]["step_s"] / t["modes"]["mixed"]["step_s"], 3)
        for n, t in result["timing"].items()
    }
    out: dict[str, Any] = {
        "ckpt_mixed_saved_share_of_fp32": shares,
        "saved_share_ok (<= 0.20)": all(s <= 0.2 for s in shares.values()),
        "ckpt_mixed_time_ratio_to_mixed": ratios,
        "time_ratio_ok (<= 1.3)": all(r <= 1.3 for r in ratios.values()),
        "planner_saved_max_abs_error": max(errors),
        "planner_saved_ok (<= 0.15)": max(errors) <= 0.15,
    }
    cuda = [
        abs(m["planner_error_vs_cuda"])
        for t in result["timing"].values()
        for m in t["modes"].values()
        if "planner_error_vs_cuda" in m
    ]
    if cuda:
        out["planner_vs_cuda_max_abs_error"] = max(cuda)
        out["planner_cuda_ok (<= 0.15)"] = max(cuda) <= 0.15
    if not math.isfinite(max(errors)):
        out["planner_saved_ok (<= 0.15)"] = False
    return out


if __name__ == "__main__":
    sys.exit(main())
