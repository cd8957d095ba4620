"""Message shapes, the error taxonomy and program ids: what both ends must agree on."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge._exceptions import HandlerError, MalformedFrame, ProtocolError
from dspy_bridge.protocol import (
    PROTOCOL_VERSION,
    ErrorInfo,
    ErrorType,
    Goodbye,
    Hello,
    Request,
    Response,
    canonical_program,
    normalize_signature,
    parse_request,
    parse_worker_message,
    program_id_for,
)
from dspy_bridge.protocol._programs import PROGRAM_TYPES, canonical_json
from dspy_bridge.protocol._taxonomy import RETRYABLE_BY_DEFAULT

SPEC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"

HELLO: dict[str, Any] = {
    "type": "hello",
    "protocol": "1.0",
    "worker_id": "w0",
    "pid": 123,
    "mode": "mock",
    "codec": "msgpack",
    "python_version": "3.11.7",
}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def _without(base: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k != key}


# --- Hello ----------------------------------------------------------------------------------------


def test_hello_defaults() -> None:
    hello = parse_worker_message(HELLO)
    assert isinstance(hello, Hello)
    assert hello.capabilities == [] and hello.dspy_version is None


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (_without(HELLO, "protocol"), "protocol"),
        (_without(HELLO, "worker_id"), "worker_id"),
        (_without(HELLO, "python_version"), "python_version"),
        (_with(HELLO, mode="fake"), "mode"),
        (_with(HELLO, codec="cbor"), "codec"),
        (_with(HELLO, pid="not a pid"), "pid"),
        (_with(HELLO, capabilities="ping"), "capabilities"),
    ],
)
def test_hello_rejects_wrong_shapes_naming_the_field(message: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedFrame, match=rf"hello frame has the wrong shape: {field}"):
        parse_worker_message(message)


def test_unknown_fields_are_kept_for_forward_compatibility() -> None:
    """A newer worker may add fields; an older host must still accept the frame."""
    hello = parse_worker_message(_with(HELLO, zygote=True))
    assert hello.model_extra == {"zygote": True}
    request = parse_request({"id": 1, "command": "ping", "deadline_ms": 5})
    assert request.model_extra == {"deadline_ms": 5}


def test_messages_are_frozen() -> None:
    hello = parse_worker_message(HELLO)
    with pytest.raises(ValueError):
        hello.pid = 1  # type: ignore[misc]


# --- Request --------------------------------------------------------------------------------------


def test_minimal_request_gets_defaults() -> None:
    request = parse_request({"id": 0, "command": "ping"})
    assert request == Request(id=0, command="ping")
    assert (request.type, request.args, request.session_id, request.context) == ("request", {}, None, {})


@pytest.mark.parametrize("request_id", [0, 1, 2**32, 2**63, 2**64 - 1])
def test_request_ids_span_uint64(request_id: int) -> None:
    assert parse_request({"id": request_id, "command": "ping"}).id == request_id


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"command": "ping"}, "id"),
        ({"id": -1, "command": "ping"}, "id"),
        ({"id": 2**64, "command": "ping"}, "id"),
        ({"id": 1.5, "command": "ping"}, "id"),
        ({"id": None, "command": "ping"}, "id"),
        ({"id": 1}, "command"),
        ({"id": 1, "command": ""}, "command"),
        ({"id": 1, "command": 7}, "command"),
        ({"id": 1, "command": "ping", "args": [1]}, "args"),
        ({"id": 1, "command": "ping", "args": None}, "args"),
        ({"id": 1, "command": "ping", "session_id": 3}, "session_id"),
        ({"id": 1, "command": "ping", "context": "x"}, "context"),
        ({"type": "response", "id": 1, "command": "ping"}, "type"),
    ],
)
def test_request_rejects_wrong_shapes_naming_the_field(message: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedFrame, match=rf"request frame has the wrong shape: {field}"):
        parse_request(message)


# --- Response, ErrorInfo, Goodbye -----------------------------------------------------------------


def test_ok_response() -> None:
    response = parse_worker_message({"type": "response", "id": 4, "ok": True, "result": {"x": [1]}})
    assert isinstance(response, Response)
    assert (response.id, response.ok, response.result, response.error, response.elapsed_ms) == (
        4,
        True,
        {"x": [1]},
        None,
        0.0,
    )


def test_error_response_parses_the_taxonomy_type() -> None:
    response = parse_worker_message(
        {"type": "response", "id": None, "ok": False, "error": {"type": "protocol_error", "message": "no id"}}
    )
    assert isinstance(response, Response)
    assert response.id is None
    assert response.error == ErrorInfo(type=ErrorType.PROTOCOL_ERROR, message="no id")
    assert response.error.type is ErrorType.PROTOCOL_ERROR
    assert response.error.retryable is False and response.error.details is None


def test_worker_message_type_defaults_to_response() -> None:
    assert isinstance(parse_worker_message({"id": 1, "ok": True}), Response)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ({"type": "response", "ok": True}, "response frame has the wrong shape: id"),
        ({"type": "response", "id": 1}, "response frame has the wrong shape: ok"),
        ({"type": "response", "id": -3, "ok": True}, "response frame has the wrong shape: id"),
        (
            {"type": "response", "id": 1, "ok": False, "error": {"type": "teapot", "message": "m"}},
            "error.type",
        ),
        ({"type": "response", "id": 1, "ok": False, "error": {"type": "internal"}}, "error.message"),
        ({"type": "response", "id": 1, "ok": False, "error": "boom"}, "error"),
        ({"type": "goodbye", "worker_id": "w0", "pid": 1}, "goodbye frame has the wrong shape: reason"),
        ({"type": "request", "id": 1, "command": "ping"}, "unknown type 'request'"),
        ({"type": "bogus"}, "unknown type 'bogus'"),
        ({"type": 3}, "unknown type 3"),
        ({"type": None}, "unknown type None"),
    ],
)
def test_worker_messages_reject_wrong_shapes(message: dict[str, Any], match: str) -> None:
    with pytest.raises(MalformedFrame, match=re.escape(match)):
        parse_worker_message(message)


def test_goodbye() -> None:
    goodbye = parse_worker_message({"type": "goodbye", "worker_id": "w0", "pid": 9, "reason": "eof"})
    assert goodbye == Goodbye(worker_id="w0", pid=9, reason="eof")


def test_shape_errors_are_protocol_errors() -> None:
    assert issubclass(MalformedFrame, ProtocolError)
    with pytest.raises(ProtocolError):
        parse_request({})


# --- error taxonomy -------------------------------------------------------------------------------

TAXONOMY = {
    "invalid_request",
    "unknown_command",
    "program_not_found",
    "lm_not_configured",
    "lm_auth",
    "lm_error",
    "lm_rate_limited",
    "lm_timeout",
    "adapter_parse_error",
    "cassette_miss",
    "protocol_error",
    "internal",
}


def test_error_type_values_are_the_documented_taxonomy() -> None:
    """Changing this set is a protocol change: hosts reject types they do not know."""
    assert {member.value for member in ErrorType} == TAXONOMY
    assert all(member == member.value and isinstance(member, str) for member in ErrorType)


def test_only_rate_limits_and_timeouts_are_retryable_by_default() -> None:
    assert {ErrorType.LM_RATE_LIMITED, ErrorType.LM_TIMEOUT} == RETRYABLE_BY_DEFAULT


def test_every_error_type_is_accepted_on_the_wire() -> None:
    for value in TAXONOMY:
        error = ErrorInfo.model_validate({"type": value, "message": "m"})
        assert error.type == value


def test_handler_error_carries_the_taxonomy_fields() -> None:
    error = HandlerError("slow down", type=ErrorType.LM_RATE_LIMITED, retryable=True, request_id=3)
    assert (error.type, error.retryable, error.request_id) == ("lm_rate_limited", True, 3)
    assert str(error).startswith("[lm_rate_limited] slow down")


def test_spec_documents_every_error_type_and_the_version() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    missing = sorted(value for value in TAXONOMY if f"`{value}`" not in spec)
    assert not missing, f"docs/protocol.md does not document {missing}"
    assert f'"{PROTOCOL_VERSION}"' in spec


# --- program ids ----------------------------------------------------------------------------------

_PROGRAM_ID = re.compile(r"^prog_[0-9a-f]{16}$")


@pytest.mark.parametrize(
    "signature",
    [
        "question -> answer",
        "question->answer",
        "  question   ->   answer  ",
        "question\t->\nanswer",
        "question ->answer",
    ],
)
def test_whitespace_in_string_signatures_does_not_change_the_id(signature: str) -> None:
    assert normalize_signature(signature) == "question -> answer"
    assert program_id_for({"signature": signature}) == program_id_for({"signature": "question -> answer"})


def test_commas_and_colons_are_normalised() -> None:
    assert normalize_signature("a,b ,  c->d,e") == "a, b, c -> d, e"
    assert normalize_signature("q : str,k:int -> a :list[str]") == "q: str, k: int -> a: list[str]"


def test_program_id_is_the_documented_hash() -> None:
    args = {"signature": "q -> a", "program_type": "chain_of_thought"}
    text = json.dumps(
        {"program_type": "chain_of_thought", "signature": "q -> a"}, sort_keys=True, separators=(",", ":")
    )
    assert canonical_json(canonical_program(args)) == text
    assert program_id_for(args) == "prog_" + hashlib.sha256(text.encode()).hexdigest()[:16]
    assert _PROGRAM_ID.match(program_id_for(args))


def test_program_id_is_deterministic_and_ignores_key_order() -> None:
    structured = {
        "inputs": [{"name": "q", "type": "str", "description": "the question"}],
        "outputs": [{"name": "a", "type": "int"}],
        "instructions": "Be brief.",
    }
    reordered = {
        "instructions": "  Be   brief. ",
        "outputs": [{"type": "int", "name": "a"}],
        "inputs": [{"description": "the question", "type": "str", "name": "q"}],
    }
    first = program_id_for({"signature": structured, "program_type": "predict"})
    assert first == program_id_for({"program_type": "predict", "signature": reordered})
    assert first == program_id_for({"signature": structured})  # predict is the default
    assert [program_id_for({"signature": structured}) for _ in range(3)] == [first] * 3


def test_program_id_ignores_args_outside_the_definition() -> None:
    base = program_id_for({"signature": "q -> a"})
    assert program_id_for({"signature": "q -> a", "lm": "x", "note": 1, "instructions": "   "}) == base


@pytest.mark.parametrize(
    "other",
    [
        {"signature": "q -> b"},
        {"signature": "q -> a: int"},
        {"signature": "q -> a", "program_type": "chain_of_thought"},
        {"signature": "q -> a", "instructions": "Answer in French."},
        {"signature": {"inputs": [{"name": "q"}], "outputs": [{"name": "a"}]}},
    ],
)
def test_different_definitions_get_different_ids(other: dict[str, Any]) -> None:
    assert program_id_for(other) != program_id_for({"signature": "q -> a"})


def test_field_order_in_structured_signatures_matters() -> None:
    one = {"inputs": [{"name": "a"}, {"name": "b"}], "outputs": [{"name": "c"}]}
    two = {"inputs": [{"name": "b"}, {"name": "a"}], "outputs": [{"name": "c"}]}
    assert program_id_for({"signature": one}) != program_id_for({"signature": two})


def test_explicit_id_wins_unless_empty_or_not_a_string() -> None:
    base = program_id_for({"signature": "q -> a"})
    assert program_id_for({"signature": "q -> a", "id": "mine"}) == "mine"
    assert program_id_for({"signature": "q -> b", "id": "mine"}) == "mine"
    assert program_id_for({"signature": "q -> a", "id": ""}) == base
    assert program_id_for({"signature": "q -> a", "id": 5}) == base


def test_program_types() -> None:
    assert PROGRAM_TYPES == ("predict", "chain_of_thought")
