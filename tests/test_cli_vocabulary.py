"""One flag vocabulary across the ``partseg`` commands (``partseg.cli.options``).

The parser is introspected: every long command has ``--no-progress``, every command ``--json``
(JSON on stdout), every resuming command ``--overwrite``, ``--device`` and ``--amp`` take the
same values wherever they exist, and old spellings are hidden aliases that still work with a
note. ``--json`` prints JSON only; the resume rules of ``train`` are run in
``tests/train/test_cli_resume.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from partseg.cli import COMMANDS, build_parser, main
from partseg.cli.options import LONG_COMMANDS, RESUMING_COMMANDS, VOCABULARY
from partseg.precision_modes import PRECISION_MODES


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Visible option string -> action (hidden deprecated aliases left out)."""
    return {s: a for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def test_every_command_speaks_the_vocabulary() -> None:
    subparsers = _subparsers()
    assert set(subparsers) == set(COMMANDS)
    for name, parser in subparsers.items():
        options = _options(parser)
        assert "--json" in options, name  # machine-readable output everywhere
        assert "print" in options["--json"].help and "JSON on stdout" in options["--json"].help
        if name in LONG_COMMANDS:
            progress = options.get("--no-progress")
            assert progress is not None and progress.help == VOCABULARY["--no-progress"], name
        if name in RESUMING_COMMANDS:
            assert "--overwrite" in options, name
            assert "a rerun of the same command resumes" in options["--overwrite"].help, name
        if "--amp" in options:
            assert tuple(options["--amp"].choices) == PRECISION_MODES, name
        if "--device" in options:
            assert options["--device"].type is not None, name  # names checked when parsed
        for old in ("--device-type", "--labels-map", "--json-file"):
            assert old not in options, (name, old)  # old spellings are hidden aliases
        cases = options.get("--cases")
        assert cases is None or cases.nargs == "+", name  # --cases is a list of case ids


@pytest.mark.parametrize("name", ["train", "cv", "predict"])
def test_device_and_amp_are_one_spelling(name: str) -> None:
    options = _options(_subparsers()[name])
    assert "--device" in options and "--amp" in options
    with pytest.raises(SystemExit):
        _subparsers()[name].parse_args(["x", "--device", "tpu"])


def test_old_spellings_still_work_with_a_note(tmp_path: Path, capsys) -> None:
    assert main(["phantom", str(tmp_path / "p"), "--cases", "1", "--shape", "16", "24", "24",
                 "--kind", "brats-simple", "--no-progress"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "--cases is deprecated; use --count N" in err
    plan = _subparsers()["plan"].parse_args(["tiny", "--gpu-mem", "1GiB", "--device-type", "cpu"])
    assert plan.device == "cpu"
    assert "--device-type is deprecated; use --device" in capsys.readouterr().err
    args = _subparsers()["evaluate"].parse_args(["p", "g", "--json", "m.json"])
    assert args.json is False and args.json_out == "m.json"  # --json FILE = --json-out FILE
    assert "--json FILE is deprecated" in capsys.readouterr().err
    assert _subparsers()["evaluate"].parse_args(["p", "g", "--json"]).json is True


def test_json_prints_json_only(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p"
    assert main(["phantom", str(out), "--count", "2", "--shape", "16", "24", "24", "--kind",
                 "brats-simple", "--json"]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)  # nothing but JSON on stdout
    assert [Path(p).name for p in printed["cases"]] == ["Phantom_001", "Phantom_002"]


def test_library_notes_name_the_command_that_runs(tmp_path: Path, capsys) -> None:
    """One process running several commands (as tools/bench_learning.py does) names each."""
    import logging

    assert main(["phantom", str(tmp_path / "p"), "--count", "1", "--shape", "16", "24", "24",
                 "--kind", "brats-simple", "--no-progress"]) == 0  # fmt: skip
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2  # another command, in this process
    logging.getLogger("partseg.precision").info("a note")
    err = capsys.readouterr().err
    assert "partseg info: a note" in err and "partseg phantom: a note" not in err
