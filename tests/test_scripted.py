"""Scripted runs, call assertions and hermetic caches, on one real pool (zygote-forked where available).

The user module (``tests/usermods/scripted_app.py``) is a ``dspy.ReAct`` agent with a tool plus a
``ChainOfThought`` check, and a planner asking for native tool calls. Its tool records each call and the module
returns the record, so every assertion about tools is about code that ran in the worker. The pool's workers get
their own ``HOME`` and ``DSPY_CACHEDIR``, which must still be empty at the end: no DSPy disk cache, ever.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge import Bridge, HandlerError, Result, UsageError
from dspy_bridge.pool import PoolConfig, SyncPool
from dspy_bridge.testing import Fail, FakeGemini

pytestmark = pytest.mark.slow

QUESTION = "How many people live in Paris?"
KEY = "scripted-test-" + secrets.token_hex(8)
MODEL = "gemini/gemini-2.5-flash"
AGENT = "usermods.scripted_app:Researcher"
SCRIPT: dict[str, Any] = {
    "agent.react": [
        {"next_thought": "Look it up.", "next_tool_name": "search", "next_tool_args": {"query": "paris"}},
        {"next_thought": "Done.", "next_tool_name": "finish", "next_tool_args": {}},
    ],
    "agent.extract": {"reasoning": "The search said 5000.", "answer": 5000},
    "check": {"plausible": True},
}


@pytest.fixture(scope="session")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scripted-worker-home")
    return {"HOME": root / "home", "DSPY_CACHEDIR": root / "dspy-cache"}


@pytest.fixture(scope="session")
def scripted_pool(homes: dict[str, Path]) -> Iterator[SyncPool]:
    homes["HOME"].mkdir()
    config = PoolConfig(
        size=1,
        mode="real",
        allowed_modules=("usermods",),
        env={name: str(path) for name, path in homes.items()},
        start_timeout=120,
        retries=0,
    )
    with SyncPool(config) as pool:
        yield pool


@pytest.fixture
def client(scripted_pool: SyncPool) -> Iterator[Bridge]:
    client = Bridge(scripted_pool, mode="real")
    yield client
    client.close()


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY) as fake:
        yield fake


@pytest.mark.parametrize("adapter", ["chat", "json"])
def test_a_scripted_agent_really_runs_its_loop_and_tools(client: Bridge, adapter: str) -> None:
    agent = client.create_program(module=AGENT, adapter=adapter)
    assert client.script(SCRIPT) == {"scripted": sorted(SCRIPT), "strict": True, "auto": False}

    result = client.execute(agent, full=True, question=QUESTION)

    assert isinstance(result, Result) and result.source == "script"
    assert result.outputs["searches"] == ["paris"]  # the tool ran in the worker, once
    assert result.tool_calls[0] == {
        "tool": "search",
        "args": {"query": "paris"},
        "observation": "Paris: population 5000",
    }
    assert result.outputs["answer"] == 5000 and result.outputs["plausible"] is True
    assert result.lm_calls == 4
    result.assert_calls({"agent.react": 2, "agent.extract": 1, "check.predict": 1}, exact=True)
    result.assert_no_retries()
    result.assert_no_adapter_fallback()
    with pytest.raises(AssertionError) as failed:
        result.assert_calls({"agent.react": 3})
    assert str(failed.value) == (
        "LM calls differ: agent.react: expected 3 LM call(s), got 2\n"
        "actual calls:\n"
        "  agent.react: 2 LM call(s), 0 retries, 0 adapter fallback(s), 0 parse error(s), 0 cache hit(s)\n"
        "  agent.extract.predict: 1 LM call(s), 0 retries, 0 adapter fallback(s), 0 parse error(s), 0 cache hit(s)\n"
        "  check.predict: 1 LM call(s), 0 retries, 0 adapter fallback(s), 0 parse error(s), 0 cache hit(s)"
    )


def test_an_unscripted_call_fails_naming_the_predictor_the_call_and_the_prompt(client: Bridge) -> None:
    agent = client.create_program(module=AGENT)
    client.script({"agent.react": SCRIPT["agent.react"]})  # nothing for agent.extract
    with pytest.raises(HandlerError) as missed:
        client.execute(agent, question=QUESTION)
    message = str(missed.value)
    assert "unscripted LM call: predictor 'agent.extract.predict', call #1 (the script has no entry for it" in message
    assert f"Prompt (last user message): [[ ## question ## ]]\n{QUESTION}" in message
    assert "No more responses" not in message

    client.script({"agent.react": SCRIPT["agent.react"][:1], "agent.extract": {"answer": 1}, "check": {}})
    with pytest.raises(HandlerError, match=r"predictor 'agent.react', call #2 \(its script has 1 answer\(s\)"):
        client.execute(agent, question=QUESTION)


def test_strict_fails_even_when_the_module_swallows_the_error_and_lenient_lets_it_handle_it(client: Bridge) -> None:
    forgiving = client.create_program(module="usermods.scripted_app:Forgiving")
    client.script({})
    with pytest.raises(HandlerError, match=r"unscripted LM call: predictor 'qa', call #1") as missed:
        client.execute(forgiving, question="Anyone?")
    assert missed.value.error_details == {"argument": "script", "reason": "unscripted_call"}
    client.script({}, strict=False)
    assert client.execute(forgiving, question="Anyone?") == {"answer": "fallback"}


def test_auto_fills_schema_valid_answers_and_a_react_agent_finishes(client: Bridge) -> None:
    agent = client.create_program(module=AGENT)
    client.script({"check": {"plausible": False}}, auto=True)
    result = client.execute(agent, full=True, question=QUESTION)
    assert isinstance(result.outputs["answer"], int) and result.outputs["plausible"] is False
    assert [call["tool"] for call in result.tool_calls] == ["finish"] and result.outputs["searches"] == []
    result.assert_calls({"agent.react": 1, "agent.extract": 1, "check": 1})


def test_native_tool_calls_are_scripted_as_tool_call_parts(client: Bridge) -> None:
    planner = client.create_program(module="usermods.scripted_app:Planner")
    client.script({"plan": {"calls": [{"name": "search", "args": {"query": "rome"}}]}})
    outputs = client.execute(planner, question="Rome?")
    assert outputs == {"results": ["Rome: population 4000"], "searches": ["rome"]}


def test_an_adapter_fallback_is_counted_and_the_assertion_says_so(client: Bridge) -> None:
    agent = client.create_program(module=AGENT)
    client.script({**SCRIPT, "agent.extract": [{"answer": "many"}, {"answer": 5000}]})  # "many" is no int
    result = client.execute(agent, full=True, question=QUESTION)
    assert result.outputs["answer"] == 5000  # DSPy's JSONAdapter fallback asked again
    assert result.calls["agent.extract.predict"] == {
        "lm_calls": 2, "retries": 0, "fallbacks": 1, "parse_errors": 1, "cache_hits": 0
    }  # fmt: skip
    with pytest.raises(AssertionError, match=r"ChatAdapter → JSONAdapter fallback happened: agent.extract.predict 1"):
        result.assert_no_adapter_fallback()


def test_script_mistakes_are_refused_with_what_to_write(client: Bridge) -> None:
    agent = client.create_program(module=AGENT)
    client.script({**SCRIPT, "agent.extrakt": {"answer": 1}})
    with pytest.raises(HandlerError, match=r"script names predictor\(s\) \['agent.extrakt'\] that no program"):
        client.execute(agent, question=QUESTION)
    client.script({**SCRIPT, "check": {"plausibel": True}})
    with pytest.raises(HandlerError, match=r"gives field\(s\) \['plausibel'\] its signature does not have"):
        client.execute(agent, question=QUESTION)
    with pytest.raises(UsageError, match="script must be a map of predictor name"):
        client.script([{"answer": 1}])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"script\['check'\] must be an answer map"):
        client.script({"check": "yes"})


def test_a_mock_worker_refuses_a_script_saying_what_to_do() -> None:
    with SyncPool(PoolConfig(size=1, mode="mock", retries=0)) as pool, pytest.raises(HandlerError) as refused:
        Bridge(pool).script({"qa": {"answer": "4"}})
    assert refused.value.type == "unknown_command"
    assert "scripted runs need a real worker: mark the test scripted" in str(refused.value)


def test_each_session_has_its_own_memory_cache_and_hits_and_retries_are_counted(
    scripted_pool: SyncPool, gemini: FakeGemini
) -> None:
    gemini.reset()
    first, second = Bridge(scripted_pool, mode="real"), Bridge(scripted_pool, mode="real")
    results = []
    for bridge in (first, first, second):
        bridge.configure_lm(MODEL, api_key=KEY, api_base=gemini.base_url, num_retries=1)  # cache=True: DSPy's default
        program = bridge.create_program("question -> answer")
        results.append(bridge.execute(program, full=True, question="same question"))
    assert [result.cache_hits for result in results] == [0, 1, 0]  # the second session starts with an empty cache
    assert gemini.request_count == 2
    assert (first.outcomes["dspy_cache"], second.outcomes["dspy_cache"]) == (1, 0)  # what the plugin's summary adds
    results[1].assert_calls({"self": 1})
    assert results[1].calls["self"]["cache_hits"] == 1

    gemini.enqueue(Fail(429, retry_after=0))
    retried = second.execute(program, full=True, question="another question")
    assert retried.calls["self"]["retries"] == 1
    with pytest.raises(AssertionError, match=r"DSPy retried LM calls: self 1\nactual calls:\n  self: 1 LM call"):
        retried.assert_no_retries()
    first.close()
    second.close()


def test_a_dspy_configure_in_one_tests_code_does_not_reach_the_next_test(scripted_pool: SyncPool) -> None:
    first = Bridge(scripted_pool, mode="real")
    first.script({})
    program = first.create_program(module="usermods.scripted_app:Configures")
    assert first.execute(program, note="a") == {"seen": None}
    assert first.execute(program, note="b") == {"seen": "a"}  # within a test (a session) it holds
    second = Bridge(scripted_pool, mode="real")  # the next test: a new session on the same worker
    second.script({})
    assert second.execute(second.create_program(module="usermods.scripted_app:Configures"), note="c") == {"seen": None}
    first.close()
    second.close()


def test_no_run_of_this_module_wrote_a_dspy_cache_to_disk(scripted_pool: SyncPool, homes: dict[str, Path]) -> None:
    """From the outside, after every run above: the workers' HOME and DSPY_CACHEDIR are untouched."""
    assert "DSPY_CACHEDIR" in Bridge(scripted_pool).request("get_stats")["environ_names"]  # the pool set it
    assert list(homes["HOME"].iterdir()) == []
    assert not homes["DSPY_CACHEDIR"].exists()
