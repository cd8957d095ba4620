"""Facts about Gemini's REST API that both the fake server and the cassette proxy must get right.

One table of error statuses (HTTP code → gRPC status name and Gemini's own default message), the
error body shape ``{"error": {"code", "message", "status"[, "details"]}}`` with the ``details``
real Gemini attaches (ErrorInfo, QuotaFailure, Help, RetryInfo), and the one reader of those details
(``rate_limit_of``) the proxy uses to honour a 429's RetryInfo. DSPy's error mapping reads the
status name first, so a wrong one would surface as the wrong exception.

Sources: https://ai.google.dev/gemini-api/docs/troubleshooting (the table of status codes),
https://ai.google.dev/gemini-api/docs/rate-limits, and 429 bodies recorded from the real API in public
issue threads (google-gemini/gemini-cli#8437, langgenius/dify#19838, continuedev/continue#9570): a
QuotaFailure with ``violations[{quotaMetric, quotaId, quotaDimensions, quotaValue}]``, a Help link, and
a RetryInfo ``retryDelay`` like ``"36s"`` — and **no** ``Retry-After`` header.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GEMINI_ERRORS",
    "GRPC_MESSAGES",
    "PER_MINUTE_QUOTA",
    "RateLimit",
    "gemini_error_body",
    "quota_details",
    "rate_limit_of",
]

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

# Status names whose default message differs from the HTTP code's: 400 FAILED_PRECONDITION is what Gemini
# answers from a region the free tier does not serve (https://ai.google.dev/gemini-api/docs/troubleshooting).
GRPC_MESSAGES: dict[str, str] = {
    "FAILED_PRECONDITION": "User location is not supported for the API use.",
}

PER_MINUTE_QUOTA = (
    "generativelanguage.googleapis.com/generate_content_free_tier_requests",
    "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
)  # metric and id of the quota a free-tier key runs out of first (google-gemini/gemini-cli#8437)
_RATE_LIMITS_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"


def quota_details(
    model: str, *, quota_metric: str = PER_MINUTE_QUOTA[0], quota_id: str = PER_MINUTE_QUOTA[1], limit: int = 10
) -> list[dict[str, Any]]:
    """The QuotaFailure and Help details of a real 429 (RetryInfo is added by ``gemini_error_body``)."""
    violation = {
        "quotaMetric": quota_metric,
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": str(limit),
    }
    return [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{"description": "Learn more about Gemini API quotas", "url": _RATE_LIMITS_URL}],
        },
    ]


def gemini_error_body(
    status: int,
    message: str | None = None,
    *,
    grpc_status: str | None = None,
    details: list[dict[str, Any]] | None = None,
    retry_after: float | None = None,
) -> dict[str, Any]:
    """The JSON body Gemini sends with an HTTP error ``status``.

    ``retry_after`` appends the RetryInfo detail real Gemini puts last in a 429 (``"36s"``). It is a
    body field only: Gemini sends no ``Retry-After`` header.
    """
    default_status, default_message = GEMINI_ERRORS.get(status, ("UNKNOWN", "Unknown error."))
    name = grpc_status or default_status
    error: dict[str, Any] = {
        "code": status,
        "message": message or GRPC_MESSAGES.get(name) or default_message,
        "status": name,
    }
    details = list(details or ())
    if retry_after is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"})
    if details:
        error["details"] = details
    return {"error": error}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What a 429 body says: how long to wait (RetryInfo) and which quota ran out (QuotaFailure)."""

    retry_delay: float | None  # seconds, from RetryInfo.retryDelay; None when the body has no RetryInfo
    quota_ids: tuple[str, ...] = ()
    quota_metrics: tuple[str, ...] = ()
    message: str = ""

    @property
    def daily(self) -> bool:
        """A per-day quota: waiting a minute will not help."""
        return any("PerDay" in quota_id for quota_id in self.quota_ids)

    def describe(self) -> str:
        """``quota GenerateRequestsPerDay… (metric …)``, or what Gemini said when it named no quota."""
        if not self.quota_ids:
            return "an unnamed quota" + (f" ({self.message[:200]})" if self.message else "")
        named = [
            f"{quota_id} (metric {metric})" if metric else quota_id
            for quota_id, metric in zip(self.quota_ids, self.quota_metrics, strict=True)
        ]
        return "quota " + ", ".join(dict.fromkeys(named))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)s\s*$")  # protobuf Duration in JSON: "36s", "0.2s"


def rate_limit_of(body: bytes | str) -> RateLimit | None:
    """The RateLimit of a Gemini 429 body, or None when the body is not Gemini's error JSON."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, list) and error and isinstance(error[0], dict):  # some front ends wrap it in a list
        error = error[0].get("error")
    if not isinstance(error, dict):
        return None
    delay: float | None = None
    ids: list[str] = []
    metrics: list[str] = []
    for detail in error.get("details") or ():
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.RetryInfo"):
            found = _DURATION.match(str(detail.get("retryDelay", "")))
            if found and math.isfinite(float(found.group(1))):
                delay = float(found.group(1))
        elif kind.endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations") or ():
                if isinstance(violation, dict) and violation.get("quotaId"):
                    ids.append(str(violation["quotaId"]))
                    metrics.append(str(violation.get("quotaMetric") or ""))
    return RateLimit(delay, tuple(ids), tuple(metrics), str(error.get("message") or ""))
