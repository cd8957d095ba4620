"""Facts about Gemini's REST API that both the fake server and the cassette proxy must get right.

One table of error statuses (HTTP code → gRPC status name and Gemini's own default message) and the
error body shape ``{"error": {"code", "message", "status"[, "details"]}}``; DSPy's error mapping reads
the status name first, so a wrong one would surface as the wrong exception.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GEMINI_ERRORS", "gemini_error_body", "retry_headers"]

GEMINI_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential. "
        "See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    ),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    ),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    502: ("UNAVAILABLE", "Bad gateway."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def gemini_error_body(
    status: int,
    message: str | None = None,
    *,
    grpc_status: str | None = None,
    details: list[dict[str, Any]] | None = None,
    retry_after: float | None = None,
) -> dict[str, Any]:
    """The JSON body Gemini sends with an HTTP error ``status``.

    ``retry_after`` appends the RetryInfo detail real Gemini sends with a 429 (see ``retry_headers``).
    """
    default_status, default_message = GEMINI_ERRORS.get(status, ("UNKNOWN", "Unknown error."))
    error: dict[str, Any] = {
        "code": status,
        "message": message or default_message,
        "status": grpc_status or default_status,
    }
    details = list(details or ())
    if retry_after is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"})
    if details:
        error["details"] = details
    return {"error": error}


def retry_headers(retry_after: float | None) -> dict[str, str]:
    """A ``Retry-After`` header for an error answer (real Gemini sends none, but DSPy honours it)."""
    return {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
