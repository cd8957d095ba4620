"""Server-sent events: split a body into events, and store event streams in vcrpy's own format.

An HTTP cassette keeps an event stream where vcrpy keeps every body, in ``body.string``, so plain
``vcr.use_cassette(...)`` loads and replays it; the event separator is stored beside it::

    body:
      string: "data: {..}\\r\\n\\r\\ndata: {..}\\r\\n\\r\\n"
      sse_separator: "\\r\\n\\r\\n"

Files written before this shape kept a list of events (``sse_events`` + ``sse_separator``) instead
of ``string``; they are still read (``restore_sse_events``). Replay re-emits each event with its
separator as its own HTTP chunk (see ``EventFramer``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "SSE_CONTENT_TYPE",
    "EventFramer",
    "events_to_storage",
    "is_event_stream",
    "rechunk_gemini_events",
    "restore_sse_events",
    "split_events",
    "storage_to_body",
    "store_sse_events",
]

SSE_CONTENT_TYPE = "text/event-stream"
_SEPARATOR = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def is_event_stream(headers: Iterable[tuple[str, str]]) -> bool:
    """True when a ``Content-Type`` header says ``text/event-stream``."""
    return any(name.lower() == "content-type" and SSE_CONTENT_TYPE in value.lower() for name, value in headers)


def split_events(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete events (each ending with its separator) and the unterminated rest."""
    events: list[bytes] = []
    start = 0
    for match in _SEPARATOR.finditer(data):
        events.append(data[start : match.end()])
        start = match.end()
    return events, data[start:]


class EventFramer:
    """Feed bytes as they arrive; get back whole events, so each can be relayed as one chunk."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        events, self._pending = split_events(self._pending + data)
        return events

    def flush(self) -> bytes:
        """Whatever trailed the last separator (normally nothing)."""
        rest, self._pending = self._pending, b""
        return rest


def rechunk_gemini_events(events: list[bytes], size: int) -> list[bytes]:
    """Gemini ``streamGenerateContent`` events with their text re-cut into ``size``-character events.

    An event whose one candidate has only text parts (thought parts stay whole, as their own events) becomes
    one event per piece: each a copy of it with one text part; ``finishReason``, ``usageMetadata`` and
    safety ratings stay on the last piece only. Anything else (errors, several candidates, function calls)
    passes unchanged, so the same text and the same final fields reach the client, cut elsewhere.
    """
    import json

    out: list[bytes] = []
    for event in events:
        separator = _SEPARATOR.search(event)
        body, sep = (event[: separator.start()], separator.group(0)) if separator else (event, b"")
        prefix = b"data: " if body.startswith(b"data: ") else b"data:"
        if not body.startswith(prefix):
            out.append(event)
            continue
        try:
            data: Any = json.loads(body[len(prefix) :])
            (candidate,) = data["candidates"]
            parts = candidate["content"]["parts"]
        except (ValueError, TypeError, KeyError):
            out.append(event)
            continue
        if not parts or not all(set(part) == {"text"} and isinstance(part["text"], str) for part in parts):
            out.append(event)
            continue
        text = "".join(part["text"] for part in parts)
        pieces = [text[start : start + size] for start in range(0, len(text), size)] or [""]
        for number, piece in enumerate(pieces, 1):
            last = number == len(pieces)
            copy = {key: value for key, value in data.items() if last or key != "usageMetadata"}
            part_of = {
                key: value for key, value in candidate.items() if last or key not in ("finishReason", "safetyRatings")
            }
            copy["candidates"] = [{**part_of, "content": {**candidate["content"], "parts": [{"text": piece}]}}]
            out.append(prefix + json.dumps(copy, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + sep)
    return out


def events_to_storage(body: bytes) -> dict[str, Any] | None:
    """The cassette form of an SSE body, or None when it would not round-trip exactly."""
    events, rest = split_events(body)
    if not events or rest:
        return None
    separator = _SEPARATOR.search(events[0])
    assert separator is not None  # split_events only returns terminated events
    sep = separator.group(0)
    texts = [event[: -len(sep)] for event in events]
    if sep.join(texts) + sep != body:  # mixed separators, or one inside an event
        return None
    try:
        return {"sse_events": [text.decode("utf-8") for text in texts], "sse_separator": sep.decode("ascii")}
    except UnicodeDecodeError:
        return None


def storage_to_body(stored: dict[str, Any]) -> bytes:
    """The raw SSE bytes back from ``events_to_storage``'s form."""
    sep = str(stored["sse_separator"]).encode("ascii")
    return b"".join(str(text).encode("utf-8") + sep for text in stored["sse_events"])


def _header_pairs(headers: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, v) for k, values in headers.items() for v in (values if isinstance(values, list) else [values])]


def store_sse_events(request: Any, response: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """vcrpy ``before_save_interaction``: an event stream keeps ``string`` and gets ``sse_separator`` beside it."""
    body = response.get("body")
    if (
        isinstance(body, dict)
        and isinstance(body.get("string"), bytes | str)
        and is_event_stream(_header_pairs(response.get("headers") or {}))
    ):
        raw = body["string"] if isinstance(body["string"], bytes) else body["string"].encode("utf-8")
        stored = events_to_storage(raw)
        if stored is not None:
            body["sse_separator"] = stored["sse_separator"]
    return request, response


def restore_sse_events(request: Any, response: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """vcrpy ``after_load_interaction``: the older list-of-events shape becomes ``string`` again."""
    body = response.get("body")
    if isinstance(body, dict) and "sse_events" in body and "string" not in body:
        response["body"] = {"string": storage_to_body(body), "sse_separator": body.get("sse_separator")}
    return request, response
