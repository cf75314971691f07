"""Nothing lost, nobody in: crash points of an epoch's end, full disks, stale temporaries, locks."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

from partseg.checkpoint import load_checkpoint
from partseg.cli import main
from partseg.config import load_config
from partseg.errors import ConfigError, LockError, PartsegError
from partseg.locking import run_lock
from partseg.train.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
QUIET = {"log": lambda _m: None}


def tiny(store: str, *overrides: str):
    return load_config(CONFIG, [f"data.store={store}", "train.val_every=0", *overrides])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model_state"]


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted two-epoch run every interrupted one must equal."""
    run = tmp_path_factory.mktemp("straight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the function-scoped conftest fixture sets for the others
    try:
        Trainer(tiny(store), run, **QUIET).run()
    finally:
        torch.set_num_threads(threads)
    return run


class Crash(Exception):
    """Stands for a kill at one point of an epoch's end."""


@pytest.mark.parametrize(
    "point",
    [
        "after_record",
        "enospc_best",
        pytest.param("after_best", marks=pytest.mark.slow),
        pytest.param("after_last", marks=pytest.mark.slow),
    ],
)
def test_a_crash_at_any_point_of_an_epoch_end_loses_nothing(
    store: str, straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    run = tmp_path / "run"
    save = Trainer.save

    def crashing_save(self, name, record):
        if self.epoch == 2 and point == "after_record":
            raise Crash
        if self.epoch == 2 and name == "best" and point == "enospc_best":
            raise OSError(errno.ENOSPC, "No space left on device")
        save(self, name, record)
        if self.epoch == 2 and name == point.split("_")[1]:
            raise Crash

    monkeypatch.setattr(Trainer, "save", crashing_save)
    with pytest.raises((Crash, PartsegError, OSError)):
        Trainer(tiny(store), run, **QUIET).run()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == (
        1 if point == "after_last" else 0
    )
    assert _epochs(run) == [1, 2]  # the record comes first, so it is never lost
    (run / "checkpoints" / ".last.pt.k3j2h1g0.tmp").write_bytes(b"")  # a killed write's leftover
    monkeypatch.setattr(Trainer, "save", save)
    Trainer(tiny(store), run, resume=True, **QUIET).run()
    assert _epochs(run) == [1, 2]
    for key, value in _weights(straight).items():
        assert torch.equal(value, _weights(run)[key]), key
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["record"]["epoch"] == summary["best"]["epoch"]
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_resume_survives_a_torn_metrics_line_and_restores_a_lost_record(
    store: str, straight: Path, tmp_path: Path
) -> None:
    run = Path(shutil.copytree(straight, tmp_path / "run"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:10])  # epoch 1 torn
    trainer = Trainer(tiny(store, "train.epochs=3"), run, resume=True, **QUIET)
    trainer.setup()
    assert [r["epoch"] for r in trainer.metrics.records] == [1, 2]  # epoch 2 from last.pt
    assert _epochs(run) == [1, 2]


def test_a_locked_run_folder_refuses_a_second_trainer(store: str, tmp_path: Path) -> None:
    with run_lock(tmp_path, "train"), pytest.raises(LockError, match="in use by partseg train"):
        Trainer(tiny(store), tmp_path, **QUIET).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_margin_wider_than_every_volume_is_refused(store: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"partition.margin=\[40, 2, 2\] is larger than"):
        Trainer(tiny(store, "partition.margin=[40,2,2]"), tmp_path, **QUIET).setup()


def test_train_on_a_store_with_a_lost_label_chunk_exits_2(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    copy = Path(shutil.copytree(store, tmp_path / "s.zarr"))
    next(p for p in sorted((copy / "cases/case1/label/c").rglob("*")) if p.is_file()).unlink()
    argv = ["train", str(CONFIG), "--out", str(tmp_path / "run"), f"data.store={copy}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("partseg train: error: chunk cases/case1/label/c/")
    assert "is missing" in err[-1] and "Traceback" not in "\n".join(err)


def test_progress_plot_is_throttled_and_written_at_the_end(tmp_path: Path, monkeypatch) -> None:
    from partseg.train import rundir

    clock = iter([0.0, 1.0, 2.0, 40.0, 41.0, 42.0])  # append, append, ..., close
    monkeypatch.setattr(rundir.time, "monotonic", lambda: next(clock))
    plotted: list[int] = []
    monkeypatch.setattr(rundir, "plot_progress", lambda records, path: plotted.append(len(records)))
    log = rundir.MetricsLog(tmp_path)
    for epoch in (1, 2, 3):  # at t = 0, 1, 2: only the first epoch is plotted
        log.append({"epoch": epoch, "train_loss": 1 / epoch})
    assert plotted == [1]
    log.append({"epoch": 4, "train_loss": 0.25})  # t = 40: PLOT_EVERY_S = 30 s later
    assert plotted == [1, 4]
    log.close()  # nothing new since: no plot
    log.append({"epoch": 5, "train_loss": 0.2})  # t = 41: throttled ...
    log.close()  # ... and plotted when training ends
    assert plotted == [1, 4, 5]
