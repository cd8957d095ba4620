"""A module as DSPy users write one: a ReAct agent with a tool, then a ChainOfThought check of its answer.

The tool records each call, and the module returns that record, so a test sees the tool really ran in the
worker. ``Planner`` asks for native tool calls (a ``dspy.ToolCalls`` output under an adapter with
``use_native_function_calling``), and runs the tools it is given.
"""

from __future__ import annotations

import dspy

SEARCHES: list[str] = []


def search(query: str) -> str:
    """Search a tiny encyclopedia."""
    SEARCHES.append(query)
    return f"{query.title()}: population {len(query) * 1000}"


class Researcher(dspy.Module):
    def __init__(self, max_iters: int = 3) -> None:
        super().__init__()
        self.agent = dspy.ReAct("question -> answer: int", tools=[search], max_iters=max_iters)
        self.check = dspy.ChainOfThought("question, answer -> plausible: bool")

    def forward(self, question: str) -> dspy.Prediction:
        SEARCHES.clear()
        found = self.agent(question=question)
        checked = self.check(question=question, answer=str(found.answer))
        return dspy.Prediction(
            answer=found.answer, plausible=checked.plausible, trajectory=found.trajectory, searches=list(SEARCHES)
        )


class Planner(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.plan = dspy.Predict("question, tools: list[dspy.Tool] -> calls: dspy.ToolCalls")

    def forward(self, question: str) -> dspy.Prediction:
        SEARCHES.clear()
        tools = [dspy.Tool(search)]
        with dspy.context(adapter=dspy.ChatAdapter(use_native_function_calling=True)):
            planned = self.plan(question=question, tools=tools)
        results = [call.execute(functions=tools) for call in planned.calls.tool_calls]
        return dspy.Prediction(results=results, searches=list(SEARCHES))


class Forgiving(dspy.Module):
    """Catches any failure of its predictor and answers a default: a strict script still fails the run."""

    def __init__(self) -> None:
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        try:
            return self.qa(question=question)
        except Exception:
            return dspy.Prediction(answer="fallback")


class Configures(dspy.Module):
    """Calls ``dspy.configure`` as application code sometimes does, and reports what it found configured."""

    def forward(self, note: str) -> dspy.Prediction:
        seen = dspy.settings.get("bridge_note")
        dspy.configure(bridge_note=note)
        return dspy.Prediction(seen=seen)
