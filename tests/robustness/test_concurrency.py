"""Two writers on one store or run folder: exactly one proceeds, the other exits 2 (slow).

The second process starts once the first holds the lock (its lock file exists), so the two
overlap whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import battery

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def start(argv: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "partseg", *argv]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def second_while_first_holds(argv: list[str], lock: Path) -> tuple[int, int, str]:
    first = start(argv)
    deadline = time.monotonic() + 300
    while not lock.exists():
        assert first.poll() is None, f"the first writer ended early: {first.communicate()}"
        assert time.monotonic() < deadline, "the first writer never took its lock"
        time.sleep(0.02)
    second = start(argv)
    _, err2 = second.communicate(timeout=600)
    assert first.poll() is None, "the first writer ended before the second: no overlap tested"
    first.communicate(timeout=600)
    return first.returncode, second.returncode, err2


@pytest.mark.slow
def test_two_ingests_into_one_store(tmp_path: Path) -> None:
    from partseg.store.zarrstore import open_store

    raw = battery.write_numpy_cases(tmp_path / "raw", 24, shape=(32, 48, 48))
    store = tmp_path / "s.zarr"
    argv = ["ingest", str(raw), str(store), "--chunks", "8", "8", "8", "--no-progress"]
    code1, code2, err2 = second_while_first_holds(argv, store / ".partseg.lock")
    assert (code1, code2) == (0, 2), err2
    last = err2.strip().splitlines()[-1]
    assert last.startswith("partseg ingest: error: ") and "is in use by partseg ingest (pid" in last
    assert len(open_store(store).case_ids) == 24  # nothing of the first one's work was deleted
    assert not (store / ".partseg.lock").exists()


@pytest.mark.slow
def test_two_trainings_into_one_run_folder(tmp_path: Path) -> None:
    fx = battery.Fixtures(tmp_path / "fixtures")
    run = tmp_path / "run"
    argv = ["train", str(battery.TINY), "--out", str(run), f"data.store={fx['store']}"]
    long = [*argv, "train.epochs=150", "train.val_every=0"]  # outlives the second's start-up
    code1, code2, err2 = second_while_first_holds(long, run / ".partseg.lock")
    assert (code1, code2) == (0, 2), err2
    assert "is in use by partseg train (pid" in err2.strip().splitlines()[-1]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 151))  # one run's records
