"""Progress: a bar on a terminal, plain throttled lines in a redirected log, nothing when off."""

from __future__ import annotations

import io

import pytest

from partseg.cli import main
from partseg.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_redirected_stream_gets_lines_without_carriage_returns() -> None:
    log = io.StringIO()
    with Progress(4, "predict", unit="case", stream=log, interval=0) as bar:
        for case in ("a", "b", "c", "d"):
            bar.update(note=case)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("predict: 1/4 case (25%), ") and lines[0].endswith(", a")
    assert lines[-1].startswith("predict: 4/4 case (100%)") and "\r" not in log.getvalue()


def test_lines_are_throttled_and_the_final_one_is_optional() -> None:
    log = io.StringIO()
    bar = Progress(100, "epoch 1/2", unit="step", stream=log, interval=3600, final=False)
    for _ in range(100):
        bar.update()
    assert log.getvalue() == ""  # within the interval and no final line: silent
    bar = Progress(3, "ingest", stream=log, interval=3600)
    for _ in range(3):
        bar.update()
    assert log.getvalue().count("\n") == 1 and log.getvalue().startswith("ingest: 3/3")


def test_a_terminal_gets_a_bar_and_fractions_move_it() -> None:
    tty = Terminal()
    with Progress(2, "predict", unit="case", stream=tty) as bar:
        bar.set(0.5, note="c1 50%")
        bar.write("c1: done")
    text = tty.getvalue()
    assert "\r" in text and "c1 50%" in text and "c1: done\n" in text


def test_disabled_shows_nothing() -> None:
    for stream in (io.StringIO(), Terminal()):
        with Progress(3, "plan", stream=stream, enabled=False, interval=0) as bar:
            bar.update()
        assert stream.getvalue() == ""


@pytest.mark.parametrize("no_progress", [False, True])
def test_phantom_in_a_redirected_log(tmp_path, capsys, no_progress: bool) -> None:
    argv = ["phantom", str(tmp_path), "--count", "2", "--shape", "16", "24", "24",
            "--kind", "brats-simple"]  # fmt: skip
    assert main(argv + ["--no-progress"] * no_progress) == 0
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    assert "\r" not in err
    assert ("phantom brats-simple: 2/2 case (100%)" in err) is not no_progress
