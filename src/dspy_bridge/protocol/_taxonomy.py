"""The fixed error taxonomy carried in ``ErrorInfo.type`` (documented in docs/protocol.md)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RETRYABLE_BY_DEFAULT", "ErrorType"]


class ErrorType(StrEnum):
    INVALID_REQUEST = "invalid_request"  # the request's shape or args are wrong
    UNKNOWN_COMMAND = "unknown_command"  # no handler for this command in this mode
    PROGRAM_NOT_FOUND = "program_not_found"  # program_id unknown in this session
    LM_NOT_CONFIGURED = "lm_not_configured"  # execute before configure_lm
    LM_AUTH = "lm_auth"  # the LM provider refused the key (401/403)
    LM_ERROR = "lm_error"  # any other LM provider failure (4xx, 5xx)
    LM_RATE_LIMITED = "lm_rate_limited"  # 429 after DSPy's own retries
    LM_TIMEOUT = "lm_timeout"  # the LM call timed out
    ADAPTER_PARSE_ERROR = "adapter_parse_error"  # the LM answered but not in the adapter's format
    CASSETTE_MISS = "cassette_miss"  # mock worker: no recorded answer
    PROTOCOL_ERROR = "protocol_error"  # the frame itself was unacceptable (e.g. no id)
    INTERNAL = "internal"  # an unexpected exception in a handler (traceback in details)


RETRYABLE_BY_DEFAULT: frozenset[ErrorType] = frozenset({ErrorType.LM_RATE_LIMITED, ErrorType.LM_TIMEOUT})
