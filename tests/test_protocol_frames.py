"""Framing and codecs: the sans-IO decoder, hostile input, and the readers/writers over real pipes."""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspy_bridge._exceptions import FrameTooLarge, MalformedFrame, ProtocolError
from dspy_bridge.protocol import CODECS, FrameDecoder, encode_frame, get_codec, parse_request, parse_worker_message
from dspy_bridge.protocol._async_streams import AsyncFrameReader, AsyncFrameWriter
from dspy_bridge.protocol._frames import HEADER_SIZE
from dspy_bridge.protocol._streams import FrameReader, FrameWriter

CODEC_NAMES = sorted(CODECS)
HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Nested maps are slow to draw; fewer examples keep the whole file within a few seconds.
ROUND_TRIPS = settings(HYPOTHESIS, max_examples=80)


def _frames(*payloads: bytes) -> bytes:
    return b"".join(encode_frame(p) for p in payloads)


# --- FrameDecoder: whole frames, partial frames, many frames ------------------------------------


def test_round_trip_one_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"hello")) == [b"hello"]
    assert decoder.pending == 0
    decoder.check_eof()


def test_header_is_big_endian_unsigned_length() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"x" * 0x01020304)[:4] == b"\x01\x02\x03\x04"


def test_feeding_byte_by_byte_yields_each_frame_exactly_once() -> None:
    payloads = [b"a", b"", b"bc" * 300, bytes(range(256))]
    stream = _frames(*payloads)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(len(stream)):
        out.extend(decoder.feed(stream[i : i + 1]))
    assert out == payloads
    decoder.check_eof()


def test_pending_counts_the_unfinished_frame() -> None:
    decoder = FrameDecoder()
    stream = encode_frame(b"0123456789")
    assert decoder.feed(stream[:2]) == []
    assert decoder.pending == 2
    assert decoder.feed(stream[2:7]) == []
    assert decoder.pending == 7
    assert decoder.feed(stream[7:]) == [b"0123456789"]
    assert decoder.pending == 0


def test_many_frames_in_one_chunk_and_a_trailing_partial() -> None:
    payloads = [str(i).encode() * (i % 7) for i in range(1000)]
    stream = _frames(*payloads)
    decoder = FrameDecoder()
    tail = encode_frame(b"last")
    assert decoder.feed(stream + tail[:5]) == payloads
    assert decoder.pending == 5
    assert decoder.feed(tail[5:]) == [b"last"]


def test_frame_of_exactly_the_maximum_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_size=16)
    assert decoder.feed(encode_frame(b"x" * 16, max_frame_size=16)) == [b"x" * 16]


# --- malformed streams ----------------------------------------------------------------------------


def test_too_large_is_raised_on_the_header_alone() -> None:
    """Nothing but the 4 length bytes is needed: the decoder never waits for (or buffers) the payload."""
    decoder = FrameDecoder(max_frame_size=1024)
    with pytest.raises(FrameTooLarge, match="1025 bytes"):
        decoder.feed(struct.pack(">I", 1025))


def test_too_large_default_maximum_is_64_mib() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack(">I", 64 * 1024 * 1024 + 4)[:3]) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack(">I", 64 * 1024 * 1024 + 4)[3:])


def test_too_large_after_valid_frames_in_the_same_chunk() -> None:
    decoder = FrameDecoder(max_frame_size=8)
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"ok") + struct.pack(">I", 9))


def test_encode_refuses_to_send_what_the_peer_would_reject() -> None:
    with pytest.raises(FrameTooLarge, match="maximum is 4"):
        encode_frame(b"12345", max_frame_size=4)


@pytest.mark.parametrize(
    ("stream", "match"),
    [
        (b"\x00", "header"),
        (b"\x00\x00\x00", "header"),
        (b"\x00\x00\x00\x05ab", "2 of 5"),
        (b"\x00\x00\x00\x05", "0 of 5"),
        (encode_frame(b"whole") + b"\x00\x00", "header"),
    ],
)
def test_truncated_stream_is_reported_at_eof(stream: bytes, match: str) -> None:
    decoder = FrameDecoder()
    decoder.feed(stream)
    with pytest.raises(MalformedFrame, match=match):
        decoder.check_eof()


@pytest.mark.parametrize("codec", CODEC_NAMES)
@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"\xff\xfe", b"{", b"\x93\x01\x02", b"[1, 2]", b"null", b'"text"', b"\x81\x01\x02"],
)
def test_undecodable_or_non_map_payloads_are_malformed(codec: str, payload: bytes) -> None:
    with pytest.raises(MalformedFrame):
        get_codec(codec).loads(payload)


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_codec_errors_name_the_codec(codec: str) -> None:
    with pytest.raises(MalformedFrame, match=f"--codec {codec}"):
        get_codec(codec).loads(b"\xc1\xff{")
    with pytest.raises(MalformedFrame, match="expected a map"):
        get_codec(codec).loads(get_codec(codec).dumps([1]))  # type: ignore[arg-type]


def test_unknown_codec_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"\['json', 'msgpack'\]"):
        get_codec("cbor")


@pytest.mark.parametrize(
    "message",
    [
        {"type": "hello", "protocol": "1.0"},
        {"type": "response", "id": "one", "ok": True},
        {"type": "response", "id": 1, "ok": False, "error": {"type": "nope", "message": "m"}},
        {"type": "goodbye"},
        {"type": ["response"]},
    ],
)
def test_wrong_shape_is_malformed_after_decoding(message: dict[str, Any]) -> None:
    for codec in CODECS.values():
        decoded = codec.loads(FrameDecoder().feed(encode_frame(codec.dumps(message)))[0])
        with pytest.raises(MalformedFrame):
            parse_worker_message(decoded)


# --- property tests -------------------------------------------------------------------------------

_INT = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_FLOAT = st.floats(allow_nan=False, allow_infinity=False)  # the JSON codec refuses infinities (spec §3)
_JSON_SCALARS = st.none() | st.booleans() | _INT | _FLOAT | st.text(max_size=40)
_MSGPACK_SCALARS = _JSON_SCALARS | st.binary(max_size=40) | st.floats(allow_nan=False)


def _maps(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Maps nested three levels deep (st.recursive is several times slower to draw from)."""
    leaf = scalars | st.lists(scalars, max_size=4)
    inner = st.dictionaries(st.text(max_size=8), leaf, max_size=4)
    values = leaf | inner | st.lists(inner, max_size=3)
    return st.dictionaries(st.text(max_size=12), values, max_size=6)


MAPS = {"msgpack": _maps(_MSGPACK_SCALARS), "json": _maps(_JSON_SCALARS)}


def _chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    start = 0
    for point in [*points, len(data)]:
        yield data[start:point]
        start = point


def _check_round_trip(codec_name: str, messages: list[dict[str, Any]], cuts: list[int]) -> None:
    codec = get_codec(codec_name)
    stream = b"".join(encode_frame(codec.dumps(m)) for m in messages)
    decoder = FrameDecoder()
    decoded = [codec.loads(p) for chunk in _chunks(stream, cuts) for p in decoder.feed(chunk)]
    decoder.check_eof()
    assert decoded == messages


_CUTS = st.lists(st.integers(min_value=0), max_size=10)


@ROUND_TRIPS
@given(messages=st.lists(MAPS["msgpack"], min_size=1, max_size=4), cuts=_CUTS)
def test_msgpack_maps_round_trip_with_arbitrary_chunking(messages: list[dict[str, Any]], cuts: list[int]) -> None:
    _check_round_trip("msgpack", messages, cuts)


@ROUND_TRIPS
@given(messages=st.lists(MAPS["json"], min_size=1, max_size=4), cuts=_CUTS)
def test_json_maps_round_trip_with_arbitrary_chunking(messages: list[dict[str, Any]], cuts: list[int]) -> None:
    _check_round_trip("json", messages, cuts)


@HYPOTHESIS
@given(payloads=st.lists(st.binary(max_size=300), max_size=6), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_raw_payloads_survive_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    stream = _frames(*payloads)
    decoder = FrameDecoder()
    out = [p for chunk in _chunks(stream, cuts) for p in decoder.feed(chunk)]
    decoder.check_eof()
    assert out == payloads


def _consume_hostile(data: bytes, cuts: list[int], max_frame_size: int) -> None:
    """Run bytes through every stage a host or worker would; only ProtocolError may escape."""
    decoder = FrameDecoder(max_frame_size)
    for chunk in _chunks(data, cuts):
        for payload in decoder.feed(chunk):
            for codec in CODECS.values():
                try:
                    message = codec.loads(payload)
                except MalformedFrame:
                    continue
                for parse in (parse_request, parse_worker_message):
                    try:
                        parse(message)
                    except MalformedFrame:
                        pass
    decoder.check_eof()


@HYPOTHESIS
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_hostile_bytes_raise_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    try:
        _consume_hostile(data, cuts, max_frame_size=256)
    except ProtocolError:
        pass


@HYPOTHESIS
@given(payloads=st.lists(st.binary(max_size=120), min_size=1, max_size=5))
def test_well_framed_garbage_payloads_raise_only_protocol_errors(payloads: list[bytes]) -> None:
    """Valid framing around random payloads exercises the codecs and parsers, not just the header check."""
    try:
        _consume_hostile(_frames(*payloads), [], max_frame_size=1024)
    except ProtocolError:
        pass


_SAMPLE_MESSAGES = [
    {"type": "request", "id": 7, "command": "execute_program", "args": {"program_id": "p", "inputs": {"q": "x"}}},
    {"type": "response", "id": 7, "ok": False, "error": {"type": "lm_error", "message": "m", "retryable": False}},
    {"type": "hello", "protocol": "1.0", "worker_id": "w", "pid": 1, "mode": "mock", "codec": "json"},
]


@HYPOTHESIS
@given(
    codec_name=st.sampled_from(CODEC_NAMES),
    index=st.integers(min_value=0, max_value=len(_SAMPLE_MESSAGES) - 1),
    flips=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1, max_size=4
    ),
)
def test_corrupted_valid_frames_raise_only_protocol_errors(
    codec_name: str, index: int, flips: list[tuple[int, int]]
) -> None:
    """Near-valid bytes (a real frame with a few bytes overwritten) reach deep into the decoders."""
    frame = bytearray(encode_frame(get_codec(codec_name).dumps(_SAMPLE_MESSAGES[index])))
    for position, value in flips:
        frame[position % len(frame)] = value
    try:
        _consume_hostile(bytes(frame), [], max_frame_size=4096)
    except ProtocolError:
        pass


_FIELD_VALUES = st.none() | st.booleans() | _INT | _FLOAT | st.text(max_size=8) | st.lists(st.integers(), max_size=2)
_KEYS = st.sampled_from(
    ["type", "id", "ok", "result", "error", "command", "args", "session_id", "context", "protocol", "pid", "mode"]
)


@HYPOTHESIS
@given(
    kind=st.sampled_from(["hello", "response", "goodbye", "request", None, "bogus"]),
    fields=st.dictionaries(_KEYS, _FIELD_VALUES | st.dictionaries(st.text(max_size=5), _FIELD_VALUES, max_size=3)),
)
def test_near_miss_messages_parse_or_raise_malformed(kind: str | None, fields: dict[str, Any]) -> None:
    message = dict(fields)
    if kind is not None:
        message["type"] = kind
    for parse in (parse_request, parse_worker_message):
        try:
            parsed = parse(message)
        except MalformedFrame:
            continue
        assert parsed.type == message.get("type", "request" if parse is parse_request else "response")


# --- blocking FrameReader / FrameWriter over a real pipe ----------------------------------------


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:  # already closed by the test
            pass


def _write_in_thread(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("codec_name", CODEC_NAMES)
def test_sync_reader_writer_over_a_pipe(codec_name: str, pipe: tuple[int, int]) -> None:
    """Frames bigger than the pipe buffer arrive whole; closing the writer is a clean end of stream."""
    read_fd, write_fd = pipe
    codec = get_codec(codec_name)
    messages = [{"n": i, "blob": "x" * (i * 100_000)} for i in range(4)]

    def produce() -> None:
        writer = FrameWriter(write_fd, codec)
        for message in messages:
            writer.write(message)
        os.close(write_fd)

    thread = _write_in_thread(produce)
    reader = FrameReader(read_fd, codec)
    received = [reader.read() for _ in messages]
    assert reader.read() is None
    thread.join()
    assert received == messages


def test_sync_writer_is_safe_across_threads(pipe: tuple[int, int]) -> None:
    """Concurrent writers never interleave the bytes of frames larger than PIPE_BUF."""
    read_fd, write_fd = pipe
    codec = get_codec("msgpack")
    writer = FrameWriter(write_fd, codec)
    per_thread, threads = 20, 4

    def produce(tag: int) -> None:
        for i in range(per_thread):
            writer.write({"tag": tag, "i": i, "pad": bytes([tag]) * 70_000})

    workers = [_write_in_thread(produce, tag) for tag in range(threads)]
    reader = FrameReader(read_fd, codec)
    seen: dict[int, list[int]] = {tag: [] for tag in range(threads)}
    for _ in range(per_thread * threads):
        message = reader.read()
        assert message is not None
        assert message["pad"] == bytes([message["tag"]]) * 70_000
        seen[message["tag"]].append(message["i"])
    for thread in workers:
        thread.join()
    assert all(order == list(range(per_thread)) for order in seen.values())


def test_sync_reader_raises_on_a_stream_cut_mid_frame(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    frame = encode_frame(msgpack.packb({"a": "b" * 50}))
    os.write(write_fd, encode_frame(msgpack.packb({"ok": 1})) + frame[:20])
    os.close(write_fd)
    reader = FrameReader(read_fd, get_codec("msgpack"))
    assert reader.read() == {"ok": 1}
    with pytest.raises(MalformedFrame, match="stream ended inside a frame"):
        reader.read()


def test_sync_reader_rejects_an_oversized_header_without_the_payload(pipe: tuple[int, int]) -> None:
    """Only the header is sent: a reader that waited for the payload would report truncation instead."""
    read_fd, write_fd = pipe
    os.write(write_fd, struct.pack(">I", 2048))
    os.close(write_fd)
    reader = FrameReader(read_fd, get_codec("json"), max_frame_size=1024)
    with pytest.raises(FrameTooLarge):
        reader.read()


def test_sync_reader_raw_payloads_and_undecodable_payloads(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.write(write_fd, _frames(b"\xc1", msgpack.packb({"after": True})))
    os.close(write_fd)
    reader = FrameReader(read_fd, get_codec("msgpack"))
    with pytest.raises(MalformedFrame):
        reader.read()
    assert reader.read() == {"after": True}, "a bad payload does not lose the frames behind it"
    assert reader.read_payload() is None


# --- asyncio reader / writer over a real pipe -----------------------------------------------------


async def _async_reader(read_fd: int, codec_name: str, max_frame_size: int | None = None) -> AsyncFrameReader:
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(read_fd, "rb", 0))
    codec = get_codec(codec_name)
    return (
        AsyncFrameReader(stream, codec) if max_frame_size is None else AsyncFrameReader(stream, codec, max_frame_size)
    )


@pytest.mark.parametrize("codec_name", CODEC_NAMES)
async def test_async_reader_over_a_pipe_from_a_blocking_writer(codec_name: str) -> None:
    """The real topology of worker → pool: a blocking FrameWriter feeding an AsyncFrameReader."""
    read_fd, write_fd = os.pipe()
    reader = await _async_reader(read_fd, codec_name)
    messages = [{"i": i, "text": "ü" * (i * 50_000)} for i in range(5)]

    def produce() -> None:
        writer = FrameWriter(write_fd, get_codec(codec_name))
        for message in messages:
            writer.write(message)
        os.close(write_fd)

    writing = asyncio.create_task(asyncio.to_thread(produce))
    received = [await reader.read() for _ in messages]
    assert await reader.read() is None
    await writing
    assert received == messages


async def test_async_writer_over_a_pipe_to_a_blocking_reader() -> None:
    """The real topology of pool → worker: AsyncFrameWriter feeding a blocking FrameReader."""
    read_fd, write_fd = os.pipe()
    loop = asyncio.get_running_loop()
    # FlowControlMixin is the protocol asyncio's own subprocess/stream helpers pair with StreamWriter.
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(write_fd, "wb", 0))
    writer = AsyncFrameWriter(asyncio.StreamWriter(transport, protocol, None, loop), get_codec("msgpack"))
    reader = FrameReader(read_fd, get_codec("msgpack"))
    messages = [{"id": i, "command": "ping", "args": {"pad": "p" * 90_000}} for i in range(6)]

    def consume() -> list[dict[str, Any] | None]:
        out = [reader.read() for _ in messages]
        out.append(reader.read())
        return out

    reading = asyncio.create_task(asyncio.to_thread(consume))
    for message in messages[:3]:
        await writer.write(message)
    for message in messages[3:]:
        writer.write_nowait(message)
    await writer.writer.drain()
    transport.close()
    received = await reading
    os.close(read_fd)
    assert received == [*messages, None]


async def test_async_reader_raises_on_a_stream_cut_mid_frame() -> None:
    read_fd, write_fd = os.pipe()
    reader = await _async_reader(read_fd, "json")
    os.write(write_fd, encode_frame(b'{"first":1}') + encode_frame(b'{"second":2}')[:-3])
    os.close(write_fd)
    assert await reader.read() == {"first": 1}
    with pytest.raises(MalformedFrame):
        await reader.read()


async def test_async_reader_rejects_an_oversized_header_without_the_payload() -> None:
    read_fd, write_fd = os.pipe()
    reader = await _async_reader(read_fd, "msgpack", max_frame_size=100)
    os.write(write_fd, struct.pack(">I", 101))
    os.close(write_fd)
    with pytest.raises(FrameTooLarge):
        await reader.read()


def test_header_size_is_four() -> None:
    assert HEADER_SIZE == 4
