"""GPU check: do the planner's choices for 4, 6 and 8 GiB cards really fit? One command, JSON out.

For every training recipe of ``configs/`` (a comparison recipe contributes each of its
variants; ``configs/default.yaml`` first) and each budget, the planner chooses core, batch,
mixed precision and checkpointing as it does on a machine without a GPU (activations measured
with CPU kernels, stated allowances: the figures users see when they plan on a laptop). Then
5 training steps of that choice run on the GPU through the trainer's own code
(:func:`partseg.train.steps.run_steps`: same ``cudnn.benchmark``, precision rule, GradScaler,
checkpointing, channels layout) under a per-process memory cap of ``budget - context``, so the
caching allocator behaves as on a card of that size. Recorded per run:
``torch.cuda.max_memory_reserved``, ``max_memory_allocated``, the device total in use
(``torch.cuda.mem_get_info``), the planner's estimate and its error, and the step time. For
``configs/default.yaml`` the GPU-calibrated plan (what ``partseg plan`` picks on a GPU) is
checked too. Then exact inference of a 4 x 155 x 240 x 240 case with the library's prediction
entry point (:func:`exact_inference`: the layer-wise engine) for each BraTS-shaped 3D model,
without a cap: time and peak memory, whether that peak would fit the smallest budget
(informational), and the plain whole-volume forward's time and peak next to it.

Identical runs (same model, input, batch, precision, checkpointing, loss and optimizer) are
measured once: a run that fits a smaller budget's cap fits a larger one's, and is recorded
against each budget with ``same_run_as``. A time limit (default 270 s) keeps the check within
5 minutes on one GPU: what is left when it runs out is listed under ``skipped``. Progress goes
to stderr.

Exit status: 1 when any training run exceeds its budget (out of memory under the cap, or
reserved memory plus context above the budget), else 0. Without CUDA it says so in one line
and exits 0.

Usage::

    python tools/gpu_check.py --out docs/benchmarks/gpu_check.json
    python tools/gpu_check.py --device cpu --quick --recipes default tiny   # dry run on a CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

BUDGETS = ("4GiB", "6GiB", "8GiB")
CASE_SHAPE = (4, 155, 240, 240)
QUICK_CASE_SHAPE = (4, 20, 28, 28)
#: tiny sizes for --quick: every recipe shrunk to seconds on a CPU
QUICK_OVERRIDES = {"model.depth": 2, "model.base_width": 4, "train.batch_size": 2}
QUICK_CORE = {3: [8, 16, 16], 2: [1, 32, 32]}


@dataclass(frozen=True)
class Measurement:
    """What training steps (or an inference) held and took; None where the device cannot
    tell (CPU)."""

    seconds: float
    max_allocated: int | None = None
    max_reserved: int | None = None
    device_used: int | None = None
    oom: bool = False
    error: str | None = None


@dataclass
class Clock:
    """Elapsed time against the time limit; progress lines on stderr."""

    limit_s: float
    start: float = field(default_factory=time.perf_counter)
    quiet: bool = False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self, needed: float = 0.0) -> bool:
        return self.elapsed + needed <= self.limit_s

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- what to check --------------------------------------------------------------------------


def training_configs(names: Sequence[str] | None, quick: bool) -> list[tuple[str, Any]]:
    """(label, ExperimentConfig) of every training recipe, ``default`` first; a comparison
    recipe gives one per variant (``recipe/variant``). ``quick`` shrinks them all."""
    from partseg.config import config_from_dict, load_config, read_yaml_mapping
    from partseg.experiments.config import experiment_dict, load_compare_config
    from partseg.recipes import recipe_names, recipe_path
    from partseg.train.planner import planning_channels

    names = list(names or recipe_names())
    names.sort(key=lambda n: (n != "default", n))
    configs = []
    for name in names:
        path = recipe_path(name)
        if "variants" in read_yaml_mapping(path):
            compare = load_compare_config(path, quick=quick)
            for variant in compare.variants:
                raw = experiment_dict(compare, variant)
                configs.append((f"{name}/{variant.name}", config_from_dict(raw)))
        else:
            config = planning_channels(load_config(path))  # unset in/out channels: BraTS 4 / 4
            configs.append((name, _quick(config) if quick else config))
    return configs


def _quick(config: Any) -> Any:
    from partseg.config import apply_overrides

    dims = config.partition.spatial_dims
    overrides = dict(QUICK_OVERRIDES, **{"partition.core": QUICK_CORE[dims]})
    overrides["partition.margin"] = [2, 2, 2] if dims == 3 else [0, 0, 0]
    return apply_overrides(config, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def memory_key(config: Any) -> str:
    """What decides a step's memory: model, input geometry, batch, precision, checkpointing,
    loss and optimizer."""
    partition = config.partition
    return json.dumps(
        [
            asdict(config.model),
            [partition.spatial_dims, partition.slice_axis, partition.context_slices],
            [list(partition.core), list(partition.margin)],
            [config.train.batch_size, config.train.amp, config.train.checkpointing],
            [config.loss.name, config.optim.name, config.optim.momentum > 0],
        ],
        sort_keys=True,
        default=str,
    )


# -- measuring ------------------------------------------------------------------------------


Measure = Callable[[Any, int, int, str], Measurement]


def measure_training(config: Any, budget: int, context: int, device: str) -> Measurement:
    """5 training steps of ``config`` by the trainer's code; on CUDA under a memory cap of
    ``budget - context`` (a card of that size). An out-of-memory error is a measurement."""
    from partseg.train.steps import run_steps

    start = time.perf_counter()
    with memory_cap(budget - context, device):
        try:
            stats = run_steps(config, 5, device)
        except torch.cuda.OutOfMemoryError as err:
            return Measurement(time.perf_counter() - start, oom=True, error=_short(err))
    return Measurement(
        stats.median_step_s, stats.max_allocated, stats.max_reserved, stats.device_used
    )


def exact_inference(model: Any, case: Any, partition: Any, layout: Any, device: str) -> Any:
    """Seam-free prediction of ``case`` as ``partseg predict`` runs it by default.

    The one place this check calls the prediction pipeline: a
    :class:`~partseg.infer.pipeline.CasePredictor` with the default settings (the ``exact``
    mode: the layer-wise engine, feature rows in pinned host memory), so whichever engine is
    the default is the one measured. The whole-volume forward is measured next to it.
    """
    from partseg.infer.pipeline import CasePredictor
    from partseg.infer.settings import PredictSettings

    settings = PredictSettings(device=device)
    predictor = CasePredictor.from_model(model, partition, layout, settings, log=lambda _: None)
    return predictor.predict(case).probabilities


def whole_volume_forward(model: Any, case: Any, device: str) -> Any:
    """``model(volume)``: the case zero-padded at the end to the stride, one forward pass."""
    from partseg.infer.engine import stride_padded

    shape = case.shape
    x = torch.zeros(1, case.n_channels, *stride_padded(shape, int(model.total_stride)))
    x[0, :, : shape[0], : shape[1], : shape[2]] = torch.from_numpy(case.image)
    with torch.inference_mode():
        return torch.softmax(model(x.to(device)), 1)[0, :, : shape[0], : shape[1], : shape[2]]


def measure_inference(
    config: Any, shape: tuple[int, ...], device: str, method: str = "exact"
) -> Measurement:
    """Inference of a random case of ``shape`` (C, Z, Y, X) with a random-weight model,
    uncapped, its real peak: ``exact`` (the default prediction) or ``whole`` (the plain
    whole-volume forward, for comparison)."""
    from partseg.infer import ArrayCase
    from partseg.models import build_model

    torch.manual_seed(0)
    model = build_model(config.model).to(device).eval()
    partition = config.partition.build(config.model.total_stride)
    image = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    case = ArrayCase("synthetic", image)
    _reset_peaks(device)
    start = time.perf_counter()
    try:
        if method == "whole":
            whole_volume_forward(model, case, device)
        else:
            exact_inference(model, case, partition, config.partition.layout(), device)
    except torch.cuda.OutOfMemoryError as err:
        return Measurement(time.perf_counter() - start, oom=True, error=_short(err))
    seconds = time.perf_counter() - start
    peaks = _peaks(device)
    del model
    _reset_peaks(device)
    return Measurement(seconds, *peaks)


class memory_cap:
    """Caps this process' CUDA allocator at ``limit`` bytes inside the context (no-op on CPU)."""

    def __init__(self, limit: int, device: str) -> None:
        self.limit, self.device = limit, torch.device(device)

    def __enter__(self) -> None:
        if self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory
            fraction = min(1.0, max(self.limit, 0) / total)
            torch.cuda.set_per_process_memory_fraction(fraction, self.device)

    def __exit__(self, *_exc: object) -> None:
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0, self.device)


def _reset_peaks(device: str) -> None:
    if torch.device(device).type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peaks(device: str) -> tuple[int | None, int | None, int | None]:
    if torch.device(device).type != "cuda":
        return None, None, None
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    return (int(torch.cuda.max_memory_allocated(device)),
            int(torch.cuda.max_memory_reserved(device)), int(total - free))  # fmt: skip


def _short(err: BaseException) -> str:
    return str(err).splitlines()[0][:300]


# -- records and verdicts -------------------------------------------------------------------


def run_record(label: str, planner: str, budget: int, estimate: Any, measured: Measurement,
               context: int | None) -> dict[str, Any]:  # fmt: skip
    """One training run: the choice, the estimate, the measurement, the errors, the verdict."""
    from partseg.train.calibration import DevicePeak, estimate_errors

    record: dict[str, Any] = {
        "recipe": label,
        "planner": planner,
        "budget": budget,
        "core": list(estimate.core),
        "input_size": list(estimate.input_size),
        "batch_size": estimate.batch_size,
        "amp": estimate.amp,
        "checkpointing": estimate.checkpointing,
        "estimate": {
            "allocated": estimate.allocated,
            "reserved": estimate.reserved,
            "total": estimate.total,
            "source": estimate.source,
        },
        "step_s": round(measured.seconds, 4),
        "max_memory_allocated": measured.max_allocated,
        "max_memory_reserved": measured.max_reserved,
        "device_used": measured.device_used,
        "context": context,
        "oom": measured.oom,
    }
    if measured.error:
        record["error"] = measured.error
    if measured.max_reserved is not None and measured.max_allocated and context is not None:
        peak = DevicePeak(measured.max_allocated, measured.max_reserved)
        record["device_total"] = measured.max_reserved + context
        record["estimate_error"] = estimate_errors(estimate, peak, context)
    record["exceeds_budget"] = exceeds(record)
    return record


def exceeds(record: dict[str, Any]) -> bool | None:
    """True when the run ran out of memory or its device total passed the budget; None when
    the device cannot tell (CPU)."""
    if record.get("oom"):
        return True
    total = record.get("device_total")
    return None if total is None else total > record["budget"]


def failures(report: dict[str, Any]) -> list[str]:
    """One line per run that exceeded its budget."""
    lines = []
    for record in report["training"]:
        if record.get("exceeds_budget"):
            what = "out of memory" if record.get("oom") else f"{record.get('device_total')} B"
            lines.append(f"{record['recipe']} @ {record['budget']} B: {what}")
    return lines


def exit_code(report: dict[str, Any]) -> int:
    return 1 if failures(report) else 0


# -- the check ------------------------------------------------------------------------------


def check(
    args: argparse.Namespace,
    measure: Measure = measure_training,
    infer: Callable[..., Measurement] = measure_inference,
    context_of: Callable[[str], int | None] | None = None,
) -> dict[str, Any]:
    """Plan, run and record everything the arguments ask for; returns the report.

    ``measure``, ``infer`` and ``context_of`` (the device context, None on a CPU) are the
    device-facing parts, replaced by fakes in tests.
    """
    from partseg.train.planner import apply_estimate, measure_laws, parse_size, plan_from_laws

    clock = Clock(args.time_limit, quiet=args.quiet)
    budgets = sorted(parse_size(b) for b in args.budgets)  # fits a small cap: fits larger ones
    context = (context_of or _context)(args.device)
    report: dict[str, Any] = {"device": _device_name(args.device), "torch": torch.__version__,
                              "budgets": budgets, "context": context, "quick": args.quick,
                              "training": [], "inference": [], "skipped": []}  # fmt: skip
    configs = training_configs(args.recipes, args.quick)
    done: dict[str, dict[str, Any]] = {}
    laws_of: dict[str, Any] = {}  # variants that differ in nothing memory-relevant plan once
    for label, config in configs:
        if not clock.left():
            report["skipped"].append(f"training {label}: time limit")
            continue
        plan_key = memory_key(config)
        if plan_key not in laws_of:
            clock.say(f"planning {label}")
            laws_of[plan_key] = measure_laws(config, device_type="cuda", probe=None)
        plans = [("cpu", laws_of[plan_key])]
        if label == "default" and args.device == "cuda" and not args.no_calibrate:
            from partseg.train.calibration import CudaProbe

            plans.append(("calibrated", measure_laws(config, probe=CudaProbe(args.device))))
        for planner, laws in plans:
            for budget in budgets:
                plan = plan_from_laws(config, laws, budget)
                if plan.chosen is None:
                    report["training"].append({"recipe": label, "planner": planner,
                                               "budget": budget, "fits": False})  # fmt: skip
                    continue
                chosen = apply_estimate(config, plan.chosen)
                key = memory_key(chosen)
                if key in done and not done[key]["oom"]:
                    # it fitted a smaller cap: under this one it fits too; the verdict is
                    # this budget's
                    same = {**done[key], "recipe": label, "planner": planner, "budget": budget}
                    same["same_run_as"] = f"{done[key]['recipe']} @ {done[key]['budget']} B"
                    same["exceeds_budget"] = exceeds(same)
                    report["training"].append(same)
                    continue
                if not clock.left(10):
                    report["skipped"].append(f"{label} @ {budget} B: time limit")
                    continue
                measured = measure(chosen, budget, context or 0, args.device)
                done[key] = run_record(label, planner, budget, plan.chosen, measured, context)
                clock.say(_line(done[key]))
                report["training"].append(done[key])
    _inference(report, configs, budgets[0], context, args, clock, infer)
    report["failures"] = failures(report)
    report["wall_s"] = round(clock.elapsed, 1)
    return report


def _inference(report, configs, budget, context, args, clock, infer) -> None:  # type: ignore[no-untyped-def]
    """Exact inference per BraTS-shaped 3D model; informational: the smallest budget is
    recorded for comparison (``fits_budget``), not a verdict."""
    shape = QUICK_CASE_SHAPE if args.quick else CASE_SHAPE
    seen: set[str] = set()
    for label, config in configs:
        model_key = json.dumps(asdict(config.model), sort_keys=True, default=str)
        brats = config.model.spatial_dims == 3 and config.model.in_channels == shape[0]
        if not brats or model_key in seen:
            continue
        seen.add(model_key)
        if not clock.left(30):
            report["skipped"].append(f"inference {label}: time limit")
            continue
        measured = infer(config, shape, args.device)
        whole = infer(config, shape, args.device, "whole")
        record = {"recipe": label, "case_shape": list(shape),
                  "engine": "CasePredictor, default settings (exact: the layer-wise engine)",
                  "whole_volume_forward": {"seconds": round(whole.seconds, 3), "oom": whole.oom,
                                           "max_memory_allocated": whole.max_allocated,
                                           "max_memory_reserved": whole.max_reserved},
                  "seconds": round(measured.seconds, 3), "oom": measured.oom,
                  "max_memory_allocated": measured.max_allocated,
                  "max_memory_reserved": measured.max_reserved,
                  "device_used": measured.device_used, "smallest_budget": budget}  # fmt: skip
        if measured.error:
            record["error"] = measured.error
        if measured.max_reserved is not None and context is not None:
            record["device_total"] = measured.max_reserved + context
            record["fits_budget"] = record["device_total"] <= budget
        report["inference"].append(record)
        clock.say(f"inference {label} {shape}: {record['seconds']} s")


def _line(record: dict[str, Any]) -> str:
    from partseg.train.planner import format_size

    mode = f"b{record['batch_size']} amp={record['amp']} ckpt={record['checkpointing']}"
    head = f"{record['recipe']} @ {format_size(record['budget'])} ({record['planner']}): core "
    head += f"{'x'.join(map(str, record['core']))} {mode}, {record['step_s']} s/step"
    if record.get("oom"):
        return head + ": OUT OF MEMORY"
    if "device_total" in record:
        error = record["estimate_error"]["total"]
        verdict = "EXCEEDS" if record["exceeds_budget"] else "ok"
        return (
            head
            + f", device total {format_size(record['device_total'])} "
            + (f"(estimate {error:+.1%}) {verdict}")
        )
    return head


def _context(device: str) -> int | None:
    if torch.device(device).type != "cuda":
        return None
    from partseg.train.calibration import CudaProbe

    return CudaProbe(device).context_bytes()


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny models and case (a CPU dry run; default off)"
    )
    parser.add_argument("--recipes", nargs="+", default=None, help="recipe names (default all)")
    parser.add_argument(
        "--budgets", nargs="+", default=list(BUDGETS), help="budgets (default 4GiB 6GiB 8GiB)"
    )
    parser.add_argument(
        "--time-limit", type=float, default=270.0, help="seconds before skipping (default 270)"
    )
    parser.add_argument(
        "--no-calibrate", action="store_true", help="skip the GPU-calibrated default plan"
    )
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible, nothing to check (dry run: --device cpu --quick)")
        return 0
    report = check(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        from partseg.atomic import write_text

        write_text(args.out, text + "\n")
    for line in report["failures"]:
        print(f"gpu_check: exceeds its budget: {line}", file=sys.stderr)
    return exit_code(report)


if __name__ == "__main__":
    sys.exit(main())
