"""What a test tells the fake Gemini to do (script items) and what the fake saw (recorded requests).

Plain frozen dataclasses, plus their JSON form for the control API of a fake running as its own
process (``/__fake__/enqueue``, ``/__fake__/requests``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Delay",
    "Drop",
    "Fail",
    "RecordedRequest",
    "Reply",
    "ScriptInput",
    "ScriptItem",
    "as_item",
    "item_from_json",
    "item_to_json",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the next call with these field values (others generated) or with this exact text.

    ``Reply({"answer": "42"})`` fills ``answer`` and generates the rest in the
    layout the prompt asked for; ``Reply(text="...")`` is sent verbatim.
    ``finish_reason`` other than ``"STOP"`` (``"MAX_TOKENS"``, ``"SAFETY"``)
    exercises DSPy's truncation and in-band error paths.
    """

    fields: Mapping[str, Any] | None = None
    text: str | None = None
    finish_reason: str = "STOP"


@dataclass(frozen=True, slots=True)
class Fail:
    """Answer the next call with HTTP ``status`` and Gemini's error body for it.

    ``retry_after`` adds the RetryInfo detail real Gemini sends on 429 and a
    ``Retry-After`` header, which real Gemini does not send but DSPy honours
    (it is how a test keeps DSPy's retry back-off at zero seconds).
    """

    status: int
    message: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without an answer; ``partial`` sends half of it first."""

    partial: bool = False


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait ``seconds`` before answering, then do ``then`` (default: the normal answer)."""

    seconds: float
    then: Reply | Fail | Drop | None = None


ScriptItem = Reply | Fail | Delay | Drop
ScriptInput = ScriptItem | Mapping[str, Any] | str


def as_item(item: ScriptInput) -> ScriptItem:
    if isinstance(item, Reply | Fail | Delay | Drop):
        return item
    if isinstance(item, str):
        return Reply(text=item)
    if isinstance(item, Mapping):
        return Reply(fields=dict(item))
    raise TypeError(f"cannot script {type(item).__name__!r}: pass a Reply, Fail, Delay, Drop, dict or str")


def item_to_json(item: ScriptItem) -> dict[str, Any]:
    if isinstance(item, Reply):
        return {"kind": "reply", "fields": item.fields, "text": item.text, "finish_reason": item.finish_reason}
    if isinstance(item, Fail):
        return {"kind": "fail", "status": item.status, "message": item.message, "retry_after": item.retry_after}
    if isinstance(item, Drop):
        return {"kind": "drop", "partial": item.partial}
    then = item_to_json(item.then) if item.then is not None else None
    return {"kind": "delay", "seconds": item.seconds, "then": then}


def item_from_json(data: Mapping[str, Any]) -> ScriptItem:
    kind = data.get("kind")
    if kind == "reply":
        return Reply(data.get("fields"), data.get("text"), str(data.get("finish_reason") or "STOP"))
    if kind == "fail":
        return Fail(int(data["status"]), data.get("message"), data.get("retry_after"))
    if kind == "drop":
        return Drop(bool(data.get("partial", False)))
    if kind == "delay":
        then = data.get("then")
        nested = item_from_json(then) if isinstance(then, Mapping) else None
        if isinstance(nested, Delay):
            raise ValueError("a Delay cannot be followed by another Delay")
        return Delay(float(data["seconds"]), nested)
    raise ValueError(f"unknown script item kind {kind!r}; expected reply, fail, drop or delay")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake saw it; the API key is kept apart from headers and query."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    api_key: str | None
    key_source: Literal["header", "query"] | None
    model: str | None = None
    action: str | None = None  # "generateContent" or "streamGenerateContent"
    sse: bool = False

    @property
    def stream(self) -> bool:
        """True for ``streamGenerateContent``, SSE or not."""
        return self.action == "streamGenerateContent"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, as the control API serves it."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "api_key": self.api_key,
            "key_source": self.key_source,
            "model": self.model,
            "action": self.action,
            "sse": self.sse,
        }
