"""The ``lm_answers`` fixture: what the bundled fake Gemini answers when a test records against it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def _fake_gemini(request: pytest.FixtureRequest) -> str | None:
    """The control URL of the bundled fake Gemini if this test records against it (--bridge-upstream=fake)."""
    if not request.getfixturevalue("bridge_cassette").records:
        return None  # replaying: the cassettes already hold the answers
    upstream = str(request.getfixturevalue("bridge_proxy").upstream).rstrip("/")
    if not upstream.startswith("http://127.0.0.1:"):
        return None  # real Gemini answers by itself
    try:
        with urllib.request.urlopen(f"{upstream}/__fake__/health", timeout=5):
            return upstream
    except OSError:
        return None


def _post(url: str, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=5):
        pass


@pytest.fixture
def lm_answers(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """``lm_answers({"answer": ...}, ...)``: what the model says, call by call, when recording against the fake.

    The fake Gemini knows no facts (unscripted, it answers made-up words of the right types), so a recording
    against it is scripted with the answers a capable model gives. Recording against real Gemini ignores the
    script; replaying never needs it.
    """
    fake = _fake_gemini(request)

    def answer(*replies: dict[str, Any]) -> None:
        if fake is not None:
            _post(
                f"{fake}/__fake__/enqueue",
                {"items": [{"kind": "reply", "fields": r} for r in replies], "replace": True},
            )

    yield answer
    if fake is not None:
        _post(f"{fake}/__fake__/reset", {})  # nothing left over for the next recording
