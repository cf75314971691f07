"""The docs list every name the registries accept (and the CLI offers exactly those)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from partseg.cli import build_parser
from partseg.infer.blends import BLENDS
from partseg.infer.modes import MODES
from partseg.losses import LOSSES
from partseg.metrics import HD95_CONVENTIONS, METRICS
from partseg.models import MODELS
from partseg.precision_modes import PRECISION_MODES
from partseg.store.sources import LAYOUTS

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "user_guide.md"

#: What the user guide must name, per kind (each name in backticks).
KINDS = {
    "loss": LOSSES.names(),
    "model": MODELS.names(),
    "layout": LAYOUTS.names(),
    "metric": METRICS.names(),
    "HD95 convention": HD95_CONVENTIONS.names(),
    "precision mode": PRECISION_MODES,
    "prediction mode": MODES.names(),
    "blend mode": BLENDS.names(),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_user_guide_names_every_registered_name(kind: str) -> None:
    text = GUIDE.read_text()
    missing = [name for name in KINDS[kind] if f"`{name}`" not in text]
    assert not missing, f"docs/user_guide.md does not list the {kind} name(s) {missing}"


def _choices(command: str, dest: str) -> tuple[str, ...]:
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    return tuple(next(a for a in parser._actions if a.dest == dest).choices)


def test_cli_choices_come_from_the_registries() -> None:
    assert _choices("evaluate", "hd95") == HD95_CONVENTIONS.names()
    assert _choices("ingest", "layout") == ("auto", *LAYOUTS.names())
    assert _choices("predict", "partition") == MODES.names()
    assert _choices("predict", "blend") == BLENDS.names()
    assert _choices("predict", "amp") == _choices("train", "amp") == tuple(PRECISION_MODES)
    help_text = build_parser()._subparsers._group_actions[0].choices["evaluate"].format_help()
    assert re.search(r"default:\s+max_directed", help_text)
