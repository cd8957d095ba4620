"""The sample project's tests: fast mock tests (cassettes) and real-worker integration tests."""

from __future__ import annotations

import pytest
from qa_app import LABELS, answer, sentiment

MODEL = "gemini/gemini-2.5-flash"


@pytest.mark.mock
def test_answer_is_some_text(bridge):
    bridge.configure_lm(MODEL)
    assert answer(bridge, "What does DSPy optimise?").strip()


@pytest.mark.mock
def test_sentiment_is_one_of_the_labels(bridge):
    bridge.configure_lm(MODEL)
    assert sentiment(bridge, "The delivery was late and the box was crushed.") in LABELS


@pytest.mark.mock
def test_a_stub_overrides_the_model(bridge):
    from qa_app import SENTIMENT

    bridge.configure_lm(MODEL)
    program_id = bridge.create_program(SENTIMENT)
    bridge.stub(program_id, {"sentiment": "neutral"})
    assert sentiment(bridge, "anything") == "neutral"  # ("surprised" would be refused: not a choice)


@pytest.mark.integration
def test_answer_on_real_workers(bridge):
    bridge.configure_lm(MODEL)
    assert answer(bridge, "What does DSPy optimise?").strip()


@pytest.mark.integration
def test_sentiment_on_real_workers(bridge):
    bridge.configure_lm(MODEL)
    assert sentiment(bridge, "Great service, thank you!") in LABELS
