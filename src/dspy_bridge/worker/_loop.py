"""The ONE worker loop: read a frame, dispatch to the handler set, write a frame.

    host (pool)                         worker process
    ───────────                         ──────────────
    Request frame ──stdin pipe──▶ FrameReader ─▶ serve() ─▶ handlers.handle(command, args, ...)
                                                    │             (DSPyHandlers | CassetteHandlers)
    Response frame ◀─frames fd── FrameWriter ◀──────┘
    (Hello first, unasked; Goodbye last, before a planned exit; chunk frames of a ``stream: true``
    request before its Response, see ``_streaming.py``)

A zygote child enters the same ``serve`` after fork, so every worker speaks one protocol.
With ``max_concurrency > 1`` requests run on a thread pool and responses may leave out of order
(correlated by ``id``). Nothing here imports pydantic: requests are checked by hand.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

from dspy_bridge._exceptions import ProtocolError
from dspy_bridge.protocol._codec import clip
from dspy_bridge.protocol._constants import PROTOCOL_VERSION
from dspy_bridge.protocol._frames import encode_frame
from dspy_bridge.protocol._streams import FrameReader, FrameWriter
from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.worker._base import BaseHandlers, HandlerFailure
from dspy_bridge.worker._streaming import CHUNK_SINK, ChunkSink

__all__ = ["hello_message", "serve"]


def _log(level: str, message: str, *args: object, exc_info: bool = False) -> None:
    """Log lazily: importing logging costs a mock worker ~10 ms it rarely needs."""
    import logging

    getattr(logging.getLogger("dspy_bridge.worker"), level)(message, *args, exc_info=exc_info)


_UINT64_MAX = 2**64 - 1
_MESSAGE_LIMIT = 16384  # an error message (a cassette miss's diagnosis included) is cut here
_ITEMS_LIMIT = 200  # items kept per list or map in an error's details
_TRACEBACK_LIMIT = 16384


def _bounded(value: Any, depth: int = 0) -> Any:
    """An error's ``details`` with every string clipped and nesting cut, so an error reply stays small."""
    if isinstance(value, str):
        return clip(value, _TRACEBACK_LIMIT if depth == 1 else 4096)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value <= _UINT64_MAX else clip(repr(value), 200)
    if isinstance(value, float):
        return value if abs(value) < float("inf") else repr(value)  # NaN and infinities as text
    if depth >= 12:
        return clip(repr(value), 200)
    if isinstance(value, dict):
        items = list(value.items())[:_ITEMS_LIMIT]
        return {clip(str(key), 200): _bounded(item, depth + 1) for key, item in items}
    if isinstance(value, list | tuple):
        return [_bounded(item, depth + 1) for item in value[:_ITEMS_LIMIT]]
    return clip(repr(value), 200)


def _scrubbed(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED]")
    return text


def hello_message(handlers: BaseHandlers, codec: str) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "worker_id": handlers.worker_id,
        "pid": os.getpid(),
        "mode": handlers.mode,
        "codec": codec,
        "capabilities": handlers.capabilities,
        "python_version": sys.version.split()[0],
        "dspy_version": handlers.dspy_version,
    }


def _error_response(request_id: int | None, failure: HandlerFailure, started: float) -> dict[str, Any]:
    error = failure.to_error()
    error["message"] = clip(str(error["message"]), _MESSAGE_LIMIT)
    if error.get("details") is not None:
        error["details"] = _bounded(error["details"])
    return {
        "type": "response",
        "id": request_id,
        "ok": False,
        "error": error,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
    }


def _check_request(message: dict[str, Any]) -> tuple[int, str, dict[str, Any], str | None, dict[str, Any]]:
    kind = message.get("type", "request")
    request_id = message.get("id")
    if type(request_id) is not int or not 0 <= request_id <= _UINT64_MAX:
        raise HandlerFailure(
            ErrorType.PROTOCOL_ERROR,
            f"request has no valid 'id' (got {clip(repr(request_id), 200)}); every request needs an unsigned integer id",
        )
    if kind != "request":
        raise HandlerFailure(
            ErrorType.INVALID_REQUEST, f"a host may only send requests, got type {clip(repr(kind), 200)}"
        )
    command = message.get("command")
    args = message.get("args", {})
    session_id = message.get("session_id")
    context = message.get("context") or {}
    if not isinstance(command, str) or not command:
        raise HandlerFailure(ErrorType.INVALID_REQUEST, "request needs a non-empty string 'command'")
    if not isinstance(args, dict) or not isinstance(context, dict):
        raise HandlerFailure(ErrorType.INVALID_REQUEST, "'args' and 'context' must be maps")
    if session_id is not None and not isinstance(session_id, str):
        raise HandlerFailure(ErrorType.INVALID_REQUEST, "'session_id' must be a string or nil")
    return request_id, command, args, session_id, context


def answer(handlers: BaseHandlers, message: dict[str, Any], writer: FrameWriter | None = None) -> dict[str, Any]:
    """Turn one request map into one response map; never raises for handler problems.

    With ``writer``, a request whose args say ``stream: true`` may first send chunk frames through it
    (if this worker has the ``stream`` capability): its handler finds a ``ChunkSink`` in the context.
    """
    started = time.perf_counter()
    raw_id = message.get("id")
    request_id = raw_id if type(raw_id) is int and 0 <= raw_id <= _UINT64_MAX else None
    try:
        request_id, command, args, session_id, context = _check_request(message)
        context.pop(CHUNK_SINK, None)  # never from the host
        if writer is not None and args.get("stream") is True and "stream" in handlers.extra_capabilities:
            context[CHUNK_SINK] = ChunkSink(writer, request_id)
        result = handlers.handle(command, args, session_id, context)
    except HandlerFailure as failure:
        handlers.errors += 1
        secrets = handlers.known_secrets()
        if secrets:  # e.g. a user module's constructor error quoting what it was given
            failure.message = _scrubbed(failure.message, secrets)
            if failure.details:
                failure.details = {
                    key: _scrubbed(value, secrets) if isinstance(value, str) else value
                    for key, value in failure.details.items()
                }
        return _error_response(request_id, failure, started)
    except Exception as exc:  # a handler bug must not kill the worker: report it with its traceback
        handlers.errors += 1
        import traceback

        secrets = handlers.known_secrets()  # a key given in configure_lm never reaches a reply or a log line
        text = _scrubbed(clip(traceback.format_exc(), _TRACEBACK_LIMIT), secrets)
        _log("error", "handler raised while serving request %s:\n%s", request_id, text)
        internal = HandlerFailure(
            ErrorType.INTERNAL,
            _scrubbed(clip(f"{type(exc).__name__}: {exc}", _MESSAGE_LIMIT), secrets),
            details={"traceback": text},
        )
        return _error_response(request_id, internal, started)
    return {
        "type": "response",
        "id": request_id,
        "ok": True,
        "result": result,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
    }


def _encode(writer: FrameWriter, message: dict[str, Any]) -> bytes:
    """``message`` as a frame; if it cannot go (above the frame limit, not encodable in this codec) a small
    error answering its request instead: a worker never dies of a request it could delimit."""
    try:
        return encode_frame(writer.codec.dumps(message), writer.max_frame_size)
    except ProtocolError as exc:
        reason = clip(str(exc), _MESSAGE_LIMIT)
    raw_id = message.get("id")
    error = {
        "type": "response",
        "id": raw_id if type(raw_id) is int and 0 <= raw_id <= _UINT64_MAX else None,
        "ok": False,
        "error": {"type": "internal", "message": f"the answer cannot be sent: {reason}", "retryable": False},
        "elapsed_ms": 0.0,
    }
    return encode_frame(writer.codec.dumps(error), writer.max_frame_size)


def _send(writer: FrameWriter, message: dict[str, Any]) -> None:
    writer.write_frames(_encode(writer, message))


def _answer_and_send(writer: FrameWriter, handlers: BaseHandlers, message: dict[str, Any]) -> None:
    _send(writer, answer(handlers, message, writer))


def serve(reader: FrameReader, writer: FrameWriter, handlers: BaseHandlers, max_concurrency: int = 1) -> str:
    """Serve until EOF, ``shutdown`` or a broken pipe; return why the loop stopped."""
    writer.write(hello_message(handlers, writer.codec.name))
    handlers.after_hello()
    pool = None
    if max_concurrency > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="handler")
    replies: list[bytes] = []  # answers to a pipelined batch leave together, in one write
    try:
        while True:
            if replies and not reader.has_ready:
                writer.write_frames(replies[0] if len(replies) == 1 else b"".join(replies))
                replies.clear()
            try:
                payload = reader.read_payload()
            except ProtocolError as exc:
                # Framing is lost (oversized or cut frame): answer once, then stop trusting the stream.
                # (Nothing is held back here: the reader had nothing ready, so the replies went out.)
                _log("error", "protocol error on stdin, stopping: %s", clip(str(exc)))
                _send(
                    writer,
                    _error_response(None, HandlerFailure(ErrorType.PROTOCOL_ERROR, str(exc)), time.perf_counter()),
                )
                return "protocol_error"
            if payload is None:
                return "eof"
            try:
                message = reader.codec.loads(payload)
            except ProtocolError as exc:
                # The frame boundary is intact, so the stream is still usable: report and go on.
                _log("warning", "undecodable frame skipped: %s", clip(str(exc)))
                failure = HandlerFailure(ErrorType.PROTOCOL_ERROR, str(exc))
                replies.append(_encode(writer, _error_response(None, failure, time.perf_counter())))
                continue
            raw_id = message.get("id")
            valid_id = type(raw_id) is int and 0 <= raw_id <= _UINT64_MAX
            if message.get("command") == "shutdown" and valid_id and message.get("type", "request") == "request":
                if pool is not None:
                    pool.shutdown(wait=True)
                    pool = None
                replies.append(_encode(writer, answer(handlers, message)))
                writer.write_frames(b"".join(replies))
                return "shutdown"
            if pool is None:
                replies.append(_encode(writer, answer(handlers, message, writer)))
            else:
                pool.submit(_answer_and_send, writer, handlers, message)
    except BrokenPipeError:
        return "host_gone"
    finally:
        if pool is not None:
            # Leaving by EOF/shutdown drains (the answers are owed); by SIGTERM or error we do not wait.
            leaving_cleanly = sys.exc_info()[0] is None
            pool.shutdown(wait=leaving_cleanly, cancel_futures=not leaving_cleanly)
