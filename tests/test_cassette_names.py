"""A cassette name from a mark never leaves the cassette directory (regression: ``../../../x`` and absolute
paths escaped it)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from dspy_bridge import UsageError
from dspy_bridge._pytest._names import cassette_paths


@pytest.mark.parametrize("name", ["../../../x", "/etc/passwd", "a/../../b.yaml", "..", "a\\..\\..\\b", ""])
def test_escaping_names_are_refused(tmp_path: Path, name: str) -> None:
    item = SimpleNamespace(path=tmp_path / "test_mod.py", cls=None, name="test_x")
    if name == "":
        bridge, _ = cassette_paths(item, str(tmp_path / "c"), name)  # empty: the default name
        assert bridge.is_relative_to(tmp_path / "c")
        return
    with pytest.raises(UsageError, match="inside the cassette directory"):
        cassette_paths(item, str(tmp_path / "c"), name)


def test_relative_names_stay_inside(tmp_path: Path) -> None:
    item = SimpleNamespace(path=tmp_path / "test_mod.py", cls=None, name="test_x")
    bridge, _ = cassette_paths(item, str(tmp_path / "c"), "shared/qa.yaml")
    assert bridge.resolve().is_relative_to((tmp_path / "c").resolve())
