"""A worker never dies of a request it can delimit, and no error reply or log line quotes more than a few KB.

Regression tests for what an attack found: a huge undecodable frame (the reply quoted the whole payload and
outgrew the frame limit), a lone surrogate or deep nesting with the JSON codec (the reply could not be
encoded), NaN in JSON, msgpack extension types echoed back, and a list ``session_id`` in ``cleanup_session``.
"""

from __future__ import annotations

import json
import struct

import msgpack
import pytest

from workerproc import WorkerProc

REPLY_LIMIT = 64 * 1024  # generous: "a few KB" of quoted input plus the envelope


def _alive(worker: WorkerProc) -> None:
    assert worker.call("ping")["status"] == "ok"


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_a_huge_undecodable_frame_gets_a_small_reply_and_the_worker_lives(codec: str) -> None:
    with WorkerProc("mock", codec) as worker:
        payload = b"\xc1" + b"A" * (16 * 1024 * 1024)  # 0xc1 is never valid msgpack; not JSON either
        worker.send_raw(struct.pack(">I", len(payload)) + payload)
        reply = worker.read()
        assert reply is not None and reply["id"] is None and reply["error"]["type"] == "protocol_error"
        assert len(worker.codec.dumps(reply)) < REPLY_LIMIT
        _alive(worker)
        assert len(worker.stderr_text()) < REPLY_LIMIT


def _send_json_text(worker: WorkerProc, text: str) -> dict:
    worker.send_raw(struct.pack(">I", len(text.encode())) + text.encode())
    reply = worker.read()
    assert reply is not None, worker.stderr_text()
    return reply


@pytest.mark.parametrize(
    "request_text",
    [
        '{"id":7,"command":"cleanup_session","session_id":"\\ud800"}',
        '{"id":7,"command":"configure_lm","args":{"model":"gemini/\\ud800"},"session_id":"s"}',
        '{"id":7,"command":"create_program","args":{"signature":"q -> a","demos":[{"q":%s,"a":"x"}]}}'
        % ("[" * 985 + "]" * 985),
        '{"id":7,"command":"configure_lm","args":{"model":"gemini/x","temperature":NaN}}',
        '{"id":7,"command":"configure_lm","args":{"model":"gemini/x","temperature":Infinity}}',
    ],
    ids=["surrogate-session", "surrogate-model", "deep-array", "nan", "infinity"],
)
def test_json_worker_answers_what_it_cannot_echo(request_text: str) -> None:
    with WorkerProc("mock", "json") as worker:
        reply = _send_json_text(worker, request_text)
        assert reply["id"] == 7
        raw = json.dumps(reply)
        assert "NaN" not in raw and "Infinity" not in raw  # the spec forbids them on the wire
        _alive(worker)


def test_msgpack_extension_types_are_refused_not_echoed() -> None:
    with WorkerProc("mock", "msgpack") as worker:
        for ext in (msgpack.ExtType(5, b"xyz"), msgpack.Timestamp(1, 0)):
            payload = msgpack.packb({"id": 3, "command": "ping", "args": {"x": ext}}, use_bin_type=True)
            worker.send_raw(struct.pack(">I", len(payload)) + payload)
            reply = worker.read()
            assert reply is not None and reply["ok"] is False and reply["error"]["type"] == "protocol_error"
        _alive(worker)


def test_cleanup_session_with_a_list_is_an_invalid_request() -> None:
    with WorkerProc("mock") as worker:
        error = worker.error("cleanup_session", {"session_id": ["a"]})
        assert error["type"] == "invalid_request"
        _alive(worker)


def test_a_huge_bad_id_is_quoted_briefly() -> None:
    with WorkerProc("mock") as worker:
        payload = msgpack.packb({"id": "x" * (8 * 1024 * 1024), "command": "ping"}, use_bin_type=True)
        worker.send_raw(struct.pack(">I", len(payload)) + payload)
        reply = worker.read()
        assert reply is not None and reply["error"]["type"] == "protocol_error"
        assert len(worker.codec.dumps(reply)) < REPLY_LIMIT
        _alive(worker)


@pytest.mark.parametrize("path", ["/etc/hostname/below-a-file.yaml", "a\x00b.yaml", "x" * 5000 + ".yaml", "/"])
def test_cassette_file_name_problems_are_invalid_requests(path: str) -> None:
    """Regression: a cassette path that cannot be used came back as ``internal`` with a traceback."""
    with WorkerProc("mock") as worker:
        worker.call("configure_lm", {"model": "gemini/gemini-2.5-flash"})
        program = worker.call("create_program", {"signature": "question -> answer"})["program_id"]
        error = worker.error(
            "execute_program",
            {"program_id": program, "inputs": {"question": "q"}},
            context={"cassette": {"path": path}},
        )
        assert error["type"] == "invalid_request", error
        error = worker.error("cassette_report", {"path": path})
        assert error["type"] == "invalid_request", error
        _alive(worker)
