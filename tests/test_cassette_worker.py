"""The mock worker, as a real subprocess, answering from cassette files over the wire protocol.

Order of answers: stubs → cassette → synthetic (opt-in) → cassette_miss. The last test records a
cassette from a real DSPy worker talking to the fake Gemini and replays it on a mock worker.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge.cassettes import Cassette, Recorder, verify
from dspy_bridge.cassettes._config import cassette_context
from dspy_bridge.protocol._programs import program_id_for
from dspy_bridge.testing import Fail, FakeGemini
from workerproc import WorkerProc

MODEL = "gemini/gemini-2.5-flash"
PREDICT = {"signature": "question -> answer"}
COT = {"signature": "question -> answer", "program_type": "chain_of_thought"}
TYPED = {"signature": "text -> sentiment: Literal['positive', 'negative'], score: float, tags: list[str], ok: bool"}
ANSWERS: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (PREDICT, {"question": "What is 2+2?"}, {"answer": "4"}),
    (COT, {"question": "What is 2+2?"}, {"reasoning": "Two and two.\nFour.", "answer": "4"}),
    (TYPED, {"text": "great"}, {"sentiment": "positive", "score": 0.5, "tags": ["x"], "ok": True}),
]


def _record(path: Path, exchanges: list[tuple[str, dict[str, Any], dict[str, Any]]], session: str = "rec") -> None:
    with Recorder(path, "once", meta={"recorded_against": "fake-gemini"}) as recorder:
        for command, args, response in exchanges:
            recorder.record({"command": command, "args": args, "session_id": session}, response)


def _ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


class Failed:
    """A recorded error answer (anything else given to ``_executes`` is a map of outputs)."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.response = {"ok": False, "error": error}


def _executes(*items: tuple[dict[str, Any], dict[str, Any], Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """configure_lm, then create_program + execute_program per item (outputs, or ``Failed``)."""
    exchanges: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        (
            "configure_lm",
            {"model": MODEL, "api_key": "k-" + secrets.token_hex(8)},
            _ok({"configured": {"model": MODEL}}),
        )
    ]
    for definition, inputs, answer in items:
        program_id = program_id_for(definition)
        exchanges.append(("create_program", definition, _ok({"program_id": program_id})))
        response = answer.response if isinstance(answer, Failed) else _ok({"outputs": answer, "usage": {}})
        exchanges.append(("execute_program", {"program_id": program_id, "inputs": inputs}, response))
    return exchanges


@pytest.fixture
def worker() -> Iterator[WorkerProc]:
    with WorkerProc("mock") as proc:
        yield proc


class Client:
    """One session on the mock worker, every request naming the cassette."""

    def __init__(self, worker: WorkerProc, path: Path, **cassette: Any) -> None:
        self.worker = worker
        self.session_id = "test-" + secrets.token_hex(4)
        self.context = {"test_id": "tests/test_x.py::test_y", "cassette": cassette_context(path, **cassette)}

    def call(self, command: str, args: dict[str, Any] | None = None) -> Any:
        return self.worker.call(command, args, session_id=self.session_id, context=self.context)

    def error(self, command: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.worker.error(command, args, session_id=self.session_id, context=self.context)

    def setup(self, *definitions: dict[str, Any]) -> list[str]:
        self.call("configure_lm", {"model": MODEL})
        return [self.call("create_program", definition)["program_id"] for definition in definitions]

    def execute(self, program_id: str, inputs: dict[str, Any]) -> Any:
        return self.call("execute_program", {"program_id": program_id, "inputs": inputs})

    def execute_error(self, program_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return self.error("execute_program", {"program_id": program_id, "inputs": inputs})


# --- answering from a cassette ------------------------------------------------------------------


def test_recorded_answers_come_back_identical(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _record(path, _executes(*ANSWERS))
    client = Client(worker, path)
    program_ids = client.setup(*(definition for definition, _, _ in ANSWERS))
    for program_id, (_, inputs, outputs) in zip(program_ids, ANSWERS, strict=True):
        result = client.execute(program_id, inputs)
        assert result["outputs"] == outputs
        assert list(result["outputs"]) == list(outputs)
        assert result["source"] == "cassette"


def test_recorded_errors_come_back_as_the_same_errors(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    error = {"type": "lm_rate_limited", "message": "quota", "retryable": True, "details": {"status": 429}}
    _record(path, _executes((PREDICT, {"question": "busy?"}, Failed(error))))
    client = Client(worker, path)
    [program_id] = client.setup(PREDICT)
    assert client.execute_error(program_id, {"question": "busy?"}) == error


def test_identical_requests_follow_recorded_order_and_repeats_are_opt_in(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _record(
        path,
        _executes((PREDICT, {"question": "roll"}, {"answer": "1"}), (PREDICT, {"question": "roll"}, {"answer": "2"})),
    )
    strict, lenient = Client(worker, path), Client(worker, path, allow_repeats=True)
    [program_id] = strict.setup(PREDICT)
    lenient.setup(PREDICT)
    assert [strict.execute(program_id, {"question": "roll"})["outputs"]["answer"] for _ in range(2)] == ["1", "2"]
    error = strict.execute_error(program_id, {"question": "roll"})
    assert error["type"] == "cassette_miss" and error["details"]["reason"] == "used_up"
    assert [lenient.execute(program_id, {"question": "roll"})["outputs"]["answer"] for _ in range(3)] == ["1", "2", "2"]


def test_sessions_have_separate_replay_states_and_cleanup_resets_one(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _record(path, _executes((PREDICT, {"question": "q"}, {"answer": "a"})))
    first, second = Client(worker, path), Client(worker, path)
    [program_id] = first.setup(PREDICT)
    second.setup(PREDICT)
    assert first.execute(program_id, {"question": "q"})["outputs"] == {"answer": "a"}
    assert second.execute(program_id, {"question": "q"})["outputs"] == {"answer": "a"}
    assert first.execute_error(program_id, {"question": "q"})["details"]["reason"] == "used_up"
    first.call("cleanup_session")
    first.setup(PREDICT)
    assert first.execute(program_id, {"question": "q"})["outputs"] == {"answer": "a"}


def test_a_changed_cassette_file_is_loaded_again(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _record(path, _executes((PREDICT, {"question": "q"}, {"answer": "old"})))
    client = Client(worker, path, allow_repeats=True)
    [program_id] = client.setup(PREDICT)
    assert client.execute(program_id, {"question": "q"})["outputs"] == {"answer": "old"}
    path.unlink()
    _record(path, _executes((PREDICT, {"question": "q"}, {"answer": "new"})))
    assert client.execute(program_id, {"question": "q"})["outputs"] == {"answer": "new"}


def test_the_report_lists_played_and_unused_interactions(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _record(
        path, _executes((PREDICT, {"question": "a"}, {"answer": "1"}), (PREDICT, {"question": "b"}, {"answer": "2"}))
    )
    client = Client(worker, path)
    [program_id] = client.setup(PREDICT)
    client.execute(program_id, {"question": "b"})
    report = client.call("cassette_report", {"path": str(path)})
    # configure, create (recorded once: the same program), execute a, execute b
    assert report == {"cassette": str(path), "exists": True, "interactions": 4, "played": [3], "unused": [2]}
    cassette = Cassette.load(path)
    assert cassette.prune(report["played"]) == 1
    assert [item.request["args"]["inputs"] for item in Cassette.load(path) if item.replayable] == [{"question": "b"}]


# --- the answer order and honest error paths ----------------------------------------------------


def test_stubs_win_over_the_cassette(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _record(path, _executes((PREDICT, {"question": "q"}, {"answer": "recorded"})))
    client = Client(worker, path)
    [program_id] = client.setup(PREDICT)
    client.call("stub_program", {"program_id": program_id, "outputs": {"answer": "stubbed"}})
    result = client.execute(program_id, {"question": "q"})
    assert result["outputs"] == {"answer": "stubbed"} and result["source"] == "stub"


def test_no_lm_configured_is_reported_before_the_cassette_is_asked(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _record(path, _executes((PREDICT, {"question": "q"}, {"answer": "a"})))
    client = Client(worker, path)
    program_id = client.call("create_program", PREDICT)["program_id"]
    assert client.execute_error(program_id, {"question": "q"})["type"] == "lm_not_configured"
    assert client.error("execute_program", {"program_id": "prog_nope", "inputs": {}})["type"] == "program_not_found"


def test_synthetic_answers_are_opt_in_and_come_after_the_cassette(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _record(
        path, _executes((TYPED, {"text": "recorded"}, {"sentiment": "negative", "score": 1.0, "tags": [], "ok": False}))
    )
    strict, synthetic = Client(worker, path), Client(worker, path, synthetic=True)
    [program_id] = strict.setup(TYPED)
    synthetic.setup(TYPED)
    assert strict.execute_error(program_id, {"text": "new"})["type"] == "cassette_miss"
    first = synthetic.execute(program_id, {"text": "new"})
    assert first["source"] == "synthetic"
    assert first["outputs"]["sentiment"] in ("positive", "negative") and type(first["outputs"]["score"]) is float
    assert synthetic.execute(program_id, {"text": "new"})["outputs"] == first["outputs"]  # deterministic
    assert synthetic.execute(program_id, {"text": "recorded"})["source"] == "cassette"


def test_synthetic_without_any_cassette(worker: WorkerProc) -> None:
    session = "syn-" + secrets.token_hex(4)
    context = {"cassette": {"synthetic": True}}
    worker.call("configure_lm", {"model": MODEL}, session_id=session)
    program_id = worker.call("create_program", COT, session_id=session)["program_id"]
    result = worker.call(
        "execute_program", {"program_id": program_id, "inputs": {"question": "q"}}, session_id=session, context=context
    )
    assert list(result["outputs"]) == ["reasoning", "answer"] and result["source"] == "synthetic"


# --- misses over the wire -----------------------------------------------------------------------


def test_a_miss_explains_itself_over_the_wire(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _record(path, _executes((PREDICT, {"question": "What is 2+3?"}, {"answer": "5"})))
    client = Client(worker, path)
    [program_id] = client.setup(PREDICT)
    error = client.execute_error(program_id, {"question": "What is 2+2?"})
    assert error["type"] == "cassette_miss" and error["retryable"] is False
    message = error["message"]
    assert str(path) in message
    assert 'DIFF  inputs.question: recorded "What is 2+3?" | requested "What is 2+2?"' in message
    assert "to record it: pytest tests/test_x.py::test_y --bridge-record=new_episodes" in message
    assert error["details"]["closest"]["index"] == 2
    assert error["details"]["record_hint"] == "pytest tests/test_x.py::test_y --bridge-record=new_episodes"


def test_the_record_hint_from_the_context_is_used_verbatim(worker: WorkerProc, tmp_path: Path) -> None:
    client = Client(worker, tmp_path / "absent.yaml", record_hint="make record TEST=y")
    [program_id] = client.setup(PREDICT)
    error = client.execute_error(program_id, {"question": "q"})
    assert error["details"]["reason"] == "no_file"
    assert "absent.yaml does not exist" in error["message"] and "make record TEST=y" in error["message"]


def test_a_corrupt_cassette_is_reported_with_its_position(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\nmeta: {created: x, dspy_bridge_version: y}\ninteractions: !!python/name:os.system\n")
    client = Client(worker, path)
    [program_id] = client.setup(PREDICT)
    error = client.execute_error(program_id, {"question": "q"})
    assert error["type"] == "cassette_miss" and error["details"]["reason"] == "corrupt"
    assert (error["details"]["line"], error["details"]["column"]) == (3, 15)
    assert "unsafe or unknown YAML tag" in error["message"]


def test_a_malformed_cassette_context_is_an_invalid_request(worker: WorkerProc, tmp_path: Path) -> None:
    client = Client(worker, tmp_path / "c.yaml")
    [program_id] = client.setup(PREDICT)
    client.context = {"cassette": {"path": str(tmp_path / "c.yaml"), "match_on": ["nonsense"]}}
    error = client.execute_error(program_id, {"question": "q"})
    assert error["type"] == "invalid_request" and "nonsense" in error["message"]


# --- start-up stays light -----------------------------------------------------------------------


def _imports_seen(worker: WorkerProc) -> str:
    worker.close()
    return worker.stderr_text(wait=True)


def test_hello_imports_no_pydantic_or_yaml_and_a_valid_cassette_never_imports_pydantic(tmp_path: Path) -> None:
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    with WorkerProc("mock", env=env) as plain:
        assert plain.call("ping")["status"] == "ok"
    startup = _imports_seen(plain)
    assert "dspy_bridge.worker._mock" in startup  # the import log is really there
    assert "pydantic" not in startup  # (YAML may be warming up on its thread after the Hello)

    path = tmp_path / "c.yaml"
    _record(path, _executes((PREDICT, {"question": "q"}, {"answer": "a"})))
    with WorkerProc("mock", env=env) as used:
        Client(used, path).setup(PREDICT)
        client = Client(used, path)
        [program_id] = client.setup(PREDICT)
        client.execute(program_id, {"question": "q"})
    later = _imports_seen(used)
    assert "dspy_bridge.cassettes" in later  # (lines of imports racing the warm-up thread may be missing)
    assert "pydantic" not in later  # only a cassette the hand check doubts asks the pydantic models
    assert re.search(r"\byaml\b", later) is None  # a file in the canonical layout is read with json


def test_replay_imports_warm_up_only_after_the_hello() -> None:
    code = """
import sys
from dspy_bridge.worker._main import build_handlers
handlers = build_handlers("mock", "w")
before = "yaml" in sys.modules or "dspy_bridge.cassettes" in sys.modules
handlers.after_hello()
import threading
for thread in threading.enumerate():
    if thread.name == "warm-imports":
        thread.join(60)
print(before, "dspy_bridge.cassettes._library" in sys.modules, "yaml" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True", "False"]  # canonical cassettes are read without PyYAML


# --- a real recording, replayed -----------------------------------------------------------------


@pytest.mark.slow
def test_a_cassette_recorded_from_a_real_dspy_worker_replays_on_a_mock_worker(tmp_path: Path) -> None:
    key = "AI" + "za" + secrets.token_hex(18)[:35]  # key-shaped on purpose: must be scrubbed
    path = tmp_path / "recorded.yaml"
    session = "real-" + secrets.token_hex(4)
    plan = [
        (PREDICT, {"question": "What is the capital of France?"}),
        (COT, {"question": "Why is the sky blue?"}),
        (TYPED, {"text": "I love it"}),
        (PREDICT, {"question": "What is the capital of France?"}),
    ]
    recorded: list[dict[str, Any]] = []
    cache = {"DSPY_CACHEDIR": str(tmp_path / "cache")}
    with FakeGemini(expected_key=key) as fake, WorkerProc("real", env=cache) as real:
        recorder = Recorder(path, "once", meta={"recorded_against": "fake-gemini"})

        def call(command: str, args: dict[str, Any]) -> dict[str, Any]:
            response = real.request(command, args, session_id=session)
            recorder.record({"command": command, "args": args, "session_id": session}, response)
            return response

        call(
            "configure_lm",
            {"model": MODEL, "api_key": key, "api_base": fake.base_url, "cache": False, "num_retries": 0},
        )
        for definition, inputs in plan:
            program_id = call("create_program", definition)["result"]["program_id"]
            response = call("execute_program", {"program_id": program_id, "inputs": inputs})
            assert response["ok"], response
            recorded.append(response["result"])
        fake.enqueue(Fail(429, retry_after=0))
        failed = call("execute_program", {"program_id": program_id_for(PREDICT), "inputs": {"question": "busy?"}})
        assert failed["ok"] is False and failed["error"]["type"] == "lm_rate_limited"
        recorder.save()
    assert key not in path.read_text()
    verify(path)
    assert Cassette.load(path).meta["recorded_against"] == "fake-gemini"

    with WorkerProc("mock") as mock:
        client = Client(mock, path)
        client.setup(PREDICT, COT, TYPED)
        for (definition, inputs), original in zip(plan, recorded, strict=True):
            replayed = client.execute(program_id_for(definition), inputs)
            assert replayed["outputs"] == original["outputs"]
            assert replayed["usage"] == original["usage"]
        error = client.execute_error(program_id_for(PREDICT), {"question": "busy?"})
        assert (error["type"], error["message"]) == (failed["error"]["type"], failed["error"]["message"])
    assert os.path.exists(path)


def test_pool_retries_marked_in_the_context_replay_the_recorded_error(worker: WorkerProc, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    busy = {"type": "lm_rate_limited", "message": "quota", "retryable": True, "details": None}
    _record(path, _executes((PREDICT, {"question": "q"}, Failed(busy)), (PREDICT, {"question": "q"}, {"answer": "a"})))
    client = Client(worker, path)
    [program_id] = client.setup(PREDICT)
    assert client.execute_error(program_id, {"question": "q"}) == busy
    client.context = {**client.context, "attempt": 1}
    assert client.execute_error(program_id, {"question": "q"}) == busy
    client.context = {key: value for key, value in client.context.items() if key != "attempt"}
    assert client.execute(program_id, {"question": "q"})["outputs"] == {"answer": "a"}


# --- through a pool of mock workers -------------------------------------------------------------


async def test_a_pool_of_mock_workers_replays_each_sessions_cassette_in_order(tmp_path: Path) -> None:
    from dspy_bridge.pool import Pool, PoolConfig

    path = tmp_path / "c.yaml"
    rolls = [(PREDICT, {"question": "roll"}, {"answer": str(n)}) for n in range(1, 5)]
    _record(path, _executes(*rolls))
    context = {"test_id": "t.py::t", "cassette": cassette_context(path)}
    async with Pool(PoolConfig(size=2, mode="mock", retries=0)) as pool:
        sessions = [f"pool-{i}-{secrets.token_hex(3)}" for i in range(4)]
        for session in sessions:
            await pool.request("configure_lm", {"model": MODEL}, session_id=session)
            await pool.create_program("question -> answer", session_id=session)
        program_id = program_id_for(PREDICT)
        for session in sessions:  # each session (one test) replays the whole sequence, wherever it is pinned
            answers = [
                (await pool.execute(program_id, {"question": "roll"}, session_id=session, context=context))["outputs"]
                for _ in range(4)
            ]
            assert answers == [{"answer": str(n)} for n in range(1, 5)]
        await pool.close_session(sessions[0])


def test_threads_sharing_a_session_each_get_the_recording_of_their_own_request(tmp_path: Path) -> None:
    """Matched by content (inputs, config incl. rollout_id), never by arrival order across threads."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from dspy_bridge.pool import PoolConfig, SyncPool

    path = tmp_path / "threads.yaml"
    program_id = program_id_for(PREDICT)
    exchanges = _executes()
    exchanges.append(("create_program", PREDICT, _ok({"program_id": program_id})))
    calls = [({"question": "roll"}, {"rollout_id": n}) for n in range(12)]
    calls += [({"question": f"q{n}"}, {}) for n in range(12)]
    for inputs, config in calls:
        args: dict[str, Any] = {"program_id": program_id, "inputs": inputs, **({"config": config} if config else {})}
        answer = f"{inputs['question']}/{config.get('rollout_id', '-')}"
        exchanges.append(("execute_program", args, _ok({"outputs": {"answer": answer}, "usage": {}})))
    _record(path, exchanges)
    context = {"test_id": "t.py::t", "cassette": cassette_context(path)}
    shuffled = random.Random(7).sample(calls, len(calls))
    with SyncPool(PoolConfig(size=1, mode="mock", retries=0)) as pool:
        session = "threads-" + secrets.token_hex(3)
        pool.request("configure_lm", {"model": MODEL}, session_id=session)
        pool.create_program("question -> answer", session_id=session)

        def ask(call: tuple[dict[str, Any], dict[str, Any]]) -> str:
            inputs, config = call
            options = {"config": config} if config else {}
            result = pool.execute(program_id, inputs, session_id=session, context=context, **options)
            return str(result["outputs"]["answer"])

        with ThreadPoolExecutor(max_workers=8) as threads:
            answers = list(threads.map(ask, shuffled))
    assert answers == [f"{inputs['question']}/{config.get('rollout_id', '-')}" for inputs, config in shuffled]
