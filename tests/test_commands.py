"""The command layer: one set of argument builders and one stub table behind Pool, SyncPool, Bridge
and the mock worker. The host-side stubs (a Bridge recording on real workers) and the worker-side
ones (a mock worker) must give the same answers to the same test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dspy_bridge import Bridge, HandlerError, UsageError
from dspy_bridge.pool import PoolConfig, SyncPool
from dspy_bridge.protocol import _commands as commands

SIGNATURE = "question, context -> answer"


@pytest.fixture(scope="module")
def pool() -> Iterator[SyncPool]:
    with SyncPool(PoolConfig(size=1, mode="mock", start_strategy="spawn")) as sync_pool:
        yield sync_pool


def _stubbed_answers(bridge: Bridge) -> list[Any]:
    """One script of stubs and questions; returns what each question got (an answer or an error)."""
    bridge.configure_lm("gemini/gemini-2.5-flash")
    program = bridge.create_program(SIGNATURE)
    bridge.stub(program, {"answer": "any"})
    bridge.stub(program, {"answer": "4"}, inputs={"question": "2+2", "context": {"b": 1, "a": 2}})
    bridge.stub(
        program,
        error={"type": "lm_rate_limited", "message": "slow down", "retryable": True},
        inputs={"question": "busy?", "context": {}},
    )
    seen: list[Any] = []
    for inputs in (
        {"question": "2+2", "context": {"a": 2, "b": 1}},  # same inputs, keys in another order
        {"question": "something else", "context": {}},
        {"question": "busy?", "context": {}},
    ):
        try:
            seen.append(bridge.execute(program, **inputs))
        except HandlerError as exc:
            seen.append((exc.type, exc.message, exc.retryable))
    return seen


def test_host_side_stubs_answer_exactly_like_the_mock_workers_stubs(pool: SyncPool) -> None:
    # Before the shared table, host_stubs=True raised KeyError('outputs') on an error stub, and matched
    # inputs with == while the worker compared canonical JSON.
    on_worker = _stubbed_answers(Bridge(pool))
    on_host = _stubbed_answers(Bridge(pool, host_stubs=True))
    assert (
        on_worker
        == on_host
        == [
            {"answer": "4"},
            {"answer": "any"},
            ("lm_rate_limited", "slow down", True),
        ]
    )


def test_a_host_stub_never_reaches_the_worker(pool: SyncPool) -> None:
    bridge = Bridge(pool, host_stubs=True)
    bridge.configure_lm("gemini/gemini-2.5-flash")
    program = bridge.create_program(SIGNATURE)
    bridge.stub(program, {"answer": "from the host"})
    assert bridge.execute(program, question="q", context="c") == {"answer": "from the host"}
    assert bridge.outcomes["stub"] == 1
    # The worker itself has no stub for this session: asked directly, it misses.
    with pytest.raises(HandlerError) as miss:
        pool.execute(program, {"question": "q", "context": "c"}, session_id=bridge.session_id)
    assert miss.value.type == "cassette_miss"


@pytest.mark.parametrize(
    ("outputs", "error", "words"),
    [
        (None, None, "exactly one of 'outputs'"),
        ({"answer": "x"}, {"type": "lm_error"}, "exactly one of 'outputs'"),
        ("just text", None, "'outputs' must be a map"),
        (None, {"type": "no_such_type"}, "'error.type' must be one of"),
    ],
)
def test_bad_stubs_are_refused_the_same_way_on_every_face(pool: SyncPool, outputs: Any, error: Any, words: str) -> None:
    with pytest.raises(commands.CommandError, match=words):
        commands.stub_args("prog_x", outputs, error=error)
    for face in (Bridge(pool), Bridge(pool, host_stubs=True)):
        with pytest.raises(UsageError, match=words):
            face.stub("prog_x", outputs, error=error)
    with pytest.raises(UsageError, match=words):
        pool.stub("prog_x", outputs, error=error, session_id="bad-stubs")
    # A raw request that skips the builders gets the same rule from the mock worker.
    raw: dict[str, Any] = {"program_id": "prog_x"}
    if outputs is not None:
        raw["outputs"] = outputs
    if error is not None:
        raw["error"] = error
    with pytest.raises(HandlerError, match=words) as refused:
        pool.request("stub_program", raw, session_id="bad-stubs")
    assert refused.value.type == "invalid_request"


def test_one_name_for_each_argument_on_every_face(pool: SyncPool) -> None:
    bridge = Bridge(pool)
    assert bridge.create_program(SIGNATURE, program_id="my-program") == "my-program"
    assert pool.create_program(SIGNATURE, program_id="my-program", session_id="names") == "my-program"
    with pytest.warns(DeprecationWarning, match="program_id="):
        assert bridge.create_program(SIGNATURE, id="old-name") == "old-name"
    with pytest.warns(DeprecationWarning, match=r"use SyncPool.stub\(\)"):
        pool.stub_program("my-program", {"answer": "a"}, session_id="names")
    bridge.delete_program("my-program")
    assert "my-program" not in bridge.request("list_programs")["programs"]


def test_builders_refuse_what_no_worker_could_accept() -> None:
    with pytest.raises(commands.CommandError, match="model name"):
        commands.configure_lm_args("")
    with pytest.raises(commands.CommandError, match="'inputs' as a map"):
        commands.execute_args("prog_x", ["not", "a", "map"])  # type: ignore[arg-type]
    with pytest.raises(commands.CommandError, match="signature string or map"):
        commands.create_program_args(42)  # type: ignore[arg-type]
    # None settings mean "not given"; the key is kept only when given.
    assert commands.configure_lm_args("m", temperature=None, api_key=None) == {"model": "m"}


def test_stub_table_matches_canonical_inputs_newest_first_and_forgets_by_session() -> None:
    table = commands.StubTable()
    table.add("s", {"program_id": "p", "outputs": {"a": 1}})
    table.add("s", {"program_id": "p", "outputs": {"a": 2}, "inputs": {"x": [1, 2], "y": "z"}})
    table.add("t", {"program_id": "p", "outputs": {"a": 3}})
    assert table.answer("s", "p", {"y": "z", "x": [1, 2]}) == {"outputs": {"a": 2}}
    assert table.answer("s", "p", {"x": [2, 1], "y": "z"}) == {"outputs": {"a": 1}}
    assert table.answer("u", "p", {}) is None
    table.forget("s")
    assert table.answer("s", "p", {}) is None and table.answer("t", "p", {}) == {"outputs": {"a": 3}}
    table.forget(everything=True)
    assert len(table) == 0


@pytest.mark.slow
def test_a_host_side_stub_gets_the_same_schema_check_as_on_a_mock_worker() -> None:
    """While recording on real workers, stubs are answered by the Bridge: an impossible one is refused there too."""
    from dspy_bridge.testing import FakeGemini

    with FakeGemini() as gemini, SyncPool(PoolConfig(size=1, mode="real", start_strategy="spawn")) as real:
        bridge = Bridge(real, host_stubs=True)
        bridge.configure_lm("gemini/gemini-2.5-flash", api_base=gemini.base_url, api_key="k" * 12, cache=False)
        program = bridge.create_program("text -> sentiment: Literal['positive', 'negative'], score: float")
        bridge.stub(program, {"sentiment": "surprised", "score": 0.5})
        with pytest.raises(HandlerError) as refused:
            bridge.execute(program, text="hm")
        assert refused.value.type == "invalid_request" and "sentiment" in refused.value.message
        bridge.stub(program, {"sentiment": "negative", "score": 0.5})
        assert bridge.execute(program, text="hm") == {"sentiment": "negative", "score": 0.5}
        assert gemini.request_count == 0  # both answered on the host
