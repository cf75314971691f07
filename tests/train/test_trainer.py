"""Training loop end to end on a tiny store: CLI, resume, errors, DDP, cross-validation."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from partseg.checkpoint import load_checkpoint, load_model
from partseg.cli import main
from partseg.config import load_config
from partseg.errors import CheckpointError, ConfigError, WriteError
from partseg.locking import LOCK_NAME
from partseg.train.trainer import Trainer, TrainingError

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


def tiny(store: str, *overrides: str):
    return load_config(CONFIG, [f"data.store={store}", *overrides])


def test_cli_train_writes_run_dir(store: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", str(CONFIG), "--out", str(out), f"data.store={store}"]) == 0
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # epochs count from 1, as on the console
    assert all(0.0 <= r["val_dice"] <= 1.0 for r in records)
    assert records[-1]["step"] == 4  # 2 epochs x 2 steps
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step,lr")
    payload = load_checkpoint(out / "checkpoints" / "last.pt")
    assert payload["epoch"] == 1 and payload["classes"] == ["background", "c1", "c2"]
    assert payload["partition"]["margin_before"] == [2, 2, 2]
    loaded = load_model(out)
    assert loaded.channels == ("a", "b") and loaded.partition.core == (8, 8, 8)


def _state(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model_state"]


def test_resume_ends_with_identical_weights(store: str, tmp_path: Path) -> None:
    overrides = ("model.dropout=0.2", "train.epochs=2", "optim.name=sgd", "schedule.name=cosine")
    config = tiny(store, *overrides)
    straight = Trainer(config, tmp_path / "a", log=lambda _m: None)
    straight.run()
    interrupted = Trainer(config, tmp_path / "b", log=lambda _m: None)
    interrupted.maybe_stop = lambda epoch: True  # stops after the first epoch
    interrupted.run()
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["epoch"] == 0
    Trainer(config, tmp_path / "b", resume=True, log=lambda _m: None).run()
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_existing_run_needs_resume(store: str, tmp_path: Path) -> None:
    config = tiny(store, "train.epochs=1", "train.val_every=0")
    Trainer(config, tmp_path, log=lambda _m: None).run()
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(config, tmp_path, log=lambda _m: None).run()
    other = tiny(store, "train.epochs=1", "train.val_every=0", "model.base_width=8")
    with pytest.raises(CheckpointError, match="model config differs"):
        Trainer(other, tmp_path, resume=True, log=lambda _m: None).run()


def test_nan_loss_stops_and_keeps_last_checkpoint(store: str, tmp_path: Path) -> None:
    config = tiny(store, "train.epochs=1", "train.val_every=0")
    Trainer(config, tmp_path, log=lambda _m: None).run()
    before = _state(tmp_path)
    trainer = Trainer(tiny(store, "train.epochs=2"), tmp_path, resume=True, log=lambda _m: None)
    trainer.setup()
    trainer.loss_fn = lambda *args: torch.tensor(float("nan"), requires_grad=True)
    with pytest.raises(TrainingError, match="last good checkpoint"):
        trainer.train_epoch(1)
    after = _state(tmp_path)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_store_mismatch_names_the_fix(store: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"set model\.in_channels=2"):
        Trainer(tiny(store, "model.in_channels=4"), tmp_path, log=print).run()
    with pytest.raises(ConfigError, match=r"set model\.out_channels=3"):
        Trainer(tiny(store, "model.out_channels=4"), tmp_path, log=print).run()


def test_every_store_mismatch_of_a_run_is_reported_at_once(store: str, tmp_path: Path) -> None:
    wrong = ("model.in_channels=4", "model.out_channels=5", "partition.margin=[24, 2, 2]")
    with pytest.raises(ConfigError) as info:
        Trainer(tiny(store, *wrong), tmp_path, log=print).run()
    message = str(info.value)
    assert message.startswith(f"the config does not fit store {store}: ")
    assert "model.in_channels=4 but the store gives 2 channels ['a', 'b']" in message
    assert "model.out_channels=5 but the store gives 3 classes" in message
    assert "partition.margin=[24, 2, 2] is larger than the largest volume" in message
    assert not (tmp_path / "checkpoints").exists()


def test_unset_channels_come_from_the_store(store: str, tmp_path: Path) -> None:
    config = tiny(store, "model.in_channels=null", "model.out_channels=null", "train.epochs=1")
    assert config.model.in_channels is None and config.model.out_channels is None
    Trainer(config, tmp_path, log=lambda _m: None).run()
    loaded = load_model(tmp_path / "checkpoints" / "last.pt")
    assert (loaded.model_config.in_channels, loaded.model_config.out_channels) == (2, 3)
    saved = load_config(tmp_path / "config.yaml")  # the request, so a resume fits the store again
    assert saved.model.in_channels is None
    again = Trainer(tiny(store, "model.in_channels=null", "model.out_channels=null",
                         "train.epochs=2"), tmp_path, resume=True, log=lambda _m: None)  # fmt: skip
    assert again.run()["last"]["epoch"] == 2  # epochs count from 1


def test_unwritable_run_dir(store: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(
        WriteError, match=r"cannot write .*file/run: .*parent of that path is a file"
    ):
        Trainer(tiny(store), blocker / "run", log=print).run()
    with pytest.raises(TrainingError, match="not writable"):  # without the lock's check
        Trainer(tiny(store), blocker / "run", log=print).setup()


def test_deep_supervision_adaptive_loss_bf16_checkpointing(store: str, tmp_path: Path) -> None:
    config = tiny(
        store,
        "model.depth=3",
        "model.deep_supervision=true",
        "partition.core=[8,8,8]",
        "loss.name=adaptive_tversky_ce",
        "train.amp=bf16",
        "train.checkpointing=true",
        "train.accumulate=2",
        "train.epochs=1",
    )
    Trainer(config, tmp_path, log=lambda _m: None).run()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    weights = record["loss_weights"]
    assert weights["tversky"] + weights["ce"] == pytest.approx(1.0)
    assert weights["tversky"] != 0.5  # set from the epoch's loss proportions
    assert record["step"] == 2  # 2 optimizer steps of 2 accumulated batches each


def test_fp16_with_grad_scaler_trains_and_resumes(store: str, tmp_path: Path) -> None:
    # The GTX 10xx/16xx path: fp16 autocast + GradScaler, exercised on the CPU.
    config = tiny(store, "train.amp=fp16", "train.checkpointing=true", "train.val_every=0")
    Trainer(config, tmp_path, log=lambda _m: None).run()
    payload = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert payload["scaler"]["scale"] > 0  # the scaler's state is saved for --resume
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train_loss"]) for r in records)
    state = payload["model_state"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_2d_with_context_slices(store: str, tmp_path: Path) -> None:
    config = tiny(
        store,
        "model.spatial_dims=2",
        "model.in_channels=6",  # 2 channels x (1 + 2 context slices)
        "partition.spatial_dims=2",
        "partition.core=[8,8]",
        "partition.context_slices=1",
        "train.epochs=1",
    )
    summary = Trainer(config, tmp_path, log=lambda _m: None).run()
    assert 0.0 <= summary["last"]["val_dice"] <= 1.0
    assert load_model(tmp_path).layout.spatial_dims == 2


def test_cv_writes_folds_and_summary(store: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cv"
    args = ["cv", str(CONFIG), "--folds", "2", "--out", str(out), f"data.store={store}"]
    assert main([*args, "train.epochs=1"]) == 0
    capsys.readouterr()
    assert main([*args, "train.epochs=1", "--json"]) == 0  # a rerun: both folds finished
    printed = json.loads(capsys.readouterr().out)  # stdout holds the JSON only
    assert printed == {"out": str(out), **json.loads((out / "cv_summary.json").read_text())}
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(splits[0]["val"] + splits[1]["val"]) == [f"case{i}" for i in range(4)]
    assert json.loads((out / "fold_1" / "splits.json").read_text()) == splits
    summary = json.loads((out / "cv_summary.json").read_text())
    dice = [f["val_dice"] for f in summary["folds"]]
    assert summary["summary"]["val_dice"]["mean"] == pytest.approx(np.mean(dice))
    assert summary["summary"]["val_dice"]["std"] == pytest.approx(np.std(dice))


def test_cv_fold_jobs_complete_one_summary(store: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cv"
    args = ["cv", str(CONFIG), "--folds", "2", "--out", str(out), f"data.store={store}"]
    assert main([*args, "train.epochs=1", "--fold", "1"]) == 0
    assert "fold 0 of 2 not trained yet: the same command with --fold 0" in capsys.readouterr().out
    assert not (out / "fold_0").exists() and not (out / LOCK_NAME).exists()
    partial = json.loads((out / "cv_summary.json").read_text())
    assert partial["missing"] == [0] and [f["fold"] for f in partial["folds"]] == [1]
    assert main([*args, "train.epochs=1", "--fold", "0", "--json"]) == 0  # the other job
    full = json.loads(capsys.readouterr().out)
    assert full["missing"] == [] and [f["fold"] for f in full["folds"]] == [0, 1]
    assert full["folds"][1] == partial["folds"][0]  # fold 1 was summarised, not retrained
    dice = [f["val_dice"] for f in full["folds"]]
    assert full["summary"]["val_dice"]["mean"] == pytest.approx(np.mean(dice))
    # a job of another config is refused before it trains: fold 1 holds a 1-epoch run
    before = (out / "fold_0" / "summary.json").read_text()
    assert main([*args, "train.epochs=2", "--fold", "0", "--overwrite"]) != 0
    assert "fold_1 holds a fold of another config" in capsys.readouterr().err
    assert (out / "fold_0" / "summary.json").read_text() == before


def test_train_fold_flag_and_gpu_mem(store: str, tmp_path: Path) -> None:
    out = tmp_path / "fold"
    args = ["train", str(CONFIG), "--out", str(out), "--fold", "1", "--gpu-mem", "64MiB"]
    assert main([*args, f"data.store={store}", "data.folds=2", "train.epochs=1"]) == 0
    splits = json.loads((out / "splits.json").read_text())
    saved = load_config(out / "config.yaml")
    assert saved.data.fold == 1 and saved.data.folds == 2
    assert payload_val_cases(out) == splits[1]["val"]


def payload_val_cases(run: Path) -> list[str]:
    data = json.loads((run / "validation.json").read_text())
    return sorted(data["cases"])


_DDP_RUN = ("train.epochs=1", "train.val_every=0", "sampler.samples_per_case=1")


def _ddp_worker(rank: int, store: str, out: str, port: int) -> None:
    from partseg.train.distributed import init_distributed, shutdown

    env = {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
    os.environ.update({**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    config = tiny(store, *_DDP_RUN)  # batch 2 per process
    trainer = Trainer(config, out, dist=ctx, log=lambda _m: None)
    trainer.run()
    digest = hashlib.sha256()
    for name, param in sorted(trainer.model.named_parameters()):
        digest.update(name.encode() + param.detach().numpy().tobytes())
    Path(out, f"rank{rank}.sha").write_text(digest.hexdigest())
    shutdown(ctx)


def test_ddp_two_cpu_processes_keep_identical_weights(store: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(store, str(tmp_path), port), nprocs=2)
    hashes = [(tmp_path / f"rank{r}.sha").read_text() for r in range(2)]
    assert hashes[0] == hashes[1]
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    initial = Trainer(tiny(store), tmp_path / "fresh", log=print)
    initial._setup_data()
    initial._setup_model()
    state = _state(tmp_path)
    assert not all(torch.equal(state[k], v) for k, v in initial.model.state_dict().items())
    # one process with the global batch (2 processes x 2) trains the same weights: the shards
    # cover its batches and BatchNorm is synchronised (1e-2 apart without train.sync_batchnorm)
    one = tiny(store, *_DDP_RUN, "train.batch_size=4")
    Trainer(one, tmp_path / "one", log=lambda _m: None).run()
    single = _state(tmp_path / "one")
    worst = max((single[k].double() - state[k].double()).abs().max().item() for k in state)
    assert worst <= 1e-5, worst


def test_max_val_cases_trains_on_the_cases_it_does_not_validate(store: str, tmp_path: Path) -> None:
    notes: list[str] = []
    drawn = Trainer(tiny(store, "data.val_fraction=0.5", "data.max_val_cases=1"), tmp_path / "a",
                    log=notes.append)  # fmt: skip
    drawn.setup()
    assert (len(drawn.train_cases), len(drawn.val_cases), drawn.unvalidated) == (3, 1, [])
    assert not any("max_val_cases" in n for n in notes)
    listed = ["data.val_cases=[case0,case1]", "data.max_val_cases=1"]
    explicit = Trainer(tiny(store, *listed), tmp_path / "b", log=notes.append)
    explicit.setup()  # listed validation cases are kept out of training, and it is said
    assert (explicit.train_cases, explicit.val_cases) == (["case2", "case3"], ["case0"])
    assert explicit.unvalidated == ["case1"]
    assert any("validates 1 of the 2 validation cases; the other 1" in n for n in notes)
