"""Checkpoint files: atomic writes, safe loads, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from partseg.checkpoint import (
    FORMAT,
    VERSION,
    load_checkpoint,
    partition_from_dict,
    partition_to_dict,
    resolve_checkpoint,
    save_checkpoint,
)
from partseg.errors import CheckpointError
from partseg.geometry import make_partition


def _payload(**extra) -> dict:
    return {"format": FORMAT, "version": VERSION, "weights": torch.arange(4.0), **extra}


def test_round_trip_keeps_tensors_and_values(tmp_path: Path) -> None:
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(path, _payload(epoch=7))
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 7
    assert torch.equal(loaded["weights"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left behind


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload(epoch=1))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, _payload(epoch=2, bad=Unpicklable()))
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_write_into_a_file_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint(blocker / "last.pt", _payload())


@pytest.mark.parametrize(
    "content", [b"", b"garbage bytes", b"PK\x03\x04truncated"], ids=["empty", "junk", "zip"]
)
def test_corrupt_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _payload(big=torch.zeros(10_000)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_foreign_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"state": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a partseg checkpoint"):
        load_checkpoint(path)


def test_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.pt"
    save_checkpoint(path, {"format": FORMAT, "version": VERSION + 1})
    with pytest.raises(CheckpointError, match="upgrade partseg"):
        load_checkpoint(path)


def test_code_in_a_pickle_is_never_run(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format": FORMAT, "version": VERSION, "x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_run_directory_resolves_best_then_last(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    save_checkpoint(checkpoints / "last.pt", _payload(which="last"))
    assert resolve_checkpoint(tmp_path).name == "last.pt"
    save_checkpoint(checkpoints / "best.pt", _payload(which="best"))
    assert load_checkpoint(tmp_path)["which"] == "best"
    with pytest.raises(CheckpointError, match="without checkpoints"):
        resolve_checkpoint(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("ndim", [2, 3])
def test_partition_round_trip(ndim: int) -> None:
    partition = make_partition((8,) * ndim, 3, stride=4)
    back = partition_from_dict(partition_to_dict(partition))
    assert back.core == partition.core
    assert back.margin_before == partition.margin_before
    assert back.margin_after == partition.margin_after
    assert back.stride == partition.stride


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("partition", {"core": [0, 8, 8], "margin_before": [2] * 3, "margin_after": [2] * 3,
                       "stride": [2] * 3}, "partition core"),
        ("partition", {"core": [8] * 3, "margin_before": [-2, 2, 2], "margin_after": [2] * 3,
                       "stride": [2] * 3}, "margin"),
        ("label_mapping", {"four": 3}, "label_mapping|invalid literal"),
        ("label_mapping", ["0", "1"], "items"),
    ],
)  # fmt: skip
def test_tampered_checkpoint_fields_are_a_clear_error(
    tmp_path: Path, field: str, value: object, words: str
) -> None:
    """A checkpoint is untrusted input: a bad field names the file, never a traceback."""
    import dataclasses

    from partseg.checkpoint import load_model
    from partseg.models import ModelConfig, build_model

    cfg = ModelConfig(name="unet", spatial_dims=3, in_channels=1, out_channels=2, depth=2,
                      base_width=2)  # fmt: skip
    good = partition_to_dict(make_partition((8, 8, 8), 2, stride=2))
    payload = _payload(model_config=dataclasses.asdict(cfg),
                       model_state=build_model(cfg).state_dict(), partition=good,
                       label_mapping={"0": 0, "1": 1})  # fmt: skip
    path = tmp_path / "ok.pt"
    save_checkpoint(path, payload)
    assert load_model(path).partition.core == (8, 8, 8)
    save_checkpoint(tmp_path / "bad.pt", {**payload, field: value})
    with pytest.raises(CheckpointError, match=words) as info:
        load_model(tmp_path / "bad.pt")
    assert "bad.pt" in str(info.value)
