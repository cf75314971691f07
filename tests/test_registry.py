"""The generic name registry behind losses, models, blend modes and layouts."""

from __future__ import annotations

import sys

import pytest

from partseg.errors import ConfigError
from partseg.registry import Registry


def test_lazy_entries_import_on_first_get() -> None:
    reg: Registry = Registry("codec")
    reg.add("json", "json:dumps", help="JSON text")
    sys.modules.pop("json.tool", None)
    reg.add("tool", "json.tool:main")
    assert reg.names() == ("json", "tool") and len(reg) == 2 and "tool" in reg
    assert "json.tool" not in sys.modules  # listing names imports nothing
    assert reg.get("json")({"a": 1}) == '{"a": 1}'
    assert callable(reg.get("tool")) and "json.tool" in sys.modules


def test_unknown_name_names_the_key_and_the_nearest() -> None:
    reg: Registry = Registry("blend mode")
    for name in ("crop", "gaussian", "hann"):
        reg.add(name, name)
    with pytest.raises(ConfigError, match=r"evaluation\.blend='gausian'; did you mean 'gaussian'"):
        reg.check("gausian", key="evaluation.blend")
    with pytest.raises(ConfigError, match="unknown blend mode 'zzz'; choose one of: crop"):
        reg.get("zzz")


def test_duplicate_registration_is_a_bug() -> None:
    reg: Registry = Registry("loss")
    reg.add("dice", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("dice", 2)
