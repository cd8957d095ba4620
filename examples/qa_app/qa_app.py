"""A tiny application built on dspy-bridge: question answering and sentiment labels.

The functions take a ``Bridge`` (a session on a worker pool), so the same code runs against real DSPy
workers in production and against mock workers in unit tests.
"""

from __future__ import annotations

from typing import Any

from dspy_bridge import Bridge

ANSWER = "question -> answer"
SENTIMENT: dict[str, Any] = {
    "inputs": [{"name": "text", "description": "a short customer message"}],
    "outputs": [{"name": "sentiment", "type": "Literal['positive', 'negative', 'neutral']"}],
    "instructions": "Classify the sentiment of the message.",
}
LABELS = ("positive", "negative", "neutral")


def answer(bridge: Bridge, question: str) -> str:
    return str(bridge.run(ANSWER, "chain_of_thought", question=question)["answer"])


def sentiment(bridge: Bridge, text: str) -> str:
    label = str(bridge.run(SENTIMENT, "predict", text=text)["sentiment"])
    if label not in LABELS:
        raise ValueError(f"model answered {label!r}, not one of {LABELS}")
    return label
