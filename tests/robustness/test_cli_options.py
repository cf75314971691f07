"""Numeric options are range-checked at parse time (:mod:`partseg.cli.options`)."""

from __future__ import annotations

import pytest

from partseg.cli import main

BAD = [
    ["ingest", "src", "store", "--workers", "-1"],
    ["ingest", "src", "store", "--workers", "0"],
    ["ingest", "src", "store", "--clevel", "12"],
    ["ingest", "src", "store", "--chunks", "0", "8", "8"],
    ["ingest", "src", "store", "--spacing", "1", "nan", "1"],
    ["ingest", "src", "store", "--spacing", "1", "-2", "1"],
    ["ingest", "src", "store", "--channels-per-chunk", "0"],
    ["ingest", "src", "store", "--labels", "0", "-3"],
    ["phantom", "out", "--count", "0"],
    ["phantom", "out", "--count", "2", "--shape", "0", "8", "8"],
    ["phantom", "out", "--count", "2", "--seed", "-1"],
    ["phantom", "out", "--count", "2", "--prefix", "../x"],
    ["plan", "tiny", "--gpu-mem", "1GiB", "--safety", "nan"],
    ["plan", "tiny", "--gpu-mem", "1GiB", "--safety", "1"],
    ["plan", "tiny", "--gpu-mem", "1GiB", "--safety", "-0.1"],
    ["cv", "tiny", "--folds", "1"],
    ["train", "tiny", "--fold", "-1"],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a[:1] + a[3:]) for a in BAD])
def test_out_of_range_options_fail_at_parse_time(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"partseg {argv[0]}: error: argument")
    assert "expected" in last or "not a safe file name" in last
