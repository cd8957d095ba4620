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
    the proxy's "quota spent" 429               lm_rate_limited      no   (waiting will not help this run)

Gemini's answers that carry no text get a message naming why, and what to do (``_explain``): an
empty candidate at MAX_TOKENS (a thinking model spent its budget thinking; DSPy only sees an empty
answer it cannot parse), SAFETY and other blocking finish reasons, a blocked prompt, a rejected key
(API_KEY_INVALID, never printed), and FAILED_PRECONDITION (a region the API does not serve).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from dspy.utils.exceptions import (
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

__all__ = ["REDACTED", "failure_for", "scrub", "watch_truncation"]

REDACTED = "[REDACTED]"
_KEY_SHAPES = re.compile(
    r"AIza[0-9A-Za-z_\-]{35}"  # Google API keys
    r"|sk-[0-9A-Za-z_\-]{16,}"  # OpenAI / Anthropic style secret keys (sk-..., sk-proj-..., sk-ant-...)
    r"|(?<=[?&]key=)[^&\s\"']+"  # a key passed as a URL query parameter
)
_INVALID_KEY_MARKERS = ("API key not valid", "API_KEY_INVALID", "invalid api key", "Incorrect API key")
_QUOTA_SPENT_MARKER = "dspy-bridge cassette proxy: upstream quota"  # proxy/_ratelimit.py's refusal
_MAX_MESSAGE = 4000
_BAD_KEY_REMEDY = (
    "Gemini rejected the API key (400 INVALID_ARGUMENT, reason API_KEY_INVALID; the key is not shown): check "
    "the key given to configure_lm(api_key=...), or, when recording through the cassette proxy, GEMINI_API_KEY "
    "in the environment of the pytest run. Not retried: the same key fails the same way"
)
_BLOCKED_REMEDY = (
    "Gemini blocked the answer (finishReason {reason}) and sent no text: rephrase the input, or relax "
    "safety_settings in configure_lm if the content is legitimate"
)
_PROMPT_BLOCKED_REMEDY = (
    "Gemini refused the prompt itself (promptFeedback.blockReason) and sent no candidate: rephrase the input, "
    "or relax safety_settings in configure_lm if the content is legitimate"
)
_REGION_REMEDY = (
    "Gemini refused the call (400 FAILED_PRECONDITION): the API is not served to this location on this "
    "project's tier. Enable billing on the project, or record from a supported region"
)
_TRUNCATED_REMEDY = (
    "Gemini stopped at the output limit (finishReason MAX_TOKENS) {where}; a thinking model can spend the "
    "whole budget on thoughts. Raise max_tokens in configure_lm (max_tokens=...), or lower the thinking "
    "budget (reasoning_effort=...)"
)


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
    if isinstance(exc, LMRateLimitError) and _QUOTA_SPENT_MARKER in str(exc):
        return ErrorType.LM_RATE_LIMITED, False
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


_TRUNCATIONS: ContextVar[list[str] | None] = ContextVar("dspy_bridge_truncations", default=None)


class _TruncationWatch(logging.Filter):
    """DSPy says "LM response was truncated" (finish reason "length") only in a log line, and the worker runs
    with history off: this filter notes the line for the run in progress (a ContextVar, so runs on other
    threads are not mixed up)."""

    def filter(self, record: logging.LogRecord) -> bool:
        seen = _TRUNCATIONS.get()
        if seen is not None and "truncated" in str(record.msg):
            seen.append(record.getMessage())
        return True


_WATCH = _TruncationWatch()


@contextlib.contextmanager
def watch_truncation() -> Iterator[list[str]]:
    """Collect DSPy's truncation warnings raised inside the block (one per LM call cut at MAX_TOKENS)."""
    logger = logging.getLogger("dspy.clients.lm")
    if _WATCH not in logger.filters:
        logger.addFilter(_WATCH)
    seen: list[str] = []
    token = _TRUNCATIONS.set(seen)
    try:
        yield seen
    finally:
        _TRUNCATIONS.reset(token)


def _explain(exc: BaseException, truncated: bool) -> tuple[str, dict[str, Any]] | None:
    """A message saying what Gemini did and what to do next, with details, for the cases DSPy words vaguely."""
    code = getattr(exc, "provider_code", None)
    text = str(exc)
    if isinstance(exc, AdapterParseError):
        if not truncated:
            return None
        empty = not str(getattr(exc, "lm_response", "") or "").strip()
        where = "before writing any answer text" if empty else "in the middle of the answer"
        return _TRUNCATED_REMEDY.format(where=where), {"finish_reason": "MAX_TOKENS"}
    if isinstance(exc, LMInvalidRequestError) and any(m.lower() in text.lower() for m in _INVALID_KEY_MARKERS):
        return _BAD_KEY_REMEDY, {"reason": "API_KEY_INVALID"}
    if code == "promptFeedback":
        return _PROMPT_BLOCKED_REMEDY, {"block_reason": text.rpartition("Prompt blocked: ")[2] or None}
    in_band = isinstance(exc, LMInvalidRequestError) and getattr(exc, "status", None) is None  # no HTTP error
    if in_band and isinstance(code, str) and code.isupper():  # lm15 puts the finishReason in provider_code
        return _BLOCKED_REMEDY.format(reason=code), {"finish_reason": code}
    if code == "FAILED_PRECONDITION":
        return _REGION_REMEDY, {}
    return None


def failure_for(
    exc: BaseException, *, secrets: Iterable[str | None] = (), truncated: bool = False
) -> HandlerFailure | None:
    """The ``HandlerFailure`` for an LM or adapter exception, or ``None`` if it is neither.

    ``truncated``: an LM call of the run ended at MAX_TOKENS (``watch_truncation``), which tells a cut
    answer from one in the wrong format.
    """
    if not isinstance(exc, LMError | AdapterParseError | TimeoutError):
        return None
    error_type, retryable = _classify(exc)
    secrets = list(secrets)
    message = scrub(str(exc) or type(exc).__name__, secrets)
    if _QUOTA_SPENT_MARKER in message:  # the proxy's words say what to do; lm15's "wait and retry" would not
        message = message.split("\n\n  To fix:", 1)[0]
    details: dict[str, Any] = {"exception": f"{type(exc).__module__}.{type(exc).__qualname__}"}
    explained = _explain(exc, truncated)
    if explained is not None:
        remedy, extra = explained
        message = f"{remedy}. DSPy said: {message}"
        details.update({k: v for k, v in extra.items() if v is not None})
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + " ...[truncated]"
    for name in ("code", "status", "provider", "provider_code", "request_id", "retry_after", "model"):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            details[name] = scrub(value, secrets)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            details[name] = value
    if isinstance(exc, AdapterParseError):
        details["adapter"] = exc.adapter_name
    return HandlerFailure(error_type, message, retryable=retryable, details=details)
