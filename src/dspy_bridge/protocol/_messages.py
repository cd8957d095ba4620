"""The messages of the wire protocol, as pydantic models (validated on the host side).

Field names follow DSPex's bridge (``id``/``command``/``args``) so a DSPex-style host needs
little change. The worker builds and reads plain dicts of exactly these shapes (pydantic stays
off its start-up path); the host validates every frame it receives with ``parse_worker_message``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dspy_bridge._exceptions import MalformedFrame
from dspy_bridge.protocol._constants import PROTOCOL_VERSION
from dspy_bridge.protocol._taxonomy import ErrorType

__all__ = [
    "PROTOCOL_VERSION",
    "Chunk",
    "ErrorInfo",
    "Goodbye",
    "Hello",
    "Request",
    "Response",
    "WorkerMessage",
    "parse_request",
    "parse_worker_message",
]

_UINT64_MAX = 2**64 - 1


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Hello(_Message):
    """The worker's first frame, pushed without being asked."""

    type: Literal["hello"] = "hello"
    protocol: str
    worker_id: str
    pid: Annotated[int, Field(strict=True)]
    mode: Literal["real", "mock"]
    codec: Literal["msgpack", "json"]
    capabilities: list[str] = Field(default_factory=list)
    python_version: str
    dspy_version: str | None = None


class Request(_Message):
    """Host → worker. ``id`` correlates the Response; responses may come back out of order."""

    type: Literal["request"] = "request"
    id: Annotated[int, Field(ge=0, le=_UINT64_MAX, strict=True)]
    command: Annotated[str, Field(min_length=1)]
    args: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)


class ErrorInfo(_Message):
    """Why a request failed; ``type`` is from the fixed taxonomy in ``ErrorType``."""

    type: ErrorType
    message: str
    retryable: bool = False
    details: dict[str, Any] | None = None


class Response(_Message):
    """Worker → host: exactly one per Request, carrying either ``result`` or ``error``."""

    type: Literal["response"] = "response"
    id: Annotated[int, Field(ge=0, le=_UINT64_MAX, strict=True)] | None
    ok: Annotated[bool, Field(strict=True)]
    result: Any = None
    error: ErrorInfo | None = None
    elapsed_ms: float = 0.0

    @model_validator(mode="after")
    def _error_iff_not_ok(self) -> Response:
        if self.ok and self.error is not None:
            raise ValueError("an ok response must not carry an error")
        if not self.ok and self.error is None:
            raise ValueError("a failed response must carry an error")
        return self


class Chunk(_Message):
    """Worker → host: one piece of an output field of a streamed request, sent before its Response.

    Only a request that asked for it (``execute_program`` with ``stream: true``, to a worker whose
    Hello lists the ``stream`` capability) ever gets chunks; they arrive in the order they were made.
    """

    type: Literal["chunk"] = "chunk"
    id: Annotated[int, Field(ge=0, le=_UINT64_MAX, strict=True)]
    field: Annotated[str, Field(strict=True)]
    text: Annotated[str, Field(strict=True)]


class Goodbye(_Message):
    """The worker's last frame before a planned exit, so the exit is not read as a crash."""

    type: Literal["goodbye"] = "goodbye"
    worker_id: str
    pid: Annotated[int, Field(strict=True)]
    reason: str


WorkerMessage = Hello | Response | Chunk | Goodbye

_WORKER_MODELS: dict[str, type[Hello] | type[Response] | type[Chunk] | type[Goodbye]] = {
    "hello": Hello,
    "response": Response,
    "chunk": Chunk,
    "goodbye": Goodbye,
}


def _shape_error(what: str, exc: ValidationError) -> MalformedFrame:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )
    return MalformedFrame(f"{what} has the wrong shape: {problems}")


def parse_worker_message(data: dict[str, Any]) -> WorkerMessage:
    """Validate one decoded worker frame; a wrong shape is a ``MalformedFrame``, never a crash."""
    kind = data.get("type", "response")
    model = _WORKER_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise MalformedFrame(f"worker frame has unknown type {kind!r}; expected one of {sorted(_WORKER_MODELS)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _shape_error(f"{kind} frame", exc) from exc


def parse_request(data: dict[str, Any]) -> Request:
    """Validate one decoded host frame (used by hosts and tools; the worker checks by hand)."""
    try:
        return Request.model_validate(data)
    except ValidationError as exc:
        raise _shape_error("request frame", exc) from exc
