"""Regenerate the protocol test vectors: ``python tests/vectors/generate.py [--check]``.

The vectors are committed, and the tests hold the protocol code to them in both directions. This
script deliberately builds the bytes with the reference libraries (``struct``, ``msgpack.packb``,
``json.dumps``) rather than with ``dspy_bridge.protocol``, so the tests compare our codec against
an independent encoding. Only the program-id vectors call ``program_id_for`` (its hashing rule is
restated here in plain ``hashlib``/``json`` and the two must agree). ``--check`` exits non-zero if
the committed files differ from what this script would write.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent
PROTOCOL_VERSION = "1.0"
MAX_FRAME_SIZE = 64 * 1024 * 1024
UINT64_MAX = 2**64 - 1

H2W = "host_to_worker"
W2H = "worker_to_host"

KEY_ORDER_NOTE = (
    "Each message object lists its keys in the order they are encoded on the wire. Key order "
    "carries no meaning in the protocol and decoders must not depend on it, but byte-exact "
    "comparison of an encoding only holds for this key order and these encoder settings."
)

ENCODERS = {
    "msgpack": {
        "settings": (
            "msgpack-python packb(message, use_bin_type=True): str as msgpack str, bytes as bin, "
            "the smallest int/str/map/array encodings, every float as float64 (0xcb)"
        ),
        "dumps": lambda message: msgpack.packb(message, use_bin_type=True),
    },
    "json": {
        "settings": (
            "json.dumps(message, separators=(',', ':'), ensure_ascii=False) encoded as UTF-8: "
            "no whitespace, non-ASCII characters as raw UTF-8, floats as Python repr"
        ),
        "dumps": lambda message: json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode(),
    },
}


def _frame(payload: bytes) -> str:
    return (struct.pack(">I", len(payload)) + payload).hex()


def _hello(codec: str, mode: str, dspy_version: str | None) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "worker_id": "w0",
        "pid": 4242,
        "mode": mode,
        "codec": codec,
        "capabilities": ["ping", "configure_lm", "create_program", "execute_program", "shutdown"],
        "python_version": "3.11.7",
        "dspy_version": dspy_version,
    }


def _valid_messages(codec: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(name, direction, description, message) for every valid vector."""
    return [
        ("hello_real", W2H, "first frame of a real worker, pushed unasked", _hello(codec, "real", "3.4.1")),
        (
            "hello_mock",
            W2H,
            "first frame of a mock worker (no DSPy loaded: dspy_version nil)",
            _hello(codec, "mock", None),
        ),
        (
            "request_minimal",
            H2W,
            "smallest valid request: no type, args, session_id or context (they default)",
            {"id": 0, "command": "ping"},
        ),
        (
            "request_without_session",
            H2W,
            "full request outside any session",
            {
                "type": "request",
                "id": 1,
                "command": "create_program",
                "args": {"signature": "question -> answer", "program_type": "predict"},
                "session_id": None,
                "context": {},
            },
        ),
        (
            "request_with_session",
            H2W,
            "request in a session, with non-ASCII text and a float in context",
            {
                "type": "request",
                "id": 2,
                "command": "execute_program",
                "args": {"program_id": "prog_9eb923eef4e4a86f", "inputs": {"question": "¿Cuánto es 2+2? ✓"}},
                "session_id": "tests/test_math.py::test_add",
                "context": {"attempt": 1, "deadline_s": 30.5},
            },
        ),
        (
            "request_max_id",
            H2W,
            "the largest id (2**64-1): msgpack uint64 (0xcf), a bare integer in JSON",
            {
                "type": "request",
                "id": UINT64_MAX,
                "command": "ping",
                "args": {},
                "session_id": None,
                "context": {},
            },
        ),
        (
            "response_ok",
            W2H,
            "success: result present, no error key",
            {
                "type": "response",
                "id": 1,
                "ok": True,
                "result": {"program_id": "prog_9eb923eef4e4a86f"},
                "elapsed_ms": 1.5,
            },
        ),
        (
            "response_ok_execute",
            W2H,
            "success of execute_program: outputs, usage and elapsed_ms in the result",
            {
                "type": "response",
                "id": 2,
                "ok": True,
                "result": {
                    "outputs": {"answer": "4"},
                    "usage": {"prompt_tokens": 57, "completion_tokens": 3, "total_tokens": 60},
                    "elapsed_ms": 812.25,
                },
                "elapsed_ms": 815.0,
            },
        ),
        (
            "response_error",
            W2H,
            "failure: error present with a retryable taxonomy type, no result key",
            {
                "type": "response",
                "id": 2,
                "ok": False,
                "error": {
                    "type": "lm_rate_limited",
                    "message": "the LM provider answered 429 after 3 attempts",
                    "retryable": True,
                    "details": {"status": 429, "attempts": 3},
                },
                "elapsed_ms": 2048.0,
            },
        ),
        (
            "response_protocol_error_no_id",
            W2H,
            "the worker's answer to a request without a valid id (see invalid vector request_without_id)",
            {
                "type": "response",
                "id": None,
                "ok": False,
                "error": {
                    "type": "protocol_error",
                    "message": "request has no valid id",
                    "retryable": False,
                    "details": None,
                },
                "elapsed_ms": 0.0,
            },
        ),
        (
            "goodbye",
            W2H,
            "last frame before a planned exit",
            {"type": "goodbye", "worker_id": "w0", "pid": 4242, "reason": "shutdown"},
        ),
        *_stream_messages(codec),
    ]


STREAM_ID = 7
STREAM_SEQUENCE = ["hello_stream", "request_execute_stream", "chunk_first", "chunk_non_ascii", "response_after_chunks"]


def _stream_messages(codec: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The streaming vectors (protocol 1.0, added later: none of the vectors above changed)."""
    hello = _hello(codec, "mock", None)
    hello["capabilities"] = [*hello["capabilities"], "stream"]
    return [
        ("hello_stream", W2H, "a worker that can stream: 'stream' among its capabilities", hello),
        (
            "request_execute_stream",
            H2W,
            "execute_program asking for chunk frames before its Response (only sent to a 'stream' worker)",
            {
                "type": "request",
                "id": STREAM_ID,
                "command": "execute_program",
                "args": {
                    "program_id": "prog_9eb923eef4e4a86f",
                    "inputs": {"question": "Name two rivers."},
                    "stream": True,
                },
                "session_id": "s1",
                "context": {},
            },
        ),
        (
            "chunk_first",
            W2H,
            "a piece of output field 'answer' of the streamed request (same id), before its Response",
            {"type": "chunk", "id": STREAM_ID, "field": "answer", "text": "Nile, "},
        ),
        (
            "chunk_non_ascii",
            W2H,
            "the next piece, in order; text is any string (non-ASCII as raw UTF-8)",
            {"type": "chunk", "id": STREAM_ID, "field": "answer", "text": "Río Paraná"},
        ),
        (
            "response_after_chunks",
            W2H,
            "the one final Response of the streamed request: the whole result, as without streaming",
            {
                "type": "response",
                "id": STREAM_ID,
                "ok": True,
                "result": {"outputs": {"answer": "Nile, Río Paraná"}, "usage": {}},
                "elapsed_ms": 40.5,
            },
        ),
    ]


def _invalid(codec: str) -> list[dict[str, Any]]:
    dumps = ENCODERS[codec]["dumps"]
    undecodable = b"\xc1" if codec == "msgpack" else b"{not json"
    non_string_keys = msgpack.packb({1: "one"}) if codec == "msgpack" else b'"just a string"'
    vectors: list[dict[str, Any]] = [
        {
            "name": "oversized_length_prefix",
            "direction": W2H,
            "description": "length prefix 64 MiB + 1, header alone: rejected before any payload is read",
            "hex": struct.pack(">I", MAX_FRAME_SIZE + 1).hex(),
            "stage": "frame",
            "error": "FrameTooLarge",
        },
        {
            "name": "max_length_prefix",
            "direction": H2W,
            "description": "length prefix 0xffffffff (4 GiB - 1) followed by junk: rejected on the header",
            "hex": "ffffffff" + "00" * 8,
            "stage": "frame",
            "error": "FrameTooLarge",
        },
        {
            "name": "truncated_header",
            "direction": W2H,
            "description": "stream ends after 2 of the 4 length bytes",
            "hex": "0000",
            "stage": "eof",
            "error": "MalformedFrame",
        },
        {
            "name": "truncated_payload",
            "direction": W2H,
            "description": "length prefix announces 16 bytes, the stream ends after a shorter payload",
            "hex": (struct.pack(">I", 16) + dumps({"a": 1})).hex(),
            "stage": "eof",
            "error": "MalformedFrame",
        },
        {
            "name": "empty_payload",
            "direction": H2W,
            "description": "a zero-length frame: an empty payload is not a map",
            "hex": _frame(b""),
            "stage": "payload",
            "error": "MalformedFrame",
        },
        {
            "name": "undecodable_payload",
            "direction": W2H,
            "description": f"payload is not valid {codec}",
            "hex": _frame(undecodable),
            "stage": "payload",
            "error": "MalformedFrame",
        },
        {
            "name": "non_map_payload",
            "direction": H2W,
            "description": "payload decodes to an array, not a map",
            "hex": _frame(dumps([1, 2, 3])),
            "stage": "payload",
            "error": "MalformedFrame",
        },
        {
            "name": "non_string_keys" if codec == "msgpack" else "scalar_payload",
            "direction": H2W,
            "description": "a map with an integer key" if codec == "msgpack" else "payload decodes to a string",
            "hex": _frame(non_string_keys),
            "stage": "payload",
            "error": "MalformedFrame",
        },
        {
            "name": "trailing_data",
            "direction": W2H,
            "description": "two maps in one frame payload",
            "hex": _frame(dumps({"a": 1}) + dumps({"b": 2})),
            "stage": "payload",
            "error": "MalformedFrame",
        },
    ]
    shape_cases: list[tuple[str, str, str, dict[str, Any], str | None]] = [
        (
            "request_without_id",
            H2W,
            "a request with no id: the worker stays alive and answers response_protocol_error_no_id",
            {"command": "ping", "args": {}},
            "response_protocol_error_no_id",
        ),
        (
            "request_negative_id",
            H2W,
            "id below 0",
            {"id": -1, "command": "ping"},
            "response_protocol_error_no_id",
        ),
        (
            "request_id_too_large",
            H2W,
            "id above 2**64-1",
            {"id": UINT64_MAX + 1, "command": "ping"},
            "response_protocol_error_no_id",
        ),
        (
            "request_fractional_id",
            H2W,
            "id is not an integer",
            {"id": 1.5, "command": "ping"},
            "response_protocol_error_no_id",
        ),
        ("request_empty_command", H2W, "command is an empty string", {"id": 3, "command": ""}, None),
        ("request_args_not_map", H2W, "args is an array", {"id": 4, "command": "ping", "args": [1]}, None),
        (
            "request_wrong_type",
            H2W,
            "type is present but not 'request'",
            {"type": "hello", "id": 5, "command": "ping"},
            None,
        ),
        ("unknown_message_type", W2H, "type names no worker message", {"type": "bogus", "id": 1}, None),
        (
            "hello_missing_protocol",
            W2H,
            "hello without its protocol version",
            {k: v for k, v in _hello(codec, "real", "3.4.1").items() if k != "protocol"},
            None,
        ),
        (
            "response_unknown_error_type",
            W2H,
            "error.type outside the taxonomy",
            {
                "type": "response",
                "id": 1,
                "ok": False,
                "error": {"type": "oops", "message": "m"},
                "elapsed_ms": 0.0,
            },
            None,
        ),
        (
            "response_without_id",
            W2H,
            "a response must carry id (nil is allowed, absent is not)",
            {"type": "response", "ok": True},
            None,
        ),
        (
            "goodbye_without_reason",
            W2H,
            "goodbye missing its reason",
            {"type": "goodbye", "worker_id": "w0", "pid": 1},
            None,
        ),
        (
            "chunk_without_id",
            W2H,
            "a chunk must name its request (nil is not allowed either)",
            {"type": "chunk", "field": "answer", "text": "x"},
            None,
        ),
        (
            "chunk_without_field",
            W2H,
            "a chunk must name its output field",
            {"type": "chunk", "id": 7, "text": "x"},
            None,
        ),
        (
            "chunk_text_not_string",
            W2H,
            "chunk text is always a string",
            {"type": "chunk", "id": 7, "field": "answer", "text": 4},
            None,
        ),
    ]
    if codec == "msgpack":  # msgpack integers stop at 2**64-1: the oversized id exists only in JSON
        shape_cases = [case for case in shape_cases if case[0] != "request_id_too_large"]
    for name, direction, description, message, reply in shape_cases:
        vector: dict[str, Any] = {
            "name": name,
            "direction": direction,
            "description": description,
            "hex": _frame(dumps(message)),
            "message": message,
            "stage": "shape",
            "error": "MalformedFrame",
        }
        if reply is not None:
            vector["worker_reply"] = reply
        vectors.append(vector)
    return vectors


def build_frames(codec: str) -> dict[str, Any]:
    dumps = ENCODERS[codec]["dumps"]
    valid = [
        {
            "name": name,
            "direction": direction,
            "description": description,
            "hex": _frame(dumps(message)),
            "message": message,
        }
        for name, direction, description, message in _valid_messages(codec)
    ]
    return {
        "protocol": PROTOCOL_VERSION,
        "codec": codec,
        "encoder": ENCODERS[codec]["settings"],
        "key_order": KEY_ORDER_NOTE,
        "frame": "4-byte big-endian unsigned payload length, then the payload; hex is the whole frame",
        "max_frame_size": MAX_FRAME_SIZE,
        "stages": {
            "frame": "FrameDecoder.feed raises as soon as the bytes are fed (the length prefix suffices)",
            "eof": "FrameDecoder.feed returns nothing; FrameDecoder.check_eof raises at end of stream",
            "payload": "the frame is delimited; Codec.loads raises on its payload",
            "shape": "the payload decodes to a map; parse_request (host_to_worker) or "
            "parse_worker_message (worker_to_host) raises",
        },
        "valid": valid,
        "invalid": _invalid(codec),
        "sequences": [
            {
                "name": "stream",
                "description": "a streamed execute_program: any number of chunk frames with the request's id, "
                "in order, then its one Response",
                "frames": STREAM_SEQUENCE,
            }
        ],
    }


_PROGRAM_CASES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "string_signature",
        "plain string signature; program_type defaults to predict",
        {"signature": "question -> answer"},
    ),
    (
        "string_signature_whitespace",
        "same program as string_signature: whitespace around '->' and ',' is normalised",
        {"signature": "  question   ->answer ", "program_type": "predict"},
    ),
    (
        "multi_field",
        "commas are normalised to ', '",
        {"signature": "context,question -> answer: int", "program_type": "predict"},
    ),
    (
        "typed_field_spacing",
        "whitespace around ':' is normalised to ': ' (same program as multi_field)",
        {"signature": "context , question->answer :int"},
    ),
    (
        "chain_of_thought",
        "program_type is part of the definition",
        {"signature": "question -> answer", "program_type": "chain_of_thought"},
    ),
    (
        "instructions",
        "separate instructions argument, whitespace collapsed",
        {"signature": "question -> answer", "instructions": "  Answer   in one word. "},
    ),
    (
        "structured_signature",
        "structured signature: keys are sorted, list order is kept, instructions whitespace collapsed",
        {
            "program_type": "chain_of_thought",
            "signature": {
                "outputs": [{"name": "answer", "type": "int", "description": "the result"}],
                "inputs": [{"name": "question", "type": "str", "description": "¿pregunta?"}],
                "instructions": "  Be   brief. ",
            },
        },
    ),
    (
        "explicit_id",
        "a non-empty string id is used as is",
        {"signature": "question -> answer", "id": "my_program"},
    ),
    (
        "empty_explicit_id",
        "an empty id falls back to the hash (same as string_signature)",
        {"signature": "question -> answer", "id": ""},
    ),
    # Added with user modules (issue 12): the ids above did not change; these keys are new.
    (
        "signature_with_demos_and_json_adapter",
        "demos (non-empty) and a non-default adapter take part; adapter 'chat' would not",
        {"signature": "question -> answer", "demos": [{"question": "1+1?", "answer": "2"}], "adapter": "json"},
    ),
    (
        "module_program",
        "a module program: module and kwargs ({} when absent); no program_type",
        {"module": "myapp.rag:RAG", "kwargs": {"k": 3}},
    ),
    (
        "module_program_with_state",
        "the state is replaced by state_digest: 16 hex of sha256 over its canonical JSON",
        {"module": "myapp.rag:RAG", "state": {"generate.predict": {"demos": [], "traces": [], "train": []}}},
    ),
]


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_program_ids() -> dict[str, Any]:
    from dspy_bridge.protocol._programs import canonical_json, canonical_program, program_id_for

    cases = []
    for name, description, args in _PROGRAM_CASES:
        canonical = canonical_json(canonical_program(args))
        explicit = args.get("id")
        expected = (
            explicit
            if isinstance(explicit, str) and explicit
            else "prog_" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
        )
        if program_id_for(args) != expected:
            raise SystemExit(f"program_id_for disagrees with the documented rule for {name!r}")
        if canonical != _canonical_json(json.loads(canonical)):
            raise SystemExit(f"canonical JSON of {name!r} is not plain sorted JSON")
        cases.append(
            {
                "name": name,
                "description": description,
                "args": args,
                "canonical_json": canonical,
                "program_id": expected,
            }
        )
    return {
        "rule": (
            "program_id = args['id'] if it is a non-empty string, else 'prog_' + the first 16 hex digits "
            "of sha256(UTF-8 of canonical_json); canonical_json is JSON with sorted keys, separators "
            "(',', ':') and raw UTF-8 of the canonical definition (see docs/protocol.md)"
        ),
        "cases": cases,
    }


def render(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    files = {HERE / f"{codec}.json": render(build_frames(codec)) for codec in ENCODERS}
    files[HERE / "program_ids.json"] = render(build_program_ids())
    return files


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in outputs().items():
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale vector files: {', '.join(stale)}; run python tests/vectors/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
