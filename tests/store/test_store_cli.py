"""``partseg ingest`` and ``partseg info``: exit statuses, JSON output, errors on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rawdata import make_label, save_nifti, write_brats

from partseg.cli import main


def test_ingest_then_info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_brats(tmp_path / "raw")
    store = str(tmp_path / "s.zarr")
    assert main(["ingest", str(src), store, "--json", "--chunks", "4", "8", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == ["B_001", "B_002"] and report["layout"] == "brats"
    assert main(["info", store, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cases"] == 2 and info["labelled_cases"] == 2
    assert info["shape_min"] == info["shape_max"] == [8, 10, 13]
    assert info["channels"] == ["t1", "t1ce", "t2", "flair"]
    assert [c["name"] for c in info["classes"]] == ["background", "necrotic", "edema", "enhancing"]
    # each case has blocks of 2 x 4 x 5 voxels per tumour class
    assert [c["voxels"] for c in info["classes"][1:]] == [80, 80, 80]
    assert sum(c["share"] for c in info["classes"]) == pytest.approx(1.0)
    assert info["chunks"] == [4, 8, 8] and info["dtype"] == "int16"
    assert info["size_bytes"] > 0
    assert main(["info", store]) == 0
    text = capsys.readouterr().out
    assert "enhancing" in text and "MiB on disk" in text


def test_bad_case_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_brats(tmp_path / "raw")
    save_nifti(src / "B_002" / "B_002_seg.nii.gz", make_label((1, 2, 5)))
    store = str(tmp_path / "s.zarr")
    assert main(["ingest", str(src), store, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "B_002" in err and "B_002_seg.nii.gz" in err and "[5]" in err
    assert main(["ingest", str(src), store, "--skip-bad", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["already"] == ["B_001"] and report["bad"][0]["case"] == "B_002"
    only_bad = tmp_path / "only_bad"
    write_brats(only_bad, ids=("B_002",))
    save_nifti(only_bad / "B_002" / "B_002_seg.nii.gz", make_label((1, 2, 5)))
    assert main(["ingest", str(only_bad), str(tmp_path / "t.zarr"), "--skip-bad"]) == 2


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["ingest", str(tmp_path / "empty"), str(tmp_path / "s.zarr")]) == 2
    assert "no known dataset layout" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "empty")]) == 2
    assert "not a partseg store" in capsys.readouterr().err


def test_phantom_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phantom = pytest.importorskip("partseg.phantom")
    phantom.write_phantoms(tmp_path / "raw", 2, (24, 32, 32), progress=False)
    store = str(tmp_path / "s.zarr")
    assert main(["ingest", str(tmp_path / "raw"), store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 2
    assert main(["info", store, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labelled_cases"] == 2
    assert all(c["voxels"] > 0 for c in info["classes"])
