"""Remote stores whose fsspec package is missing: one line naming what to install."""

from __future__ import annotations

import sys

import pytest

from partseg.cli import main


@pytest.mark.parametrize(
    ("url", "missing", "install"),
    [
        ("s3://bucket/brats.zarr", "s3fs", "pip install s3fs"),
        ("https://example.org/brats.zarr", "aiohttp", "pip install aiohttp requests"),
    ],
)
def test_a_missing_fsspec_package_is_named_with_the_pip_command(
    url: str, missing: str, install: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # importing it fails, installed or not
    assert main(["info", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"partseg info: error: store {url}: ") and "\n" not in err
    assert install in err and "partseg[remote]" in err and "Traceback" not in err


def test_ingest_help_suggests_no_in_memory_store(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    text = capsys.readouterr().out
    assert "memory://" not in text and "partseg[remote]" in text
