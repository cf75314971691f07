"""Tests of ``partseg demo`` and ``partseg compare`` through the console entry point."""

from __future__ import annotations

import json
from pathlib import Path

from partseg.cli import build_parser, main
from partseg.cli.compare import COMPARE_OUTPUTS
from partseg.train.rundir import clear_outputs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_demo_and_compare_parsers_have_documented_defaults() -> None:
    parser = build_parser()
    demo = parser.parse_args(["demo"])
    assert demo.out is None and demo.quick is False
    assert demo.config is None  # the built-in recipe demo (configs/demo.yaml)
    compare = parser.parse_args(["compare", "x.yaml", "a=1", "--quick", "b=2"])
    assert compare.overrides == ["a=1", "b=2"] and compare.store is None


def test_demo_missing_config_is_a_clean_error(tmp_path: Path, capsys) -> None:
    status = main(["demo", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path)])
    assert status == 2
    assert "demo config" in capsys.readouterr().err


def test_compare_bad_override_is_a_clean_error(tmp_path: Path, capsys) -> None:
    status = main(
        [
            "compare",
            str(CONFIGS / "brats_3d.yaml"),
            "base.train.epochz=1",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 2
    assert "epochz" in capsys.readouterr().err


def test_demo_quick_end_to_end_and_rerun(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| 2d |" in printed and "| 3d_context |" in printed
    assert str(out / "report" / "report.md") in printed
    data = json.loads((out / "report" / "results.json").read_text())
    assert data["variants"] == ["2d", "3d", "3d_context"]
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert printed.count("| 2d |") == capsys.readouterr().out.count("| 2d |")
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # a resumed run; stdout holds the JSON only
    assert result["variants"] == data["variants"] and result["report"].endswith("report.md")
    (out / "notes.txt").write_text("mine")
    removed = clear_outputs(out, COMPARE_OUTPUTS, "demo")  # what --overwrite does first
    assert sorted(p.name for p in removed) == ["data", "report", "runs", "split.json"]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # only partseg's outputs go
