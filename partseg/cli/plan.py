"""``partseg plan CONFIG --gpu-mem 4GiB``: estimate training memory and fit it to a budget.

CONFIG is a training config or a recipe with ``--variant NAME`` (see :mod:`partseg.cli.train`).

The planner (:mod:`partseg.train.planner`) measures the configured network's activation memory
with a dry forward/backward at two small sizes, adds parameters, gradients, optimizer state, a
15% workspace allowance and the CUDA context, and proposes the largest core / batch, with mixed
precision and gradient checkpointing on or off, that fits. On a machine with a GPU it also runs
the chosen configuration once and prints the estimate next to ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json

from partseg.cli.train import add_config, add_overrides, load_run_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg plan``."""
    p = subparsers.add_parser(
        "plan",
        help="estimate training memory and pick the core / batch that fits a GPU budget",
        description="Estimate peak training memory of a recipe and propose the largest core "
        "and batch (with mixed precision and checkpointing on or off) that fit --gpu-mem.",
    )
    add_config(p)
    add_overrides(p, "config overrides such as model.base_width=16 (default: none)")
    p.add_argument(
        "--gpu-mem", required=True, metavar="SIZE", help="budget: 4GiB, 4GB, 4096MiB or 6g"
    )
    p.add_argument(
        "--device-type",
        choices=("cuda", "cpu"),
        default="cuda",
        help="plan for a GPU (adds the CUDA context) or for CPU RAM (default: cuda)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the measured step on the GPU (default: verify when a GPU is visible)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON (default: text)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from partseg.train.planner import (
        apply_estimate,
        format_size,
        measure_cuda_peak,
        parse_size,
        plan_memory,
    )

    config, _ = load_run_config(args, args.overrides)
    budget = parse_size(args.gpu_mem)
    plan = plan_memory(config, budget, device_type=args.device_type)
    result = plan.as_dict()
    verify = plan.chosen is not None and torch.cuda.is_available() and not args.no_verify
    if verify:
        assert plan.chosen is not None
        measured = measure_cuda_peak(apply_estimate(config, plan.chosen), plan.chosen)
        result["cuda_max_memory_allocated"] = measured
        result["estimate_allocated"] = plan.chosen.allocated
    if args.json:
        print(json.dumps(result, indent=1))
        return 0 if plan.chosen is not None else 1
    print(f"budget {format_size(budget)} ({args.device_type}), {plan.n_parameters:,} parameters")
    for estimate in plan.best_per_mode:
        marker = "*" if estimate == plan.chosen else " "
        print(f"{marker} {estimate.describe()}")
    if plan.chosen is None:
        from partseg.train.planner import require_fit

        require_fit(plan)  # raises a ConfigError that says what would fit
    if verify:
        estimated = format_size(result["estimate_allocated"])
        measured_text = format_size(result["cuda_max_memory_allocated"])
        print(
            f"estimate (allocated, no context/workspace) {estimated} vs "
            f"torch.cuda.max_memory_allocated {measured_text}"
        )
    return 0
