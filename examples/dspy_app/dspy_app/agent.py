"""A ReAct agent that looks facts up in the corpus and converts units."""

from __future__ import annotations

import dspy

from dspy_app import rag

_TO_METRES = {
    "m": 1.0, "metre": 1.0, "meter": 1.0, "metres": 1.0, "meters": 1.0,
    "km": 1000.0, "kilometre": 1000.0, "kilometer": 1000.0, "kilometres": 1000.0, "kilometers": 1000.0,
    "ft": 0.3048, "foot": 0.3048, "feet": 0.3048,
    "mi": 1609.344, "mile": 1609.344, "miles": 1609.344,
}  # fmt: skip


def search_corpus(query: str) -> list[str]:
    """Search the encyclopedia for passages about the query (returns the best three)."""
    return rag.search(query, k=3)


def convert_units(value: float, from_unit: str, to_unit: str) -> float:
    """Convert a length between units: m, km, ft, mi (and their spelled-out names)."""
    try:
        factor = _TO_METRES[from_unit.strip().lower()] / _TO_METRES[to_unit.strip().lower()]
    except KeyError as missing:
        raise ValueError(f"unknown unit {missing}; known: {sorted(_TO_METRES)}") from None
    return round(value * factor, 3)


class Researcher(dspy.Module):
    def __init__(self, max_iters: int = 5) -> None:
        super().__init__()
        self.react = dspy.ReAct("question -> answer: str", tools=[search_corpus, convert_units], max_iters=max_iters)

    def forward(self, question: str) -> dspy.Prediction:
        return self.react(question=question)
