"""Scripted runs: the real agent and its real tools, with each LM call answered by the test — no LM, no cassette.

Use this to test your module's own control flow (which tool runs when, what the tools compute, how many LM calls
each predictor makes) without recording anything.
"""

from __future__ import annotations

import pytest

QUESTION = "How long is a marathon in kilometres?"
STEPS = [
    {"next_thought": "Find the distance.", "next_tool_name": "search_corpus",
     "next_tool_args": {"query": "marathon distance"}},
    {"next_thought": "Convert 26.2 miles.", "next_tool_name": "convert_units",
     "next_tool_args": {"value": 26.2, "from_unit": "mi", "to_unit": "km"}},
    {"next_thought": "Done.", "next_tool_name": "finish", "next_tool_args": {}},
]  # fmt: skip


@pytest.mark.scripted
def test_the_researcher_runs_its_tools_in_the_order_the_model_asks(bridge):
    bridge.script({"react.react": STEPS, "react.extract": {"answer": "About 42.2 km"}})
    agent = bridge.create_program(module="dspy_app.agent:Researcher", kwargs={"max_iters": 4})

    result = bridge.execute(agent, full=True, question=QUESTION)

    search, convert, _ = result.tool_calls
    assert any(passage.startswith("Marathon |") for passage in search["observation"])  # the real retriever
    assert convert["observation"] == 42.165  # the real conversion
    assert result["answer"] == "About 42.2 km"
    result.assert_calls({"react.react": 3, "react.extract": 1}, exact=True)
    result.assert_no_adapter_fallback()


@pytest.mark.scripted
def test_the_researcher_stops_at_max_iters_when_the_model_never_finishes(bridge):
    looping = {"next_thought": "Search again.", "next_tool_name": "search_corpus", "next_tool_args": {"query": "x"}}
    bridge.script({"react.react": looping, "react.extract": {"answer": "I could not find it."}})
    agent = bridge.create_program(module="dspy_app.agent:Researcher", kwargs={"max_iters": 2})

    result = bridge.execute(agent, full=True, question=QUESTION)

    assert [call["tool"] for call in result.tool_calls] == ["search_corpus", "search_corpus"]
    result.assert_calls({"react.react": 2, "react.extract": 1})
