"""``partseg train CONFIG``: train one model into a run directory.

CONFIG is a training config (``configs/default.yaml``) or a recipe (a compare config such as
``configs/brats_3d_context.yaml``) with ``--variant NAME`` naming the variant to train (optional
when the recipe has one). The run directory receives the resolved ``config.yaml``,
``metrics.jsonl`` / ``metrics.csv``, ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (see
:mod:`partseg.train.trainer`). ``--gpu-mem 4GiB`` lets the memory planner pick the largest core
/ batch (and mixed precision, checkpointing) that fits; ``key=value`` arguments override config
keys, e.g. ``train.epochs=20 data.store=brats.zarr``.

A rerun of the same command resumes an interrupted run from ``checkpoints/last.pt`` (a finished
run is left as it is); a run of another config in the same folder is refused unless
``--overwrite`` replaces it or ``--resume`` continues it with the new training settings (e.g.
more epochs; :func:`partseg.train.rundir.run_state`).

Data-parallel training: ``--nproc N`` starts N processes on this machine through
``torch.distributed.run`` (the same as ``torchrun --standalone --nproc_per_node N -m partseg
train CONFIG``); ``train.batch_size`` is per process, BatchNorm is synchronised across them
(``train.sync_batchnorm``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from partseg.config import ExperimentConfig
    from partseg.train.distributed import DistContext

from partseg.cli.options import (
    add_amp,
    add_device,
    add_json,
    add_no_progress,
    add_overwrite,
    memory_size,
    nonnegative_int,
    positive_int,
)

Log = Callable[[str], None]


class IntermixedParser(argparse.ArgumentParser):
    """A parser whose ``key=value`` positionals may follow options (``CONFIG --out DIR a=b``).

    Plain argparse assigns the empty list to a ``nargs="*"`` positional when it first meets
    CONFIG, then rejects overrides after an option; intermixed parsing reads all positionals.
    """

    _inside = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def,override]
        if self._inside:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """The ``key=value`` positionals (``help`` gives the example), allowed after options."""
    p.__class__ = IntermixedParser
    p.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def add_config(p: argparse.ArgumentParser) -> None:
    """The CONFIG positional (a YAML file or a built-in recipe's name) and ``--variant``."""
    p.add_argument(
        "config",
        type=Path,
        help="training config or recipe: a YAML file, e.g. configs/default.yaml or "
        "configs/brats_3d_context.yaml, or the name of a built-in one, e.g. tiny",
    )
    p.add_argument(
        "--variant",
        default=None,
        metavar="NAME",
        help="the variant of a recipe (a compare config with variants) to use (default: its "
        "only variant; required when it has several)",
    )


def load_run_config(args: argparse.Namespace, overrides: list[str]) -> tuple[ExperimentConfig, str]:
    """The experiment config CONFIG (and ``--variant``) name, and the default run name.

    The run name is the config's file stem, plus ``/<variant>`` for a recipe.
    """
    from partseg.experiments.config import load_training_config
    from partseg.recipes import resolve_config

    args.config = resolve_config(args.config)
    config, variant = load_training_config(args.config, overrides, variant=args.variant)
    name = args.config.stem if variant is None else f"{args.config.stem}/{variant}"
    return config, name


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``partseg train``."""
    p = subparsers.add_parser(
        "train",
        help="train a 2D/3D U-Net on minicubes of an ingested store",
        description="Train a segmentation model from a YAML recipe (configs/*.yaml) with "
        "mixed precision, gradient checkpointing, stitched full-volume validation and exact "
        "resume.",
    )
    add_common_arguments(p, "the run's summary (best and last epoch records, run directory)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default: runs/<config name>[/<variant>], plus /fold_K with --fold)",
    )
    add_resume_or_overwrite(p, "the run in --out (checkpoints, metrics, config)")
    p.add_argument(
        "--fold",
        type=nonnegative_int,
        default=None,
        help="cross-validation fold to train, 0..data.folds-1 (default: data.fold of the "
        "config; sets data.folds=5 when the config has none)",
    )
    p.set_defaults(func=run)


def add_common_arguments(p: argparse.ArgumentParser, result: str) -> None:
    """CONFIG, the key=value overrides, --gpu-mem, --device, --amp, --nproc, --no-progress,
    --json (printing ``result``) and the deprecated --resume, shared by train and cv."""
    add_config(p)
    add_overrides(
        p, "config overrides such as train.epochs=10 partition.core=[64,64,64] (default: none)"
    )
    p.add_argument(
        "--gpu-mem",
        type=memory_size,
        default=None,
        metavar="SIZE",
        help="memory budget (4GiB, 4GB, 4096MiB, 6g): the planner picks core, batch, mixed "
        "precision and checkpointing to fit it (default: use the config as is)",
    )
    add_device(p, default=None, note="; sets train.device")
    add_amp(p, default=None, note="; sets train.amp")
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=None,
        metavar="N",
        help="data-parallel training in N processes on this machine (one per GPU, or CPU "
        "processes), started through torch.distributed.run; train.batch_size is per process, "
        "so the global batch is N x train.batch_size (default: one process)",
    )
    add_no_progress(p)
    add_json(p, result)
    add_budget(p)


def add_resume_or_overwrite(p: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite`` (replace ``what``) or ``--resume`` (continue with changed settings)."""
    group = p.add_mutually_exclusive_group()
    add_overwrite(group, what)  # type: ignore[arg-type]
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue from checkpoints/last.pt even when training settings changed, e.g. "
        "train.epochs=30 to train a finished run longer; the model must be the same (default: "
        "a rerun resumes only the same config)",
    )


def train_overrides(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """``--device``, ``--amp`` and ``--no-progress`` as config overrides (after the others).

    Example:
        >>> ns = argparse.Namespace(device="cpu", amp=None, no_progress=True)
        >>> train_overrides(ns, ["train.epochs=2"])
        ['train.epochs=2', 'train.device=cpu', 'train.progress=false']
    """
    extra = [] if args.device is None else [f"train.device={args.device}"]
    extra += [] if args.amp is None else [f"train.amp={args.amp}"]
    extra += ["train.progress=false"] if args.no_progress else []
    return [*overrides, *extra]


def prepare_run(
    run_dir: Path,
    config: ExperimentConfig,
    args: argparse.Namespace,
    ctx: DistContext,
    log: Log,
    *,
    resume: bool | None = None,
) -> str:
    """What to do in ``run_dir``: ``empty`` (train), ``resume`` or ``finished`` (nothing).

    ``--overwrite`` removes an earlier run's outputs first (rank 0, holding the folder's lock);
    otherwise a run of another config there is refused unless ``--resume`` (``resume``, default
    ``args.resume``; :func:`~partseg.train.rundir.run_state`).
    """
    from partseg.train.distributed import barrier
    from partseg.train.rundir import RUN_OUTPUTS, clear_outputs, run_state

    if not args.overwrite:
        resume = args.resume if resume is None else resume
        return run_state(run_dir, config.to_dict(), resume=resume)
    if ctx.is_main and clear_outputs(run_dir, RUN_OUTPUTS, "train"):
        log(f"--overwrite: removed the earlier run in {run_dir}")
    barrier(ctx)
    return "empty"


def duration(text: str) -> str:
    """An argparse type: a duration such as ``90s``, ``60m`` or ``1.5h`` (kept as written)."""
    from partseg.durations import parse_duration
    from partseg.errors import ConfigError

    try:
        parse_duration(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_budget(p: argparse.ArgumentParser) -> None:
    """``--budget DURATION``: train for a wall time of steps instead of a number of epochs."""
    p.add_argument(
        "--budget",
        type=duration,
        default=None,
        metavar="DURATION",
        help="wall time of training steps (90s, 60m, 1.5h; sets train.budget): the step time "
        "is measured and epochs x steps per epoch chosen to fill it; validation is not "
        "counted and is capped (default: train.budget of the config, else its epochs)",
    )


def budget_overrides(budget: str | None, overrides: list[str]) -> list[str]:
    """``--budget`` as a config override (after the others, so it wins)."""
    return [*overrides, f"train.budget={budget}"] if budget else list(overrides)


def fold_overrides(fold: int | None, overrides: list[str]) -> list[str]:
    """``--fold K`` as config overrides (``data.folds`` defaults to 5, as in the papers)."""
    if fold is None:
        return list(overrides)
    extra = [f"data.fold={fold}"]
    if not any(o.startswith("data.folds=") for o in overrides):
        extra.insert(0, "data.folds=5")
    return [*overrides, *extra]


def fit_to_budget(config, size: str, device_type: str, log=print):  # type: ignore[no-untyped-def]
    """Apply the memory planner's choice for a ``--gpu-mem`` budget and log it."""
    from partseg.train.planner import (
        apply_estimate,
        fit_to_data,
        parse_size,
        plan_memory,
        require_fit,
    )

    budget = parse_size(size)
    planned = fit_to_data(config, log)  # in/out channels and core as training will fit them
    chosen = require_fit(plan_memory(planned, budget, device_type=device_type))
    log(f"memory planner, budget {size}: chose\n{chosen.describe()}")
    return apply_estimate(config, chosen)


def run(args: argparse.Namespace) -> int:
    import json

    from partseg.errors import ConfigError
    from partseg.train.distributed import init_distributed, launch, shutdown
    from partseg.train.trainer import train

    overrides = train_overrides(
        args, budget_overrides(args.budget, fold_overrides(args.fold, args.overrides))
    )
    config, name = load_run_config(args, overrides)  # a bad config stops before any process starts
    if args.nproc:
        return launch(args.nproc, args.argv)
    if args.fold is not None and config.data.folds and args.fold >= config.data.folds:
        raise ConfigError(f"--fold {args.fold} is outside 0..{config.data.folds - 1}")
    run_dir = args.out
    if run_dir is None:
        run_dir = Path("runs") / name
        if config.data.folds:
            run_dir = run_dir / f"fold_{config.data.fold}"
    ctx = init_distributed(config.train.device)
    say = command_log(args, ctx)
    try:
        if args.gpu_mem:
            config = fit_to_budget(config, args.gpu_mem, ctx.device.type, say)
        state = prepare_run(run_dir, config, args, ctx, say)
        if state == "finished":
            say(f"{run_dir} holds a finished run of this config; nothing to do (--overwrite "
                "trains it again)")  # fmt: skip
        else:
            train(config, run_dir, resume=state == "resume", dist=ctx, log=say)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        if args.json:
            summary = json.loads((run_dir / "summary.json").read_text())
            print(json.dumps({"run_dir": str(run_dir), **summary}, indent=2))
        else:
            print(f"run directory: {run_dir}")
    return 0


def command_log(args: argparse.Namespace, ctx: DistContext) -> Log:
    """Rank 0's log lines: stdout, or stderr with ``--json`` (stdout then holds only JSON)."""
    import sys

    if not ctx.is_main:
        return lambda _message: None
    if args.json:
        return lambda message: print(message, file=sys.stderr, flush=True)
    return print
