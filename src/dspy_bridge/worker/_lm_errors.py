"""Translate DSPy's LM and adapter exceptions into the wire taxonomy, at one boundary.

DSPy 3.4 already projects every engine failure (its vendored lm15 transport, or LiteLLM when
that engine is chosen) onto ``dspy.utils.exceptions``; this module maps those classes, most
specific first, onto ``ErrorType`` with a truthful ``retryable`` flag, and scrubs anything
key-shaped out of the message. ``retryable`` here means "worth retrying later": DSPy has
already retried 429/5xx/timeouts ``num_retries`` times before the error reaches us.

    DSPy exception (3.4)                        type                 retryable
    AdapterParseError                           adapter_parse_error  no
    LMAuthError (401/403)                       lm_auth              no
    LMInvalidRequestError "API key not valid"   lm_auth              no   (Gemini answers 400)
    LMNotConfiguredError (no key anywhere)      lm_auth              no
    LMRateLimitError (429)                      lm_rate_limited      yes
    LMTimeoutError (408/504), TimeoutError      lm_timeout           yes
    LMTransportError caused by a read timeout   lm_timeout           yes  (lm15's timeout=...)
    LMServerError (5xx)                         lm_error             yes
    LMTransportError (refused/reset/dropped)    lm_error             yes
    LMLockTimeoutError (local credential lock)  lm_error             yes
    LMProviderError other, status >= 500        lm_error             yes
    LMBillingError, ContextWindowExceeded,
    LMUnsupportedModelError, other 4xx          lm_error             no
    LMUnexpectedError caused by a timeout       lm_timeout           yes
    other LMError (config, unsupported, ...)    lm_error             no
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from dspy import (  # DSPy's public names (3.4 exports every LM exception at the top level)
    AdapterParseError,
    LMAuthError,
    LMError,
    LMInvalidRequestError,
    LMLockTimeoutError,
    LMNotConfiguredError,
    LMProviderError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
    LMUnexpectedError,
)

from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.worker._base import HandlerFailure

__all__ = ["REDACTED", "failure_for", "scrub"]

REDACTED = "[REDACTED]"
_KEY_SHAPES = re.compile(
    r"AIza[0-9A-Za-z_\-]{35}"  # Google API keys
    r"|sk-[0-9A-Za-z_\-]{16,}"  # OpenAI / Anthropic style secret keys (sk-..., sk-proj-..., sk-ant-...)
    r"|(?<=[?&]key=)[^&\s\"']+"  # a key passed as a URL query parameter
)
_INVALID_KEY_MARKERS = ("API key not valid", "API_KEY_INVALID", "invalid api key", "Incorrect API key")
_MAX_MESSAGE = 4000


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Replace the given secrets and anything key-shaped with ``[REDACTED]``."""
    for secret in secrets:
        if secret and len(secret) >= 4:  # a 1-3 character "key" would redact ordinary words
            text = text.replace(secret, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)


def _caused_by_timeout(exc: BaseException) -> bool:
    """lm15 reports a socket read timeout as a transport error; the cause chain tells the truth."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 16 and current not in seen:
        if isinstance(current, TimeoutError) or type(current).__name__.endswith("Timeout"):
            return True
        seen.append(current)
        current = current.__cause__ or current.__context__
    return False


def _classify(exc: BaseException) -> tuple[ErrorType, bool]:
    if isinstance(exc, AdapterParseError):
        return ErrorType.ADAPTER_PARSE_ERROR, False
    if isinstance(exc, LMAuthError | LMNotConfiguredError):
        return ErrorType.LM_AUTH, False
    if isinstance(exc, LMRateLimitError):
        return ErrorType.LM_RATE_LIMITED, True
    if isinstance(exc, LMTimeoutError | TimeoutError):
        return ErrorType.LM_TIMEOUT, True
    if isinstance(exc, LMTransportError | LMUnexpectedError) and _caused_by_timeout(exc):
        return ErrorType.LM_TIMEOUT, True
    if isinstance(exc, LMInvalidRequestError):
        message = str(exc).lower()
        if any(marker.lower() in message for marker in _INVALID_KEY_MARKERS):
            return ErrorType.LM_AUTH, False
        return ErrorType.LM_ERROR, False
    if isinstance(exc, LMServerError | LMTransportError | LMLockTimeoutError):
        return ErrorType.LM_ERROR, True
    if isinstance(exc, LMProviderError):
        status = exc.status
        return ErrorType.LM_ERROR, isinstance(status, int) and status >= 500
    return ErrorType.LM_ERROR, False


def failure_for(exc: BaseException, *, secrets: Iterable[str | None] = ()) -> HandlerFailure | None:
    """The ``HandlerFailure`` for an LM or adapter exception, or ``None`` if it is neither."""
    if not isinstance(exc, LMError | AdapterParseError | TimeoutError):
        return None
    error_type, retryable = _classify(exc)
    secrets = list(secrets)
    message = scrub(str(exc) or type(exc).__name__, secrets)
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + " ...[truncated]"
    details: dict[str, Any] = {"exception": f"{type(exc).__module__}.{type(exc).__qualname__}"}
    for name in ("code", "status", "provider", "provider_code", "request_id", "retry_after", "model"):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            details[name] = scrub(value, secrets)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            details[name] = value
    if isinstance(exc, AdapterParseError):
        details["adapter"] = exc.adapter_name
    return HandlerFailure(error_type, message, retryable=retryable, details=details)
