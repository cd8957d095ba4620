"""The ReAct agent: it searches the corpus, converts the unit, and answers from what its tools returned."""

from __future__ import annotations

from helpers import MOCK_AND_REAL, MODEL

QUESTION = "How long is a marathon in kilometres?"


@MOCK_AND_REAL
def test_the_agent_searches_then_converts(bridge, lm_answers, kind):
    lm_answers(
        {"next_thought": "Find the marathon distance.", "next_tool_name": "search_corpus",
         "next_tool_args": {"query": "marathon distance"}},
        {"next_thought": "It is 26.2 miles; convert to km.", "next_tool_name": "convert_units",
         "next_tool_args": {"value": 26.2, "from_unit": "mi", "to_unit": "km"}},
        {"next_thought": "I have the answer.", "next_tool_name": "finish", "next_tool_args": {}},
        {"reasoning": "A marathon is 26.2 miles, which is 42.165 km.", "answer": "About 42.2 km"},
    )  # fmt: skip
    bridge.configure_lm(MODEL)
    agent = bridge.create_program(module="dspy_app.agent:Researcher", kwargs={"max_iters": 4})

    result = bridge.execute(agent, full=True, question=QUESTION)

    assert [call["tool"] for call in result.tool_calls] == ["search_corpus", "convert_units", "finish"]
    search, convert, _ = result.tool_calls
    assert any(passage.startswith("Marathon |") for passage in search["observation"])
    assert convert["args"] == {"value": 26.2, "from_unit": "mi", "to_unit": "km"}
    assert convert["observation"] == 42.165  # the tool's own arithmetic, run in the worker
    assert "42" in result.outputs["answer"]
    assert result.lm_calls == 4  # three ReAct steps and the final extraction
