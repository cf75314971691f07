"""The training-time budget: durations, the plan, the probe that leaves no trace, resume."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from partseg.checkpoint import load_checkpoint
from partseg.cli import main
from partseg.config import config_from_dict, load_config
from partseg.errors import ConfigError
from partseg.train.budget import (
    MAX_VALIDATIONS,
    MIN_EPOCHS,
    BudgetPlan,
    format_duration,
    hardware,
    parse_duration,
    plan_steps,
    recalibrate,
)
from partseg.train.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def tiny(store: str, *overrides: str):
    return load_config(CONFIG, [f"data.store={store}", *overrides])


def quiet(_message: str) -> None:
    pass


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("60m", 3600.0), ("60min", 3600.0), ("1.5h", 5400.0), ("2.5", 2.5),
     (" 10 M ", 600.0), (45, 45.0)],
)  # fmt: skip
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "0s", "1d", True, "1h30m"])
def test_bad_durations_name_the_form(text) -> None:
    with pytest.raises(ConfigError, match=r"budget .*(90s, 60m or 1\.5h|positive)"):
        parse_duration(text)


def test_config_checks_the_budget() -> None:
    assert config_from_dict({"train": {"budget": "60m"}}).train.budget == "60m"
    assert config_from_dict({"train": {"budget": 90}}).train.budget == 90.0
    with pytest.raises(ConfigError, match=r"train\.budget='tomorrow'"):
        config_from_dict({"train": {"budget": "tomorrow"}})
    assert format_duration(parse_duration("60m")) == "60m"


@pytest.mark.parametrize("budget", [1.0, 7.0, 60.0, 600.0, 3600.0, 86400.0])
@pytest.mark.parametrize("step_s", [0.05, 1.0, 13.0])
@pytest.mark.parametrize("steps_per_epoch", [1, 50, 250])
def test_plan_fills_the_budget(budget, step_s, steps_per_epoch) -> None:
    epochs, steps, val_every = plan_steps(
        budget, step_s, steps_per_epoch=steps_per_epoch, val_every=1
    )
    total = max(1, math.floor(budget / step_s))
    assert abs(epochs * steps - total) <= steps / 2  # whole epochs, within half an epoch
    assert steps <= steps_per_epoch
    if total >= MIN_EPOCHS:
        assert epochs >= MIN_EPOCHS  # short budgets get shorter epochs, not fewer
    assert -(-epochs // val_every) <= MAX_VALIDATIONS  # validations capped
    assert plan_steps(budget, step_s, steps_per_epoch=steps_per_epoch, val_every=0)[2] == 0


def test_hardware_names_the_cpu() -> None:
    info = hardware("cpu")
    assert info["cpu"] and info["torch_threads"] == torch.get_num_threads()
    assert info["gpu"] is None and info["cpus_available"] >= 1


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model_state"]


def test_budgeted_run_is_the_plain_run_of_its_plan(store: str, tmp_path: Path) -> None:
    config = tiny(store, "train.budget=1s", "model.dropout=0.2", "train.steps_per_epoch=50")
    summary = Trainer(config, tmp_path / "budget", log=quiet).run()
    plan = BudgetPlan.from_dict(json.loads((tmp_path / "budget" / "budget.json").read_text()))
    assert plan.budget_s == 1.0 and plan.step_s > 0 and len(plan.probe_step_s) == 3
    assert plan.hardware["cpu"]
    # planned from the probe, then recalibrated from the first epoch's time
    probed = plan_steps(1.0, plan.probe_s_per_step, steps_per_epoch=50, val_every=1)
    lines = (tmp_path / "budget/metrics.jsonl").read_text().splitlines()
    assert plan.first_epoch_s == json.loads(lines[0])["time_s"]
    assert plan.steps_per_epoch == probed[1]
    before = dataclasses.replace(
        plan, step_s=plan.probe_s_per_step, epochs=probed[0], val_every=probed[2],
        first_epoch_s=None, probe_s_per_step=None,
    )  # fmt: skip
    assert recalibrate(before, plan.first_epoch_s) == plan
    assert summary["last"]["step"] == plan.total_steps
    assert summary["last"]["epoch"] == plan.epochs  # epochs count from 1
    saved = load_config(tmp_path / "budget" / "config.yaml")
    assert saved.train.budget == "1s" and saved.train.epochs == 2  # the request, not the plan
    payload = load_checkpoint(tmp_path / "budget" / "checkpoints" / "last.pt")
    assert payload["budget"]["total_steps"] == plan.total_steps
    # the probe's steps left no trace: the plain run of the plan ends with the same weights
    plain = tiny(
        store, "model.dropout=0.2", f"train.epochs={plan.epochs}",
        f"train.steps_per_epoch={plan.steps_per_epoch}", f"train.val_every={plan.val_every}",
    )  # fmt: skip
    Trainer(plain, tmp_path / "plain", log=quiet).run()
    a, b = _weights(tmp_path / "budget"), _weights(tmp_path / "plain")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_keeps_the_planned_step_count(store: str, tmp_path: Path) -> None:
    config = tiny(store, "train.budget=0.5s", "train.val_every=0")
    first = Trainer(config, tmp_path, log=quiet)
    first.maybe_stop = lambda epoch: True  # killed after the first epoch
    first.run()
    plan = json.loads((tmp_path / "budget.json").read_text())
    # resumed with another budget (or on a faster machine): the stored plan wins
    other = tiny(store, "train.budget=1h", "train.val_every=0")
    lines: list[str] = []
    summary = Trainer(other, tmp_path, resume=True, log=lines.append).run()
    assert summary["last"]["step"] == plan["total_steps"]
    assert not any("budget" in line and "measured" in line for line in lines)  # no new probe
    assert not any("recalibrated" in line for line in lines)  # nor a second recalibration


def test_a_probe_that_misjudges_the_step_is_corrected_after_the_first_epoch(
    store: str, tmp_path: Path, monkeypatch
) -> None:
    """A probe 20 times too slow would plan a fraction of the budget; the first epoch's own
    time sets the remaining epochs, and the run is the plain run of that plan."""
    from partseg.train import budget

    real = budget.measure_step_seconds

    def slow(trainer):
        times, probe_s = real(trainer)
        return [20 * t for t in times], probe_s

    monkeypatch.setattr(budget, "measure_step_seconds", slow)
    lines: list[str] = []
    config = tiny(store, "train.budget=2s", "train.steps_per_epoch=4", "train.val_every=0")
    summary = Trainer(config, tmp_path / "run", log=lines.append).run()
    plan = BudgetPlan.from_dict(json.loads((tmp_path / "run" / "budget.json").read_text()))
    probed_epochs = plan_steps(2.0, plan.probe_s_per_step, steps_per_epoch=4, val_every=0)[0]
    assert plan.step_s < plan.probe_s_per_step and plan.epochs > probed_epochs
    assert plan.epochs == 1 + round((2.0 - plan.first_epoch_s) / plan.first_epoch_s)
    assert summary["last"]["step"] == plan.total_steps
    assert any(line.startswith("budget recalibrated after the first epoch") for line in lines)
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert payload["budget"]["epochs"] == plan.epochs  # a resumed run keeps the new plan


def test_cli_budget_flag(store: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", str(CONFIG), "--out", str(out), "--budget", "1s", f"data.store={store}"]
    assert main([*args, "train.val_every=0"]) == 0
    assert json.loads((out / "budget.json").read_text())["budget_s"] == 1.0
    with pytest.raises(SystemExit):
        main(["train", str(CONFIG), "--budget", "soon"])
