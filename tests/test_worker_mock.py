"""The mock worker as a real subprocess: protocol, sessions, stubs, hostile input, lifecycle.

Every test starts its own ``--mode mock`` worker the way the pool does (``python -S -c``), which
costs tens of milliseconds; nothing here needs DSPy or a network.
"""

from __future__ import annotations

import signal
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from dspy_bridge.protocol._programs import program_id_for
from workerproc import WorkerProc

# Poisoned modules: if the mock worker imported any of these, the import would raise.
NO_HEAVY_IMPORTS = "import sys\nfor _name in ('dspy', 'litellm', 'pydantic'):\n    sys.modules[_name] = None"


@pytest.fixture
def worker() -> Iterator[WorkerProc]:
    with WorkerProc("mock") as proc:
        yield proc


def _program(worker: WorkerProc, signature: str = "question -> answer", session_id: str | None = None) -> str:
    program_id = worker.call("create_program", {"signature": signature}, session_id=session_id)["program_id"]
    assert isinstance(program_id, str)
    return program_id


# --- hello, ping, stats ------------------------------------------------------------------------


def test_hello_describes_a_mock_worker_without_dspy(worker: WorkerProc) -> None:
    hello = worker.hello
    assert hello["mode"] == "mock"
    assert hello["dspy_version"] is None
    assert hello["protocol"] == "1.0"
    assert hello["worker_id"] == "test-worker"
    assert hello["pid"] == worker.proc.pid
    assert hello["codec"] == "msgpack"
    assert {"stub_program", "execute_program", "configure_lm", "shutdown"} <= set(hello["capabilities"])


def test_ping_and_stats_count_requests(worker: WorkerProc) -> None:
    pong = worker.call("ping")
    assert pong["status"] == "ok" and pong["mode"] == "mock" and pong["pid"] == worker.proc.pid
    assert pong["versions"]["dspy"] is None
    worker.error("no_such_command")
    stats = worker.call("get_stats")
    assert stats["mode"] == "mock"
    assert stats["requests_served"] == 3  # ping, the unknown command, get_stats itself
    assert stats["errors"] == 1


def test_mock_worker_runs_with_dspy_litellm_and_pydantic_unimportable() -> None:
    with WorkerProc("mock", prelude=NO_HEAVY_IMPORTS) as worker:
        assert worker.hello["dspy_version"] is None
        worker.call("configure_lm", {"model": "gemini/gemini-2.5-flash", "api_key": "not-a-real-key"})
        program_id = _program(worker)
        worker.call("stub_program", {"program_id": program_id, "outputs": {"answer": "stubbed"}})
        result = worker.call("execute_program", {"program_id": program_id, "inputs": {"question": "q"}})
        assert result["outputs"] == {"answer": "stubbed"}
        assert worker.error("execute_program", {"program_id": "prog_missing"})["type"] == "program_not_found"
        assert worker.call("get_stats")["programs"] == 1


# --- the command set ---------------------------------------------------------------------------


def test_configure_create_execute_without_an_answer_is_a_helpful_cassette_miss(worker: WorkerProc) -> None:
    configured = worker.call("configure_lm", {"model": "gemini/gemini-2.5-flash", "api_key": "secret-value-123"})
    assert "api_key" not in configured["configured"]
    assert "secret-value-123" not in repr(configured)
    program_id = _program(worker)
    error = worker.error("execute_program", {"program_id": program_id, "inputs": {"question": "What is 2+2?"}})
    assert error["type"] == "cassette_miss"
    assert error["retryable"] is False
    assert program_id in error["message"]
    assert "What is 2+2?" in error["message"]
    assert "stub" in error["message"] and "cassette" in error["message"]


def test_create_program_ids_are_deterministic_and_whitespace_blind(worker: WorkerProc) -> None:
    first = worker.call("create_program", {"signature": "question -> answer: int"})
    again = worker.call("create_program", {"signature": "  question  ->answer:   int "})
    assert first["program_id"] == again["program_id"] == program_id_for({"signature": "question -> answer: int"})
    assert first["inputs"] == ["question"] and first["outputs"] == ["answer"]
    other = worker.call("create_program", {"signature": "question -> answer: int", "program_type": "chain_of_thought"})
    assert other["program_id"] != first["program_id"]


def test_stubs_answer_by_inputs_then_any_and_can_fail(worker: WorkerProc) -> None:
    worker.call("configure_lm", {"model": "gemini/gemini-2.5-flash"})
    program_id = _program(worker)
    worker.call("stub_program", {"program_id": program_id, "outputs": {"answer": "anything"}})
    worker.call("stub_program", {"program_id": program_id, "inputs": {"question": "2+2"}, "outputs": {"answer": "4"}})

    def ask(question: str) -> object:
        result = worker.call("execute_program", {"program_id": program_id, "inputs": {"question": question}})
        assert result["source"] == "stub"
        return result["outputs"]["answer"]

    assert ask("2+2") == "4"
    assert ask("something else") == "anything"

    worker.call(
        "stub_program",
        {
            "program_id": program_id,
            "inputs": {"question": "busy?"},
            "error": {"type": "lm_rate_limited", "message": "slow down", "retryable": True},
        },
    )
    error = worker.error("execute_program", {"program_id": program_id, "inputs": {"question": "busy?"}})
    assert error == {"type": "lm_rate_limited", "message": "slow down", "retryable": True, "details": None}


def test_stubs_and_programs_belong_to_their_session(worker: WorkerProc) -> None:
    worker.call("configure_lm", {"model": "gemini/gemini-2.5-flash"})  # worker-wide default LM
    program_a = _program(worker, session_id="A")
    worker.call("stub_program", {"program_id": program_a, "outputs": {"answer": "from A"}}, session_id="A")
    assert worker.call("list_programs", session_id="A")["programs"] == [program_a]
    assert worker.call("list_programs", session_id="B")["programs"] == []
    error = worker.error("execute_program", {"program_id": program_a, "inputs": {"question": "q"}}, session_id="B")
    assert error["type"] == "program_not_found"
    assert "session 'B'" in error["message"]
    # The same program created in B exists there, but A's stub does not answer for it.
    _program(worker, session_id="B")
    error = worker.error("execute_program", {"program_id": program_a, "inputs": {"question": "q"}}, session_id="B")
    assert error["type"] == "cassette_miss"
    answer = worker.call("execute_program", {"program_id": program_a, "inputs": {"question": "q"}}, session_id="A")
    assert answer["outputs"] == {"answer": "from A"}


def test_program_not_found_names_the_program_and_the_known_ones(worker: WorkerProc) -> None:
    known = _program(worker)
    error = worker.error("execute_program", {"program_id": "prog_0000000000000000", "inputs": {}})
    assert error["type"] == "program_not_found"
    assert "prog_0000000000000000" in error["message"] and known in error["message"]
    assert error["retryable"] is False


def test_execute_before_configure_lm_is_lm_not_configured(worker: WorkerProc) -> None:
    program_id = _program(worker, session_id="s1")
    worker.call("stub_program", {"program_id": program_id, "outputs": {"answer": "x"}}, session_id="s1")
    error = worker.error("execute_program", {"program_id": program_id, "inputs": {"question": "q"}}, session_id="s1")
    assert error["type"] == "lm_not_configured"
    assert "configure_lm" in error["message"]
    # A session LM fixes it; so would a worker-wide default.
    worker.call("configure_lm", {"model": "gemini/gemini-2.5-flash"}, session_id="s1")
    worker.call("execute_program", {"program_id": program_id, "inputs": {"question": "q"}}, session_id="s1")


def test_bad_arguments_are_invalid_requests(worker: WorkerProc) -> None:
    assert worker.error("configure_lm", {"model": "no-provider-prefix"})["type"] == "invalid_request"
    assert worker.error("configure_lm", {"model": "gemini/x", "temperature": "hot"})["type"] == "invalid_request"
    assert worker.error("create_program", {"signature": "no arrow"})["type"] == "invalid_request"
    assert worker.error("create_program", {"signature": "q -> a: complex"})["type"] == "invalid_request"
    program_id = _program(worker)
    error = worker.error("execute_program", {"program_id": program_id, "inputs": {"wrong": 1}})
    assert error["type"] == "invalid_request"
    assert error["details"] == {"missing": ["question"], "unknown": ["wrong"]}


def test_unknown_command_keeps_the_worker_alive(worker: WorkerProc) -> None:
    error = worker.error("make_coffee")
    assert error["type"] == "unknown_command"
    assert "ping" in error["message"]  # lists what is known
    assert worker.call("ping")["status"] == "ok"


# --- hostile input -----------------------------------------------------------------------------


def test_request_without_id_is_a_protocol_error_and_the_worker_lives_on(worker: WorkerProc) -> None:
    worker.send_message({"type": "request", "command": "ping"})
    response = worker.read()
    assert response is not None
    assert response["id"] is None and response["ok"] is False
    assert response["error"]["type"] == "protocol_error"
    assert "id" in response["error"]["message"]
    assert worker.call("ping")["status"] == "ok"


def test_undecodable_payload_is_a_protocol_error_and_the_worker_lives_on(worker: WorkerProc) -> None:
    worker.send_raw(struct.pack(">I", 3) + b"\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
    response = worker.read()
    assert response is not None and response["ok"] is False
    assert response["error"]["type"] == "protocol_error"
    assert "msgpack" in response["error"]["message"]
    worker.send_raw(struct.pack(">I", 1) + b"\x01")  # valid msgpack, but not a map
    response = worker.read()
    assert response is not None and response["error"]["type"] == "protocol_error"
    assert worker.call("ping")["status"] == "ok"


def test_oversized_length_prefix_is_answered_then_the_worker_stops(worker: WorkerProc) -> None:
    worker.send_raw(struct.pack(">I", 2**31))
    response = worker.read()
    assert response is not None and response["error"]["type"] == "protocol_error"
    assert "maximum" in response["error"]["message"]
    goodbye = worker.read()
    assert goodbye is not None and goodbye["type"] == "goodbye" and goodbye["reason"] == "protocol_error"
    assert worker.read() is None
    assert worker.wait() == 1  # framing was lost: not a clean exit, but an orderly one


def test_truncated_frame_then_eof_exits_without_hanging(worker: WorkerProc) -> None:
    assert worker.call("ping")["status"] == "ok"
    worker.send_raw(struct.pack(">I", 100) + b"only ten b")
    worker.close_stdin()
    response = worker.read()
    assert response is not None and response["error"]["type"] == "protocol_error"
    assert "10 of 100" in response["error"]["message"]
    goodbye = worker.read()
    assert goodbye is not None and goodbye["type"] == "goodbye"
    assert worker.read() is None
    assert worker.wait() == 1


# --- codecs, concurrency, lifecycle ------------------------------------------------------------


def test_json_codec_carries_the_same_conversation() -> None:
    with WorkerProc("mock", codec="json") as worker:
        assert worker.hello["codec"] == "json"
        worker.call("configure_lm", {"model": "gemini/gemini-2.5-flash"})
        program_id = _program(worker, "text -> label, score: float")
        worker.call("stub_program", {"program_id": program_id, "outputs": {"label": "ünïcode ✓", "score": 0.5}})
        result = worker.call("execute_program", {"program_id": program_id, "inputs": {"text": "t"}})
        assert result["outputs"] == {"label": "ünïcode ✓", "score": 0.5}
        worker.send_raw(struct.pack(">I", 5) + b"{nope")
        response = worker.read()
        assert response is not None and response["error"]["type"] == "protocol_error"
        assert "json" in response["error"]["message"]


def test_max_concurrency_answers_pipelined_requests_by_id() -> None:
    with WorkerProc("mock", max_concurrency=4) as worker:
        worker.call("configure_lm", {"model": "gemini/gemini-2.5-flash"})
        program_id = _program(worker, "n -> double: int")
        for n in range(20):
            worker.call("stub_program", {"program_id": program_id, "inputs": {"n": n}, "outputs": {"double": 2 * n}})
        sent = {
            worker.send("execute_program", {"program_id": program_id, "inputs": {"n": n}}): n for n in range(40, 0, -1)
        }
        answers: dict[int, dict[str, Any]] = {}
        for _ in sent:
            response = worker.read()
            assert response is not None and response["type"] == "response"
            answers[response["id"]] = response
        assert set(answers) == set(sent)  # every request answered exactly once, matched by id
        for request_id, n in sent.items():
            response = answers[request_id]
            if n < 20:
                assert response["ok"] is True and response["result"]["outputs"] == {"double": 2 * n}
            else:
                assert response["ok"] is False and response["error"]["type"] == "cassette_miss"
        assert worker.call("get_stats")["requests_served"] == 1 + 1 + 20 + 40 + 1


def test_shutdown_answers_then_says_goodbye(worker: WorkerProc) -> None:
    assert worker.call("shutdown") == {"shutting_down": True}
    goodbye = worker.read()
    assert goodbye is not None and goodbye["type"] == "goodbye" and goodbye["reason"] == "shutdown"
    assert worker.wait() == 0


def test_eof_says_goodbye_and_exits_zero(worker: WorkerProc) -> None:
    worker.close_stdin()
    goodbye = worker.read()
    assert goodbye == {"type": "goodbye", "worker_id": "test-worker", "pid": worker.proc.pid, "reason": "eof"}
    assert worker.read() is None
    assert worker.wait() == 0


def test_sigterm_says_goodbye_and_exits_zero(worker: WorkerProc) -> None:
    assert worker.call("ping")["status"] == "ok"  # the handler is installed before hello; be past it
    worker.signal(signal.SIGTERM)
    goodbye = worker.read_until_goodbye()
    assert goodbye["reason"] == "sigterm"
    assert worker.wait() == 0


def test_slow_start_form_speaks_the_same_protocol() -> None:
    with WorkerProc("mock", fast=False) as worker:
        assert worker.hello["mode"] == "mock"
        assert worker.call("ping")["status"] == "ok"
