"""The real worker's DSPy cache never keeps a key (regression: DSPy's disk cache, on by default, stored an
LM answer that contained the key), and it lives in memory only, one per session: nothing reaches the disk."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # imports DSPy


def test_answers_holding_a_key_are_never_cached_and_nothing_reaches_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "cache"))
    from dspy_bridge.worker._real import DSPyHandlers

    DSPyHandlers("w-cache")
    import dspy

    from dspy_bridge.worker._calls import CallLog
    from dspy_bridge.worker._hermetic import session_cache

    key = "AI" + "za" + "Q" * 35
    log = CallLog({}, cache=session_cache())
    with dspy.context(callbacks=[log]):  # as during a session's run
        dspy.cache.put({"model": "gemini/x", "messages": "leak"}, {"text": f"your key is {key}"})
        dspy.cache.put({"model": "gemini/x", "messages": "fine"}, {"text": "4"})
        assert dspy.cache.get({"model": "gemini/x", "messages": "leak"}) is None
        assert dspy.cache.get({"model": "gemini/x", "messages": "fine"}) == {"text": "4"}
    assert log.as_dict()["(no predictor)"]["cache_hits"] == 1
    assert dspy.cache.get({"model": "gemini/x", "messages": "fine"}) is None  # outside a run: no cache at all
    with dspy.context(callbacks=[CallLog({}, cache=session_cache())]):  # another session: its own cache
        assert dspy.cache.get({"model": "gemini/x", "messages": "fine"}) is None
    assert not (tmp_path / "cache").exists()
