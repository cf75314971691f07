"""Untrusted store metadata, lost chunks and failed writes (:mod:`partseg.store.checks`)."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rawdata import write_numpy

from partseg.errors import StoreError, WriteError
from partseg.geometry import Box
from partseg.store.ingest import IngestSettings, ingest
from partseg.store.zarrstore import open_store

SETTINGS = IngestSettings(chunks=(4, 8, 8), channels_per_chunk=3)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 3-channel NumPy cases, ingested once; tests copy it."""
    root = tmp_path_factory.mktemp("checks")
    ingest(write_numpy(root / "raw"), root / "s.zarr", SETTINGS, progress=False)
    return root / "s.zarr"


@pytest.fixture
def store(ingested: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ingested, tmp_path / "s.zarr"))


def _edit_json(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    meta["attributes"].update(changes)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("bad", ["/any/where/ESCAPE", "../x", "a/b", ".tmp-n_0-1", "x\n"])
def test_index_with_an_unsafe_case_id_is_refused(store: Path, bad: str) -> None:
    _edit_json(store / "zarr.json", case_ids=["n_0", bad])
    with pytest.raises(StoreError, match=rf"store {store}: case id .* is not a safe name"):
        open_store(store)


def test_index_with_other_damage_is_refused(store: Path) -> None:
    for changes, message in [
        ({"case_ids": "n_0"}, "case_ids is not a list"),
        ({"case_ids": ["n_0", "n_0"]}, "listed twice"),
        ({"chunks": [0, 8, 8]}, "chunks"),
        ({"channels": [1, 2]}, "channels must be a list of names"),
        ({"label_mapping": [[0]]}, "label_mapping"),
        ({"format_version": "2"}, "not a version number"),
        ({"format_version": 99}, r"written by a newer partseg \(store format 99;.*upgrade partseg"),
    ]:
        backup = (store / "zarr.json").read_text()
        _edit_json(store / "zarr.json", **changes)
        with pytest.raises(StoreError, match=message):
            open_store(store)["n_0"]
        (store / "zarr.json").write_text(backup)


def test_case_metadata_damage_names_the_case(store: Path) -> None:
    case_json = store / "cases" / "n_0" / "zarr.json"
    original = case_json.read_text()
    for damage, message in [
        (lambda: case_json.write_text("{not json"), "its metadata .* is unreadable"),
        (lambda: _edit_json(case_json, shape=[-1, 4, 4]), "shape"),
        (lambda: _edit_json(case_json, shape=[4, 4, 4]), "does not match the case metadata"),
        (lambda: _edit_json(case_json, spacing=[0, 1, 1]), "spacing"),
        (lambda: _edit_json(case_json, voxel_counts=[1, 2]), "voxel_counts"),
    ]:
        case_json.write_text(original)
        damage()
        with pytest.raises(StoreError, match=f"case 'n_0'.*{message}"):
            open_store(store)["n_0"].read_image()
    case_json.write_text(original)
    (store / "cases" / "n_0" / "image" / "zarr.json").write_text("[]")
    with pytest.raises(StoreError, match="metadata of array 'image' is unreadable"):
        open_store(store)["n_0"].read_image()


@pytest.mark.parametrize("array", ["image", "label", "locations"])
def test_a_deleted_chunk_is_an_error_not_zeros(store: Path, array: str) -> None:
    case = open_store(store)["n_0"]
    # foreground 8 x 10 x 13 in chunks of 4 x 8 x 8: 2 x 2 x 2 chunks, every one written
    assert case.attrs["chunk_files"] == {"image": 8, "label": 8, "locations": 1}
    assert case.missing_chunk_files() == {}
    chunk = sorted((store / "cases" / "n_0" / array / "c").rglob("*"))[-1]
    chunk.unlink()
    case = open_store(store)["n_0"]
    recorded = 1 if array == "locations" else 8
    assert case.missing_chunk_files() == {array: (recorded, recorded - 1)}
    with pytest.raises(StoreError, match=r"chunk cases/n_0/.* is missing .*rerun the same"):
        if array == "locations":
            case.class_locations(1)
        else:
            case.read(Box.whole(case.shape))


def test_older_cases_without_a_record_read_missing_chunks_as_zeros(store: Path) -> None:
    """Stores ingested before chunk records: nothing to compare with, reads stay as they were."""
    case_json = store / "cases" / "n_0" / "zarr.json"
    meta = json.loads(case_json.read_text())
    del meta["attributes"]["chunk_files"]
    case_json.write_text(json.dumps(meta))
    next(p for p in (store / "cases/n_0/label/c").rglob("*") if p.is_file()).unlink()
    case = open_store(store)["n_0"]
    assert case.missing_chunk_files() == {}
    assert case.read_label() is not None


def test_full_disk_during_a_case_keeps_the_store_and_resumes(tmp_path: Path, monkeypatch) -> None:
    import zarr.storage._local as local

    raw = write_numpy(tmp_path / "raw", ids=("n_0", "n_1", "n_2"))
    url = tmp_path / "s.zarr"
    put, calls = local._put, []

    def full_disk(path, value, exclusive=False):
        calls.append(path)
        if "n_1" in str(path) and "/c/" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return put(path, value, exclusive)

    monkeypatch.setattr(local, "_put", full_disk)
    with pytest.raises(WriteError, match=r"case 'n_1': cannot write .*No space left on device"):
        ingest(raw, url, SETTINGS, progress=False)
    assert open_store(url).case_ids == ("n_0",)  # the complete case is kept, listed
    assert sorted(p.name for p in (url / "cases").iterdir()) == ["n_0", "zarr.json"]
    monkeypatch.setattr(local, "_put", put)
    report = ingest(raw, url, SETTINGS, progress=False)
    assert report.already == ["n_0"] and report.written == ["n_1", "n_2"]


def test_ingest_into_a_newer_store_says_upgrade(store: Path) -> None:
    _edit_json(store / "zarr.json", format_version=99)
    with pytest.raises(StoreError, match=r"written by a newer partseg \(store format 99;.*upgrade"):
        ingest(write_numpy(store.parent / "raw"), store, SETTINGS, progress=False)


def test_resume_removes_an_unlisted_symlink_without_following_it(store: Path) -> None:
    outside = store.parent / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    (store / "cases" / "n_9").symlink_to(outside)
    raw = write_numpy(store.parent / "raw")
    report = ingest(raw, store, SETTINGS, progress=False)
    assert "n_9" in report.removed_tmp and not (store / "cases" / "n_9").exists()
    assert (outside / "keep.txt").read_text() == "precious"


def test_ingest_removes_partial_index_files_of_a_killed_write(store: Path) -> None:
    (store / "zarr.a1b2.partial").write_text("{")
    report = ingest(write_numpy(store.parent / "raw"), store, SETTINGS, progress=False)
    assert "zarr.a1b2.partial" in report.removed_tmp
    assert not (store / "zarr.a1b2.partial").exists()


def test_second_ingest_into_a_locked_store_is_refused(store: Path) -> None:
    from partseg.errors import LockError
    from partseg.locking import run_lock

    before = sorted(str(p) for p in store.rglob("*"))
    with run_lock(store, "ingest"), pytest.raises(LockError, match="in use by partseg ingest"):
        ingest(write_numpy(store.parent / "raw"), store, SETTINGS, progress=False)
    assert sorted(str(p) for p in store.rglob("*")) == before


def test_image_values_survive_the_every_chunk_rule(store: Path) -> None:
    """Every chunk is written now, the all-zero ones too: the values are unchanged."""
    from rawdata import FOREGROUND, make_image

    image = open_store(store)["n_0"].read_image()
    np.testing.assert_allclose(image.max(axis=(1, 2, 3)) > 0, True)
    assert image.shape == (3, *(s.stop - s.start for s in FOREGROUND))
    assert make_image(3).shape[0] == image.shape[0]
