"""The bad-input battery of ``tools/battery.py``: a fast in-process subset in the default run,
every entry through the real console script under ``slow``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import battery

#: Commands whose entries need no trained model: the fast subset (about 100 entries).
FAST = ("phantom", "ingest", "info", "evaluate")
BAD = ("traceback", "wrong_exit_0", "data_lost", "unclear")


def _explain(result: dict) -> str:
    return "\n".join(f"{f['entry']}: {f['verdict']}: {f['last_line']}" for f in result["failures"])


def test_battery_has_enough_distinct_entries_on_every_command() -> None:
    entries = battery.entries()
    names = [e.name for e in entries]
    assert len(names) == len(set(names)) >= 120
    commands = {e.command for e in entries}
    assert commands >= {"phantom", "ingest", "info", "plan", "train", "cv", "compare", "predict",
                        "evaluate", "demo"}  # fmt: skip


def test_fast_subset_gives_clear_errors_only(tmp_path: Path) -> None:
    selected = [e for e in battery.entries() if e.command in FAST]
    result = battery.run_battery(selected, "inprocess", tmp_path)
    assert result["cases"] >= 100
    assert {k: result[k] for k in BAD} == dict.fromkeys(BAD, 0), _explain(result)
    assert result["ok"] == 2  # a stale lock recovered, a symlinked case folder not followed


@pytest.mark.slow
def test_full_battery_through_the_console_script(tmp_path: Path) -> None:
    result = battery.run_battery(battery.entries(), "subprocess", tmp_path)
    own = [f for f in result["failures"] if f["depends"] != "pipeline"]
    assert not own, _explain({"failures": own})
    assert result["cases"] >= 120


@pytest.mark.slow
def test_battery_entries_that_need_the_predict_pipeline(tmp_path: Path) -> None:
    selected = [e for e in battery.entries() if e.depends == "pipeline"]
    result = battery.run_battery(selected, "subprocess", tmp_path)
    assert not result["failures"], _explain(result)
