"""kill -9 at random points, then rerun: the result equals an uninterrupted run (slow).

For ingest, train, cv, compare and predict: one uninterrupted reference run, then five runs
killed (SIGKILL to the process group, workers included) at seeded random times within the
reference's duration, each followed by a rerun of the same command (``--resume`` where the
command asks for it). Every rerun must exit 0 and produce what the reference produced: the same
store arrays and metadata, the same weights and metric records, the same scores, the same
prediction voxels. Subprocesses run ``python -m partseg`` with one thread each, so CPU results
are bit-identical between processes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import battery

KILLS = 5
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def partseg(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "partseg", *argv],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill reaches ingest's workers
    )


def finish(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = partseg(argv, cwd)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{out}\n{err}"
    return time.perf_counter() - start


def kill_after(argv: list[str], cwd: Path, seconds: float) -> bool:
    """Run ``argv`` and SIGKILL its process group after ``seconds``; False if it ended first."""
    proc = partseg(argv, cwd)
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return True


def crash_and_resume(
    make_argv: Callable[[Path], list[str]],
    resume_argv: Callable[[Path], list[str]],
    result: Callable[[Path], Any],
    tmp_path: Path,
    seed: int,
) -> None:
    """The reference run, then KILLS killed runs, each rerun; every result equals the reference."""
    reference = tmp_path / "reference"
    reference.mkdir()
    duration = finish(make_argv(reference), reference)
    expected = result(reference)
    rng = random.Random(seed)
    killed = 0
    for k in range(KILLS):
        folder = tmp_path / f"killed{k}"
        folder.mkdir()
        killed += kill_after(make_argv(folder), folder, rng.uniform(0.25, 0.95) * duration)
        finish(resume_argv(folder), folder)
        assert result(folder) == expected, f"kill {k}: the rerun differs from the reference"
    assert killed >= 3, f"only {killed} of {KILLS} runs were still running at their kill time"


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> battery.Fixtures:
    return battery.Fixtures(tmp_path_factory.mktemp("fixtures"))


# ---------------------------------------------------------------------------- results


def store_content(path: Path) -> dict[str, Any]:
    from partseg.store.zarrstore import open_store

    store = open_store(path)
    content: dict[str, Any] = {"case_ids": store.case_ids}
    for case in store:
        label = case.read_label()
        content[case.id] = (
            case.read_image().tobytes(),
            None if label is None else label.tobytes(),
            case.class_locations(1).tobytes(),
            json.dumps(case.attrs, sort_keys=True),
        )
    return content


def run_content(run: Path) -> dict[str, Any]:
    import torch

    from partseg.checkpoint import load_checkpoint

    weights = {}
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(run / "checkpoints" / name)["model_state"]
        weights[name] = {k: v.numpy().tobytes() for k, v in state.items() if torch.is_tensor(v)}
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    summary = json.loads((run / "summary.json").read_text())
    return {
        "weights": weights,
        "epochs": [r["epoch"] for r in records],
        "losses": [r["train_loss"] for r in records],
        "dice": [r.get("val_dice") for r in records],
        "best": (summary["best"]["epoch"], summary["best"]["value"]),
    }


def _timing(key: str) -> bool:
    """Wall-clock fields of a record (they differ between any two runs)."""
    return "time" in key or key.endswith("per_s")


def prediction_content(out: Path) -> dict[str, bytes]:
    import nibabel as nib

    return {
        p.name: np.asarray(nib.load(str(p)).dataobj).tobytes() for p in sorted(out.glob("*.nii.gz"))
    }


# ---------------------------------------------------------------------------- the commands


@pytest.mark.slow
def test_ingest_killed_five_times_resumes_to_the_same_store(fx, tmp_path: Path) -> None:
    raw = battery.write_numpy_cases(tmp_path / "raw", 8, shape=(24, 32, 32))
    argv = ["ingest", str(raw), "s.zarr", "--workers", "2", "--chunks", "8", "8", "8"]
    argv += ["--no-progress"]
    crash_and_resume(
        lambda _d: argv, lambda _d: argv, lambda d: store_content(d / "s.zarr"), tmp_path, 1
    )


def _train_argv(fx, extra: tuple[str, ...] = ()) -> Callable[[Path], list[str]]:
    return lambda d: ["train", str(battery.TINY), "--out", str(d / "run"),
                      f"data.store={fx['store']}", "train.epochs=4", *extra]  # fmt: skip


@pytest.mark.slow
def test_train_killed_five_times_resumes_to_the_same_weights(fx, tmp_path: Path) -> None:
    argv = _train_argv(fx)

    def resume(d: Path) -> list[str]:
        last = d / "run" / "checkpoints" / "last.pt"
        return [*argv(d), "--resume"] if last.is_file() else argv(d)

    crash_and_resume(argv, resume, lambda d: run_content(d / "run"), tmp_path, 2)


@pytest.mark.slow
def test_cv_killed_five_times_resumes_to_the_same_folds(fx, tmp_path: Path) -> None:
    def argv(d: Path) -> list[str]:
        return ["cv", str(battery.TINY), "--folds", "2", "--out", str(d / "cv"),
                f"data.store={fx['store']}"]  # fmt: skip

    def result(d: Path) -> Any:
        summary = json.loads((d / "cv" / "cv_summary.json").read_text())
        folds = [{k: v for k, v in f.items() if not _timing(k)} for f in summary["folds"]]
        runs = [run_content(d / "cv" / f"fold_{k}") for k in range(2)]
        means = {k: v for k, v in summary["summary"].items() if not _timing(k)}
        return folds, means, runs

    crash_and_resume(argv, lambda d: [*argv(d), "--resume"], result, tmp_path, 3)


@pytest.mark.slow
def test_compare_killed_five_times_resumes_to_the_same_report(fx, tmp_path: Path) -> None:
    config = battery.write_compare(tmp_path / "c.yaml", fx["store"], ("a", "b"))

    def argv(d: Path) -> list[str]:
        return ["compare", str(config), "--out", str(d / "cmp"), "--no-progress"]

    def result(d: Path) -> Any:
        scores = json.loads((d / "cmp" / "report" / "results.json").read_text())["scores"]
        return scores, [run_content(d / "cmp" / "runs" / v / "fold0") for v in ("a", "b")]

    crash_and_resume(argv, argv, result, tmp_path, 4)


@pytest.mark.slow
def test_predict_killed_five_times_resumes_to_the_same_outputs(fx, tmp_path: Path) -> None:
    def argv(d: Path) -> list[str]:
        return ["predict", str(fx["run"]), "--store", str(fx["store"]), "--out", str(d / "out")]

    crash_and_resume(argv, argv, lambda d: prediction_content(d / "out"), tmp_path, 5)


@pytest.mark.slow
def test_predict_from_a_raw_folder_killed_five_times_resumes_to_the_same_outputs(
    fx, tmp_path: Path
) -> None:
    """``--input``: the temporary ingest is resumed, and removed once every case is written."""

    def argv(d: Path) -> list[str]:
        return ["predict", str(fx["run"]), "--input", str(fx["raw"]), "--out", str(d / "out")]

    def result(d: Path) -> Any:
        hidden = sorted(p.name for p in (d / "out").iterdir() if p.name.startswith(".partseg-i"))
        labels = prediction_content(d / "out")
        assert len(labels) == 4, sorted(labels)  # every raw case predicted
        return labels, hidden

    crash_and_resume(argv, argv, result, tmp_path, 6)
