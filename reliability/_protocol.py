"""Protocol fuzzing: the host's decoder on arbitrary bytes (hypothesis), and live workers of both codecs on
hostile frames (each frame they can delimit gets exactly one small Response; none of them dies)."""

from __future__ import annotations

import json
import random
import struct
import time
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspy_bridge._exceptions import ProtocolError
from dspy_bridge.protocol import FrameDecoder, encode_frame, get_codec
from reliability._common import ProbeResult, RawWorker

REPLY_LIMIT = 64 * 1024


def decoder_fuzz(examples: int) -> ProbeResult:
    """Arbitrary byte streams (and valid frames with arbitrary payloads) through ``FrameDecoder`` and both
    codecs: nothing but ``ProtocolError`` may come out."""
    frames = 0
    failures: list[str] = []
    codecs = [get_codec("msgpack"), get_codec("json")]

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.binary(max_size=256), min_size=1, max_size=8), st.binary(max_size=64), st.integers(1, 64))
    def run(payloads: list[bytes], noise: bytes, chunk: int) -> None:
        nonlocal frames
        stream = b"".join(encode_frame(p) for p in payloads if p) + noise
        decoder = FrameDecoder(max_frame_size=1 << 20)
        try:
            for start in range(0, len(stream), chunk):
                for payload in decoder.feed(stream[start : start + chunk]):
                    frames += 1
                    for codec in codecs:
                        try:
                            codec.loads(payload)
                        except ProtocolError:
                            pass
            decoder.check_eof()
        except ProtocolError:
            pass
        except Exception as exc:  # the finding
            failures.append(f"{type(exc).__name__}: {exc}"[:200])

    run()
    return ProbeResult(
        "protocol fuzzing: host decoder",
        "hypothesis byte streams (valid frames of arbitrary payloads plus noise, any chunking) through "
        "FrameDecoder and both codecs; only ProtocolError may escape",
        frames,
        len(failures),
        failures[:3],
    )


def _hostile_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(12)
    if depth > 3 or pick < 4:
        return rng.choice(
            [
                None,
                True,
                rng.randrange(-(2**63), 2**64),
                rng.random() * 1e308,
                "x" * rng.randrange(0, 3000),
                "Río\u2028\u0000",
                rng.randbytes(rng.randrange(0, 40)).decode("latin-1"),
            ]
        )
    if pick < 7:
        return [_hostile_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {f"k{rng.randrange(50)}": _hostile_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


_COMMANDS = [
    "ping",
    "configure_lm",
    "create_program",
    "execute_program",
    "list_programs",
    "get_program_info",
    "delete_program",
    "get_stats",
    "cleanup_session",
    "allow_hosts",
    "stub_program",
    "no_such_command",
    "",
]


def _json_text(rng: random.Random, request: dict[str, Any]) -> bytes:
    """JSON texts a Python encoder would not write: lone surrogates, NaN/Infinity, deep arrays."""
    text = json.dumps(request)
    trick = rng.randrange(5)
    if trick == 0:
        text = text[:-1] + ',"session_id":"\\ud800"}'
    elif trick == 1:
        text = text[:-1] + ',"args":{"model":"gemini/x","temperature":NaN}}'
    elif trick == 2:
        depth = rng.randrange(100, 2000)
        text = text[:-1] + ',"args":{"x":' + "[" * depth + "]" * depth + "}}"
    return text.encode("utf-8", "surrogatepass")


def _frame(rng: random.Random, codec: str) -> bytes:
    kind = rng.randrange(10)
    request: dict[str, Any] = {"id": rng.randrange(1, 2**40), "command": rng.choice(_COMMANDS)}
    if rng.random() < 0.7:
        request["args"] = _hostile_value(rng)
    if rng.random() < 0.3:
        request["session_id"] = _hostile_value(rng)
    if rng.random() < 0.1:
        request["id"] = _hostile_value(rng)
    if kind == 0:
        payload = rng.randbytes(rng.randrange(0, 200))  # undecodable (or, rarely, a valid map)
    elif kind == 1:
        payload = b"\xc1" + b"A" * rng.randrange(1, 2_000_000)  # big, undecodable
    elif codec == "json" and kind < 5:
        payload = _json_text(rng, request)
    elif codec == "msgpack" and kind < 3:
        request["args"] = {"x": msgpack.ExtType(rng.randrange(0, 127), b"zz")}
        payload = msgpack.packb(request, use_bin_type=True)
    else:
        try:
            payload = get_codec(codec).dumps(request)
        except ProtocolError:
            payload = b"\x00"
    return struct.pack(">I", len(payload)) + payload


def worker_fuzz(frames_per_codec: int, seed: int = 1) -> ProbeResult:
    """Hostile frames to live mock workers (msgpack and JSON): each gets exactly one Response, no Response is
    above 64 KB, and the worker still answers ``ping`` at the end."""
    rng = random.Random(seed)
    sent = failed = 0
    notes: list[str] = []
    for codec in ("msgpack", "json"):
        worker = RawWorker(codec)
        try:
            for _ in range(frames_per_codec):
                data = _frame(rng, codec)
                if b"shutdown" in data:
                    continue
                worker.send_raw(data)
                sent += 1
                reply = worker.read()
                if reply is None or reply.get("type") != "response":
                    failed += 1
                    notes.append(f"{codec}: no Response (worker exit {worker.proc.poll()})")
                    worker.close()
                    worker = RawWorker(codec)
                    continue
                size = len(worker.codec.dumps(reply))
                if not reply.get("ok") and size > REPLY_LIMIT:
                    failed += 1
                    notes.append(f"{codec}: an error reply of {size} bytes")
                worker.drain_stderr()
            worker.send_raw(encode_frame(worker.codec.dumps({"id": 1, "command": "ping"})))
            final = worker.read()
            if not final or not final.get("ok"):
                failed += 1
                notes.append(f"{codec}: no ping answer at the end")
            worker.drain_stderr()
        finally:
            worker.close()
    return ProbeResult(
        "protocol fuzzing: live workers",
        "hostile frames to mock workers of both codecs (random bytes, 2 MB undecodable payloads, bad ids, "
        "hostile args/session ids, lone surrogates, NaN, deep arrays, msgpack extension types); each must get "
        "one Response under 64 KB and the worker must live",
        sent,
        failed,
        notes[:3],
    )


def timed(probe: Any, *args: Any) -> ProbeResult:
    began = time.monotonic()
    result: ProbeResult = probe(*args)
    result.seconds = time.monotonic() - began
    return result
