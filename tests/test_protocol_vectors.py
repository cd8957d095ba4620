"""Hold the protocol code to the committed byte-exact vectors, in both directions.

The vectors in ``tests/vectors/`` are what a host in another language implements against (see
docs/protocol.md), so a change in our encoding must show up here as a failure, not as a silent
change of the wire format.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge import _exceptions
from dspy_bridge.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    FrameDecoder,
    Goodbye,
    Hello,
    Request,
    Response,
    encode_frame,
    get_codec,
    parse_request,
    parse_worker_message,
    program_id_for,
)
from dspy_bridge.protocol._programs import canonical_json, canonical_program

VECTORS = Path(__file__).parent / "vectors"
CODEC_NAMES = ("msgpack", "json")


def _load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


FILES = {codec: _load(f"{codec}.json") for codec in CODEC_NAMES}
PROGRAM_IDS = _load("program_ids.json")


def _cases(kind: str) -> list[Any]:
    return [
        pytest.param(codec, vector, id=f"{codec}-{vector['name']}")
        for codec in CODEC_NAMES
        for vector in FILES[codec][kind]
    ]


def _parse(direction: str, message: dict[str, Any]) -> Request | Hello | Response | Goodbye:
    return parse_request(message) if direction == "host_to_worker" else parse_worker_message(message)


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_vector_file_header_matches_the_code(codec: str) -> None:
    data = FILES[codec]
    assert data["codec"] == codec
    assert data["protocol"] == PROTOCOL_VERSION
    assert data["max_frame_size"] == DEFAULT_MAX_FRAME_SIZE
    names = [v["name"] for v in data["valid"] + data["invalid"]]
    assert len(names) == len(set(names)), "vector names must be unique within a file"


@pytest.mark.parametrize(("codec", "vector"), _cases("valid"))
def test_encode_matches_vector_bytes(codec: str, vector: dict[str, Any]) -> None:
    """encode(message) == hex: the key order in the file is the encoding order."""
    payload = get_codec(codec).dumps(vector["message"])
    assert encode_frame(payload).hex() == vector["hex"]


@pytest.mark.parametrize(("codec", "vector"), _cases("valid"))
def test_decode_vector_bytes_gives_message(codec: str, vector: dict[str, Any]) -> None:
    """decode(hex) == message, and the length prefix is the exact payload length."""
    data = bytes.fromhex(vector["hex"])
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    decoder = FrameDecoder()
    payloads = decoder.feed(data)
    decoder.check_eof()
    assert len(payloads) == 1
    decoded = get_codec(codec).loads(payloads[0])
    assert decoded == vector["message"]
    assert list(decoded) == list(vector["message"]), "decoders keep the wire key order"


@pytest.mark.parametrize(("codec", "vector"), _cases("valid"))
def test_valid_vectors_pass_validation(codec: str, vector: dict[str, Any]) -> None:
    model = _parse(vector["direction"], get_codec(codec).loads(bytes.fromhex(vector["hex"])[4:]))
    expected_type = vector["message"].get("type", "request")
    assert model.type == expected_type
    for key, value in vector["message"].items():
        if key == "error" and value is not None:
            assert model.error is not None and model.error.model_dump() == value  # type: ignore[union-attr]
        else:
            assert getattr(model, key) == value


@pytest.mark.parametrize(("codec", "vector"), _cases("invalid"))
def test_invalid_vectors_raise_the_documented_error(codec: str, vector: dict[str, Any]) -> None:
    """Each invalid vector fails at its documented stage with its documented class, never earlier."""
    expected = getattr(_exceptions, vector["error"])
    assert issubclass(expected, _exceptions.ProtocolError)
    data = bytes.fromhex(vector["hex"])
    decoder = FrameDecoder()
    stage = vector["stage"]
    if stage == "frame":
        with pytest.raises(expected):
            decoder.feed(data)
        return
    payloads = decoder.feed(data)
    if stage == "eof":
        assert payloads == []
        with pytest.raises(expected):
            decoder.check_eof()
        return
    decoder.check_eof()
    assert len(payloads) == 1
    if stage == "payload":
        with pytest.raises(expected):
            get_codec(codec).loads(payloads[0])
        return
    assert stage == "shape"
    decoded = get_codec(codec).loads(payloads[0])
    assert decoded == vector["message"]
    with pytest.raises(expected):
        _parse(vector["direction"], decoded)


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_oversized_prefix_is_rejected_on_the_header_alone(codec: str) -> None:
    vector = next(v for v in FILES[codec]["invalid"] if v["name"] == "oversized_length_prefix")
    header = bytes.fromhex(vector["hex"])
    assert len(header) == 4
    decoder = FrameDecoder()
    assert decoder.feed(header[:3]) == []
    with pytest.raises(_exceptions.FrameTooLarge):
        decoder.feed(header[3:])


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_worker_reply_references_exist_and_carry_no_id(codec: str) -> None:
    valid = {v["name"]: v for v in FILES[codec]["valid"]}
    replies = [v["worker_reply"] for v in FILES[codec]["invalid"] if "worker_reply" in v]
    assert replies, "the file must show the worker's answer to a request without a valid id"
    for name in replies:
        reply = parse_worker_message(valid[name]["message"])
        assert isinstance(reply, Response)
        assert reply.id is None and not reply.ok
        assert reply.error is not None and reply.error.type == "protocol_error"


def test_both_codecs_cover_the_same_valid_messages() -> None:
    by_codec = {codec: {v["name"]: v["message"] for v in FILES[codec]["valid"]} for codec in CODEC_NAMES}
    assert by_codec["msgpack"].keys() == by_codec["json"].keys()
    for name, message in by_codec["msgpack"].items():
        if name.startswith("hello"):
            assert {**message, "codec": "json"} == by_codec["json"][name]
        else:
            assert message == by_codec["json"][name]


def test_all_vector_frames_concatenated_decode_in_order() -> None:
    """A stream is just frames back to back: the whole file's valid frames decode as one stream."""
    for codec in CODEC_NAMES:
        stream = b"".join(bytes.fromhex(v["hex"]) for v in FILES[codec]["valid"])
        decoder = FrameDecoder()
        messages = [get_codec(codec).loads(p) for p in decoder.feed(stream)]
        decoder.check_eof()
        assert messages == [v["message"] for v in FILES[codec]["valid"]]


@pytest.mark.parametrize("case", PROGRAM_IDS["cases"], ids=lambda case: case["name"])
def test_program_id_vectors(case: dict[str, Any]) -> None:
    assert canonical_json(canonical_program(case["args"])) == case["canonical_json"]
    assert program_id_for(case["args"]) == case["program_id"]


def test_program_id_vectors_show_normalisation() -> None:
    ids = {case["name"]: case["program_id"] for case in PROGRAM_IDS["cases"]}
    assert ids["string_signature"] == ids["string_signature_whitespace"] == ids["empty_explicit_id"]
    assert ids["string_signature"] != ids["chain_of_thought"] != ids["instructions"]
    assert ids["multi_field"] == ids["typed_field_spacing"]
    assert ids["explicit_id"] == "my_program"


def test_committed_vectors_match_the_generator() -> None:
    """The generator and the committed files agree (run ``python tests/vectors/generate.py`` if not)."""
    spec = importlib.util.spec_from_file_location("_vector_generator", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for path, text in generator.outputs().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale"


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_stream_sequence_vectors_decode_as_chunks_then_one_response(codec: str) -> None:
    """The documented frame sequence of a streamed request, decoded as one byte stream from the vectors."""
    from dspy_bridge.protocol import Chunk

    valid = {v["name"]: v for v in FILES[codec]["valid"]}
    (sequence,) = [s for s in FILES[codec]["sequences"] if s["name"] == "stream"]
    frames = [valid[name] for name in sequence["frames"]]
    decoder = FrameDecoder()
    payloads = decoder.feed(b"".join(bytes.fromhex(frame["hex"]) for frame in frames))
    decoder.check_eof()
    parsed = [_parse(frame["direction"], get_codec(codec).loads(p)) for frame, p in zip(frames, payloads, strict=True)]
    hello, request, *chunks, response = parsed
    assert isinstance(hello, Hello) and "stream" in hello.capabilities
    assert isinstance(request, Request) and request.args["stream"] is True
    assert chunks and all(isinstance(chunk, Chunk) and chunk.id == request.id for chunk in chunks)
    assert isinstance(response, Response) and response.id == request.id and response.ok
    assert "".join(chunk.text for chunk in chunks if isinstance(chunk, Chunk)) == response.result["outputs"]["answer"]


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_the_vectors_before_streaming_are_unchanged(codec: str) -> None:
    """Streaming added vectors; the ones a host written before it relies on decode and encode as they did."""
    names = [v["name"] for v in FILES[codec]["valid"]]
    assert names[:11] == [
        "hello_real",
        "hello_mock",
        "request_minimal",
        "request_without_session",
        "request_with_session",
        "request_max_id",
        "response_ok",
        "response_ok_execute",
        "response_error",
        "response_protocol_error_no_id",
        "goodbye",
    ]
    for vector in FILES[codec]["valid"][:11]:
        assert "stream" not in vector["message"].get("capabilities", [])
        assert vector["message"].get("type") != "chunk"
