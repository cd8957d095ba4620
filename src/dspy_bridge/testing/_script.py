"""What a test tells the fake Gemini to do (script items) and what the fake saw (recorded requests).

Plain frozen dataclasses, plus their JSON form for the control API of a fake running as its own
process (``/__fake__/enqueue``, ``/__fake__/requests``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BLOCKING_FINISH_REASONS",
    "Delay",
    "Drop",
    "Empty",
    "Fail",
    "PromptBlocked",
    "RecordedRequest",
    "Reply",
    "ScriptInput",
    "ScriptItem",
    "as_item",
    "item_from_json",
    "item_to_json",
]


# Finish reasons that end a candidate without content (https://ai.google.dev/api/generate-content#FinishReason):
# real Gemini sends no text with them, so a Reply carrying text cannot use one (script Empty).
BLOCKING_FINISH_REASONS = frozenset(
    {"SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the next call with these field values (others generated) or with this exact text.

    ``Reply({"answer": "42"})`` fills ``answer`` and generates the rest in the
    layout the prompt asked for; ``Reply(text="...")`` is sent verbatim.
    ``finish_reason="MAX_TOKENS"`` sends the text as a truncated answer (what a model
    without thinking does). ``thoughts`` answers as a thinking model asked for its
    thoughts does: a ``"thought": true`` part first, then the answer with a ``thoughtSignature``.
    """

    fields: Mapping[str, Any] | None = None
    text: str | None = None
    finish_reason: str = "STOP"
    thoughts: str | None = None

    def __post_init__(self) -> None:
        if self.finish_reason in BLOCKING_FINISH_REASONS:
            raise ValueError(
                f"real Gemini sends no text with finishReason {self.finish_reason}: "
                f"script Empty({self.finish_reason!r}) instead of a Reply"
            )


@dataclass(frozen=True, slots=True)
class Empty:
    """Answer the next call with a candidate that has no text.

    ``Empty("MAX_TOKENS")``: a thinking model spent its whole output budget on thoughts
    (``content: {"role": "model"}`` with no ``parts``); ``Empty("SAFETY")`` (or another
    blocking reason): no ``content`` at all, with ``safetyRatings`` saying why.
    """

    finish_reason: str = "MAX_TOKENS"

    def __post_init__(self) -> None:
        if self.finish_reason != "MAX_TOKENS" and self.finish_reason not in BLOCKING_FINISH_REASONS:
            known = ", ".join(sorted({"MAX_TOKENS", *BLOCKING_FINISH_REASONS}))
            raise ValueError(
                f"Empty takes a finish reason that ends without text ({known}), not {self.finish_reason!r}"
            )


@dataclass(frozen=True, slots=True)
class PromptBlocked:
    """Refuse the prompt itself: no ``candidates``, and ``promptFeedback.blockReason`` saying why."""

    block_reason: str = "SAFETY"


@dataclass(frozen=True, slots=True)
class Fail:
    """Answer the next call with HTTP ``status`` and Gemini's error body for it.

    A 429 carries the QuotaFailure (``quota_id``, ``quota_metric``) and Help details real
    Gemini sends; ``retry_after`` adds its RetryInfo (``"retryDelay": "36s"``). Like real
    Gemini the fake never sends a ``Retry-After`` header, so DSPy backs off 1, 2, 4 s.
    ``grpc_status`` overrides the status name (``Fail(400, grpc_status="FAILED_PRECONDITION")``).
    """

    status: int
    message: str | None = None
    retry_after: float | None = None
    grpc_status: str | None = None
    quota_id: str | None = None
    quota_metric: str | None = None


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection without an answer; ``partial`` sends half of it first."""

    partial: bool = False


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait ``seconds`` before answering, then do ``then`` (default: the normal answer)."""

    seconds: float
    then: Reply | Empty | PromptBlocked | Fail | Drop | None = None


ScriptItem = Reply | Empty | PromptBlocked | Fail | Delay | Drop
ScriptInput = ScriptItem | Mapping[str, Any] | str
_FAIL_EXTRAS = ("grpc_status", "quota_id", "quota_metric")


def as_item(item: ScriptInput) -> ScriptItem:
    if isinstance(item, Reply | Empty | PromptBlocked | Fail | Delay | Drop):
        return item
    if isinstance(item, str):
        return Reply(text=item)
    if isinstance(item, Mapping):
        return Reply(fields=dict(item))
    raise TypeError(
        f"cannot script {type(item).__name__!r}: pass a Reply, Empty, PromptBlocked, Fail, Delay, Drop, dict or str"
    )


def item_to_json(item: ScriptItem) -> dict[str, Any]:
    if isinstance(item, Reply):
        return {
            "kind": "reply", "fields": item.fields, "text": item.text, "finish_reason": item.finish_reason,
            "thoughts": item.thoughts,
        }  # fmt: skip
    if isinstance(item, Empty):
        return {"kind": "empty", "finish_reason": item.finish_reason}
    if isinstance(item, PromptBlocked):
        return {"kind": "prompt_blocked", "block_reason": item.block_reason}
    if isinstance(item, Fail):
        extras = {name: getattr(item, name) for name in _FAIL_EXTRAS}
        return {
            "kind": "fail",
            "status": item.status,
            "message": item.message,
            "retry_after": item.retry_after,
            **extras,
        }
    if isinstance(item, Drop):
        return {"kind": "drop", "partial": item.partial}
    then = item_to_json(item.then) if item.then is not None else None
    return {"kind": "delay", "seconds": item.seconds, "then": then}


def item_from_json(data: Mapping[str, Any]) -> ScriptItem:
    kind = data.get("kind")
    if kind == "reply":
        finish = str(data.get("finish_reason") or "STOP")
        return Reply(data.get("fields"), data.get("text"), finish, data.get("thoughts"))
    if kind == "empty":
        return Empty(str(data.get("finish_reason") or "MAX_TOKENS"))
    if kind == "prompt_blocked":
        return PromptBlocked(str(data.get("block_reason") or "SAFETY"))
    if kind == "fail":
        extras = {name: data.get(name) for name in _FAIL_EXTRAS}
        return Fail(int(data["status"]), data.get("message"), data.get("retry_after"), **extras)
    if kind == "drop":
        return Drop(bool(data.get("partial", False)))
    if kind == "delay":
        then = data.get("then")
        nested = item_from_json(then) if isinstance(then, Mapping) else None
        if isinstance(nested, Delay):
            raise ValueError("a Delay cannot be followed by another Delay")
        return Delay(float(data["seconds"]), nested)
    raise ValueError(f"unknown script item kind {kind!r}; expected reply, empty, prompt_blocked, fail, drop or delay")


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
    action: str | None = None  # "generateContent", "streamGenerateContent", "countTokens", "embedContent", ...
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
