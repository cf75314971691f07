"""Training the variants: one resumable run per variant and fold, and what each run cost."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from partseg.atomic import write_json
from partseg.errors import ConfigError
from partseg.experiments.config import CompareConfig, Variant, experiment_dict
from partseg.experiments.data import Split
from partseg.train.rundir import config_changes

if TYPE_CHECKING:
    from partseg.config.experiment import ExperimentConfig


def run_dir_of(out: Path, name: str, fold: int) -> Path:
    """Where variant ``name`` trains on fold ``fold``: ``OUT/runs/<name>/fold<k>``."""
    return out / "runs" / name / f"fold{fold}"


def train_variant(
    config: CompareConfig,
    variant: Variant,
    fold: int,
    store: str,
    split: Split,
    out: Path,
    *,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Path:
    """Train (or resume, or skip when finished) one variant on one fold; returns the run dir.

    Raises:
        ConfigError: the run directory holds a run of a different config.
    """
    from partseg.train.trainer import Trainer

    experiment = variant_experiment(config, variant, fold, store, split, progress=progress)
    run_dir = run_dir_of(out, variant.name, fold)
    changed = config_changes(run_dir, experiment.to_dict())
    if changed:
        raise ConfigError(
            f"{run_dir} holds a run of variant {variant.name} with another config "
            f"({'; '.join(changed[:4])}); use another --out, or --overwrite to retrain"
        )
    if (run_dir / "summary.json").is_file():
        log(f"{variant.name} fold {fold}: finished run found in {run_dir}, not retrained")
        return run_dir
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    log(f"{variant.name} fold {fold}: {'resuming' if resume else 'training'} in {run_dir}")
    cuda = _reset_cuda_peak(experiment.train.device)
    Trainer(experiment, run_dir, resume=resume, log=log).run()
    if cuda:
        import torch

        peak = torch.cuda.max_memory_allocated() / 2**20
        write_json(run_dir / "cost.json", {"peak_memory_mb": peak}, indent=None)
    return run_dir


def variant_experiment(
    config: CompareConfig, variant: Variant, fold: int, store: str, split: Split, *,
    progress: bool = True,
) -> ExperimentConfig:  # fmt: skip
    """The training config of one variant on one fold of the split."""
    from partseg.config import config_from_dict

    train_cases, val_cases = split.folds[fold]
    raw = experiment_dict(
        config, variant, store=store, train_cases=train_cases, val_cases=val_cases
    )
    raw.setdefault("train", {})["progress"] = progress and bool(raw["train"].get("progress", True))
    return config_from_dict(raw)


def check_variants_fit(config: CompareConfig, store: Any, url: str, split: Split) -> None:
    """Every variant fits the store (channels, class weights, margin) before any trains.

    Raises:
        ConfigError: each variant that does not fit, with its problems, in one message.
    """
    from partseg.config.storefit import fit_to_store

    problems = []
    for variant in config.variants:
        try:
            fit_to_store(variant_experiment(config, variant, 0, url, split), store)
        except ConfigError as err:
            problems.append(f"variant {variant.name}: {err}")
    if problems:
        raise ConfigError("; ".join(problems) + " (nothing was trained)")


def _reset_cuda_peak(device: str) -> bool:
    import torch

    from partseg.devices import resolve_device

    if resolve_device(device, key="train.device").type != "cuda":
        return False
    torch.cuda.reset_peak_memory_stats()
    return True


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl`` (empty when missing)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_budget(run_dir: Path) -> dict[str, Any] | None:
    """The run's budget plan (``RUN/budget.json``; None without a budget or when unreadable)."""
    try:
        return json.loads((run_dir / "budget.json").read_text())
    except (OSError, ValueError):
        return None


def best_value(run_dir: Path) -> float:
    """The run's best validation value from ``summary.json`` (``-inf`` when unreadable)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        return float(summary["best"]["value"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("-inf")


def training_costs(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """What a run cost: steps, times, memory, and its budget plan.

    ``steps`` (optimizer steps done), ``epoch_seconds`` (mean of ``time_s``),
    ``train_seconds`` (training steps only, the time a budget fills), ``val_seconds``
    (validation, not counted by a budget); with a budget (``RUN/budget.json``) also
    ``budget_seconds`` and ``step_seconds`` (the measured step time the plan used); the CUDA
    peak (``cost.json``) or, on CPU, the activations a step saves.
    """
    costs: dict[str, float] = {}
    times = [float(r["time_s"]) for r in history if "time_s" in r]
    if times:
        costs["steps"] = float(history[-1].get("step", 0))
        costs["epoch_seconds"] = float(np.mean(times))
        costs["train_seconds"] = float(sum(times))
        costs["val_seconds"] = float(sum(float(r.get("val_time_s", 0.0)) for r in history))
    plan = read_budget(run_dir)
    if plan:
        costs["budget_seconds"] = float(plan["budget_s"])
        costs["step_seconds"] = float(plan["step_s"])
    cost_file = run_dir / "cost.json"
    if cost_file.is_file():
        costs.update(json.loads(cost_file.read_text()))
    else:
        saved = saved_activation_mb(run_dir)
        if saved is not None:
            costs["saved_activation_mb"] = saved
    return costs


def saved_activation_mb(run_dir: Path) -> float | None:
    """MiB autograd keeps for backward in one training step of the run's model and batch."""
    import torch

    from partseg.checkpoint import load_model
    from partseg.models.memory import saved_tensor_bytes

    try:
        loaded = load_model(run_dir)
    except Exception:  # a missing/odd checkpoint only loses this cost column
        return None
    batch = int(loaded.config.get("train", {}).get("batch_size", 1))
    size = loaded.layout.spatial_size(loaded.partition)
    channels = int(loaded.model_config.in_channels)
    model = loaded.model.train()
    x = torch.zeros((batch, channels, *size))
    return saved_tensor_bytes(model, x) / 2**20
