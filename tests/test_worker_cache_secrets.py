"""The real worker's DSPy cache never persists a key (regression: DSPy's disk cache, on by default, stored an
LM answer that contained the key)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # imports DSPy


def test_answers_holding_a_key_are_never_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "cache"))
    from dspy_bridge.worker._real import DSPyHandlers

    handlers = DSPyHandlers("w-cache")
    handlers._enable_cache()
    import dspy

    key = "AI" + "za" + "Q" * 35
    dspy.cache.put({"model": "gemini/x", "messages": "leak"}, {"text": f"your key is {key}"})
    dspy.cache.put({"model": "gemini/x", "messages": "fine"}, {"text": "4"})
    assert dspy.cache.get({"model": "gemini/x", "messages": "leak"}) is None
    assert dspy.cache.get({"model": "gemini/x", "messages": "fine"}) == {"text": "4"}
    dspy.cache.disk_cache.close()
    for root, _, files in os.walk(tmp_path / "cache"):
        for name in files:
            assert key.encode() not in (Path(root) / name).read_bytes()
