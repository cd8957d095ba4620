"""Host and worker agree on what a valid message is (bugs found while writing the spec)."""

from __future__ import annotations

import pytest

from dspy_bridge._exceptions import MalformedFrame
from dspy_bridge.protocol import parse_request, parse_worker_message, program_id_for
from workerproc import WorkerProc


@pytest.mark.parametrize("bad_id", [True, "5", 5.0, -1])
def test_the_host_rejects_ids_the_worker_would_reject(bad_id: object) -> None:
    with pytest.raises(MalformedFrame, match="id"):
        parse_request({"id": bad_id, "command": "ping"})
    with pytest.raises(MalformedFrame, match="id"):
        parse_worker_message({"type": "response", "id": bad_id, "ok": True, "result": None})


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "response", "id": 1, "ok": False},
        {"type": "response", "id": 1, "ok": True, "error": {"type": "internal", "message": "x"}},
        {"type": "response", "id": 1, "ok": "yes", "result": 1},
    ],
)
def test_ok_and_error_must_agree(frame: dict[str, object]) -> None:
    with pytest.raises(MalformedFrame):
        parse_worker_message(frame)


def test_quoted_literal_choices_keep_their_spaces_in_program_ids() -> None:
    assert program_id_for({"signature": "q -> a: Literal['x,y']"}) != program_id_for(
        {"signature": "q -> a: Literal['x, y']"}
    )
    assert program_id_for({"signature": "q ->  a:int"}) == program_id_for({"signature": "q->a: int"})


def test_a_shutdown_with_an_invalid_id_is_refused_and_the_worker_stays() -> None:
    with WorkerProc("mock") as worker:
        worker.send_message({"id": -1, "command": "shutdown"})
        refused = worker.read()
        assert refused is not None and refused["ok"] is False and refused["error"]["type"] == "protocol_error"
        assert worker.call("ping")["status"] == "ok"


def test_a_frame_that_is_not_a_request_is_refused() -> None:
    with WorkerProc("mock") as worker:
        worker.send_message({"type": "hello", "id": 5, "command": "ping"})
        refused = worker.read()
        assert refused is not None and refused["id"] == 5 and refused["error"]["type"] == "invalid_request"
