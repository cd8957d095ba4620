"""Test helpers that need no network: a fake Gemini server DSPy can talk to for real."""

from __future__ import annotations

from dspy_bridge.testing.fake_gemini import (
    Delay,
    Drop,
    Empty,
    Fail,
    FakeGemini,
    PromptBlocked,
    RecordedRequest,
    Reply,
    ScriptItem,
)

__all__ = ["Delay", "Drop", "Empty", "Fail", "FakeGemini", "PromptBlocked", "RecordedRequest", "Reply", "ScriptItem"]
