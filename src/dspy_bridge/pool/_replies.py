"""A worker's answer as the request path uses it, read without pydantic when it is the common shape.

Nearly every frame a pool reads is a successful Response: ``{"type": "response", "id": int, "ok": true,
"result": ..., "elapsed_ms": float}``. ``fast_reply`` checks exactly what the ``Response`` model would
(strict int id in range, strict bool, no error beside ``ok``, a numeric ``elapsed_ms``) by hand, in well
under a microsecond; anything else (an error, an odd field) goes through the pydantic models, so a wrong
shape is still a ``MalformedFrame`` naming the field.
"""

from __future__ import annotations

from typing import Any

from dspy_bridge.protocol._messages import ErrorInfo, Response

__all__ = ["Reply", "fast_reply", "reply_from"]

_UINT64_MAX = 2**64 - 1


class Reply:
    """What a request's future settles with: ``ok`` and ``result``, or the validated ``error``."""

    __slots__ = ("error", "id", "ok", "result")

    def __init__(self, request_id: int | None, ok: bool, result: Any, error: ErrorInfo | None) -> None:
        self.id = request_id
        self.ok = ok
        self.result = result
        self.error = error

    def __repr__(self) -> str:
        return f"<Reply {self.id} ok={self.ok}>"


def fast_reply(data: dict[str, Any]) -> Reply | None:
    """A successful Response checked by hand, or None (then validate with the models)."""
    request_id = data.get("id")
    if (
        data.get("ok") is True
        and type(request_id) is int
        and 0 <= request_id <= _UINT64_MAX
        and data.get("error") is None
        and type(data.get("elapsed_ms", 0.0)) in (float, int)
        and data.get("type", "response") == "response"
    ):
        return Reply(request_id, True, data.get("result"), None)
    return None


def reply_from(response: Response) -> Reply:
    return Reply(response.id, response.ok, response.result, response.error)
