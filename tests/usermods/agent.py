"""A ReAct agent with two tools that live in this module."""

from __future__ import annotations

import dspy

CALLS: list[str] = []


def search(query: str) -> str:
    """Search a tiny encyclopedia."""
    return f"encyclopedia: {query} is a city"


def population(city: str) -> int:
    """The population of a city, in thousands."""
    return {"paris": 2100, "rome": 2800}.get(city.lower(), 1000)


class Agent(dspy.Module):
    def __init__(self, max_iters: int = 4) -> None:
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[search, population], max_iters=max_iters)

    def forward(self, question: str) -> dspy.Prediction:
        return self.react(question=question)
