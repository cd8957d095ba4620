"""Every error dspy-bridge raises, in one tree.

This module is a leaf: it imports nothing else of ours, so every layer (even ``protocol/``,
which otherwise imports nothing of ours) may raise these.

    BridgeError                  anything that went wrong inside dspy-bridge
    ├── ProtocolError            bytes on a pipe did not follow the wire protocol
    │   ├── FrameTooLarge        a length prefix above the configured maximum
    │   ├── MalformedFrame       truncated frame, undecodable payload, or wrong shape
    │   └── VersionMismatch      the worker speaks another protocol version
    ├── WorkerError              a worker process failed
    │   ├── WorkerCrashed        it died (exit code / signal, stderr tail, in-flight request)
    │   ├── WorkerStartupFailed  it never said hello
    │   └── HandlerError         it answered with an error Response (remote traceback as cause)
    ├── PoolError                the pool refused the work
    │   ├── PoolClosed           the pool was closed (by us: not a crash)
    │   └── CircuitOpen          too many recent crashes; fails fast (chained to the last one)
    ├── RequestTimeout           a request outlived its deadline; its worker was replaced
    └── CassetteError            a bridge or HTTP cassette problem
        ├── CassetteMiss         no recorded interaction matches a request
        ├── CassetteCorrupt      a cassette file cannot be read or validated
        └── SecretLeak           a key-shaped string was found where none may be
    UsageError                   the plugin or CLI was used wrongly (own root, like httpx's InvalidURL)

Context such as ``request_id``, ``worker_pid`` and ``session_id`` is stamped onto any
``BridgeError`` by the pool (see ``pool/_errors.py``) and shown in ``str()``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "BridgeError",
    "CassetteCorrupt",
    "CassetteError",
    "CassetteMiss",
    "CircuitOpen",
    "FrameTooLarge",
    "HandlerError",
    "MalformedFrame",
    "PoolClosed",
    "PoolError",
    "ProtocolError",
    "RemoteTraceback",
    "RequestTimeout",
    "SecretLeak",
    "UsageError",
    "VersionMismatch",
    "WorkerCrashed",
    "WorkerError",
    "WorkerStartupFailed",
]

_CONTEXT_KEYS = ("request_id", "worker_pid", "session_id")


class BridgeError(Exception):
    """Base of every error raised by dspy-bridge."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.request_id: int | None = context.pop("request_id", None)
        self.worker_pid: int | None = context.pop("worker_pid", None)
        self.session_id: str | None = context.pop("session_id", None)
        self.details: dict[str, Any] = context

    def stamp(self, **context: Any) -> None:
        """Attach request/worker/session context, keeping what is already set."""
        for key in _CONTEXT_KEYS:
            if getattr(self, key) is None and context.get(key) is not None:
                setattr(self, key, context[key])

    def __str__(self) -> str:
        parts = [f"{key}={getattr(self, key)}" for key in _CONTEXT_KEYS if getattr(self, key) is not None]
        return f"{self.message} [{', '.join(parts)}]" if parts else self.message


class ProtocolError(BridgeError):
    """Bytes on a pipe did not follow the wire protocol; the peer cannot be trusted any more."""


class FrameTooLarge(ProtocolError):
    """A frame's length prefix exceeds the configured maximum (checked before allocating)."""


class MalformedFrame(ProtocolError):
    """A frame was truncated, its payload undecodable, or its content of the wrong shape."""


class VersionMismatch(ProtocolError):
    """The worker's Hello announced a protocol version this host does not speak."""


class WorkerError(BridgeError):
    """A worker process failed."""


class WorkerCrashed(WorkerError):
    """A worker died; carries pid, exit code or signal name, the in-flight request id and its stderr tail."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        signal_name: str | None = None,
        stderr_tail: str = "",
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.exit_code = exit_code
        self.signal_name = signal_name
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        text = super().__str__()
        if self.stderr_tail:
            text += "\n--- last lines of the worker's stderr ---\n" + self.stderr_tail
        return text


class WorkerStartupFailed(WorkerError):
    """A worker exited or timed out before sending its Hello frame."""


class RemoteTraceback(Exception):
    """The traceback text of an exception raised inside a worker (set as a HandlerError's cause)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class HandlerError(WorkerError):
    """The worker answered a request with an error Response; ``type`` is from the error taxonomy."""

    def __init__(
        self,
        message: str,
        *,
        type: str = "internal",
        retryable: bool = False,
        error_details: dict[str, Any] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.type = type
        self.retryable = retryable
        self.error_details: dict[str, Any] = error_details or {}

    def __str__(self) -> str:
        return f"[{self.type}] {super().__str__()}"


class PoolError(BridgeError):
    """The pool refused the work."""


class PoolClosed(PoolError):
    """The pool is closing or closed; this is a planned stop, never a crash."""


class CircuitOpen(PoolError):
    """Too many recent worker crashes or start failures; requests fail fast until a probe succeeds."""


class RequestTimeout(BridgeError):
    """A request outlived its deadline; the stuck worker was killed and will be replaced."""


class CassetteError(BridgeError):
    """A bridge or HTTP cassette problem."""


class CassetteMiss(CassetteError):
    """No recorded interaction matches the request (the message explains the closest one and how to record)."""


class CassetteCorrupt(CassetteError):
    """A cassette file cannot be parsed or validated; the message names the file, the position and the fix."""


class SecretLeak(CassetteError):
    """A key-shaped string was found in a cassette, log line or message where none may be."""


class UsageError(Exception):
    """The pytest plugin, the CLI or the API was used wrongly; the message says how to fix it."""
