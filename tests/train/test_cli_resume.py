"""``partseg train`` reruns: the same command resumes (after Ctrl-C too, without ``--resume``),
a finished run is left alone, another config is refused unless ``--overwrite`` replaces it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from partseg.checkpoint import load_checkpoint
from partseg.cli import main

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def _train(store: str, run: Path, *extra: str) -> int:
    return main(["train", TINY, f"data.store={store}", "--out", str(run), *extra])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model_state"]


def test_ctrl_c_then_the_same_command_resumes(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from partseg.train.trainer import Trainer

    assert _train(store, tmp_path / "straight", "--json") == 0
    summary = json.loads(capsys.readouterr().out)  # --json: the summary, logs on stderr
    assert summary["last"]["epoch"] == 2 and summary["run_dir"] == str(tmp_path / "straight")
    end_epoch = Trainer.end_epoch

    def interrupted(self, epoch, record):
        end_epoch(self, epoch, record)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "end_epoch", interrupted)
    run = tmp_path / "run"
    assert _train(store, run) == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err
    monkeypatch.setattr(Trainer, "end_epoch", end_epoch)
    assert _train(store, run) == 0  # the same command, no --resume
    assert "resumed from" in capsys.readouterr().out
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # counted from 1, as on the console
    for key, value in _weights(tmp_path / "straight").items():
        assert torch.equal(value, _weights(run)[key]), key
    assert (run / "progress.png").read_bytes()[:4] == b"\x89PNG"
    assert _train(store, run) == 0  # finished: nothing to do
    assert "nothing to do" in capsys.readouterr().out


def test_another_config_is_refused_without_overwrite(store: str, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert _train(store, run, "train.epochs=1") == 0
    capsys.readouterr()
    assert _train(store, run, "train.epochs=1", "model.base_width=8") == 2
    err = capsys.readouterr().err
    assert re.search(r"another config \(model\.base_width: 4 -> 8\).*--overwrite", err), err
    assert _train(store, run, "train.epochs=1", "model.base_width=8", "--overwrite") == 0
    assert "--overwrite: removed the earlier run" in capsys.readouterr().out
    assert load_checkpoint(run / "checkpoints" / "last.pt")["model_config"]["base_width"] == 8
    assert _train(store, run, "train.epochs=1", "model.base_width=8", "--no-progress",
                  "--device", "cpu") == 0  # fmt: skip  # volatile keys: the same job


def test_resume_continues_a_run_with_changed_training_settings(
    store: str, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    assert _train(store, run, "train.epochs=1") == 0
    assert _train(store, run, "train.epochs=2") == 2  # another config: refused without --resume
    assert "--resume to continue it" in capsys.readouterr().err
    assert _train(store, run, "train.epochs=2", "--resume") == 0  # a finished run trained longer
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert _train(store, run, "train.epochs=2") == 0  # config.yaml now holds epochs=2
    assert "nothing to do" in capsys.readouterr().out
    assert _train(store, tmp_path / "none", "--resume") == 2  # nothing to resume
    assert "cannot resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _train(store, run, "--resume", "--overwrite")
