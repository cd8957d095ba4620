"""The pool's one error boundary: foreign errors become ours, and ours get their context.

``translate_pipe_errors`` turns what asyncio raises on a dead pipe into ``WorkerCrashed``;
``request_context`` stamps ``request_id``/``worker_pid``/``session_id`` onto any ``BridgeError``
passing through; ``handler_error`` rebuilds an error Response (or a recorded or stubbed error) as
``HandlerError`` with the remote traceback as its cause, and ``error_info`` is its inverse;
``usage_errors`` turns a command builder's ``CommandError`` into ``UsageError``; ``describe_exit``
names an exit code or signal the way a person would.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dspy_bridge._exceptions import BridgeError, HandlerError, RemoteTraceback, UsageError, WorkerCrashed
from dspy_bridge.protocol._commands import CommandError

__all__ = [
    "ExitInfo",
    "describe_exit",
    "error_info",
    "handler_error",
    "request_context",
    "translate_pipe_errors",
    "usage_errors",
]

_SIGNAL_HINTS = {
    signal.SIGKILL: "killed with SIGKILL (the OOM killer, a timeout kill by the pool, or kill -9)",
    signal.SIGSEGV: "segmentation fault (a C extension crashed; faulthandler output is in the stderr tail)",
    signal.SIGABRT: "aborted (an assertion in C code or a fatal Python error)",
    signal.SIGTERM: "terminated with SIGTERM",
    signal.SIGBUS: "bus error (memory mapping problem)",
}


class ExitInfo:
    """How a process ended: ``exit_code`` (>= 0) or ``signal_name``, and a sentence saying so."""

    __slots__ = ("exit_code", "signal_name", "text")

    def __init__(self, exit_code: int | None, signal_name: str | None, text: str) -> None:
        self.exit_code = exit_code
        self.signal_name = signal_name
        self.text = text

    def __repr__(self) -> str:
        return f"ExitInfo({self.text!r})"


def describe_exit(returncode: int | None) -> ExitInfo:
    """Turn a ``returncode`` (negative = signal, as asyncio reports it) into words and a signal name."""
    if returncode is None:
        return ExitInfo(None, None, "exit status unknown (the process could not be reaped)")
    if returncode >= 0:
        return ExitInfo(returncode, None, f"exited with code {returncode}")
    number = -returncode
    try:
        sig = signal.Signals(number)
    except ValueError:
        return ExitInfo(returncode, f"signal {number}", f"killed by signal {number}")
    hint = _SIGNAL_HINTS.get(sig, f"killed by {sig.name}")
    return ExitInfo(returncode, sig.name, f"{sig.name}: {hint}")


@contextmanager
def translate_pipe_errors(worker_id: str, pid: int | None) -> Iterator[None]:
    """A broken or cut pipe means the worker is gone: say ``WorkerCrashed``, chained to the OS error."""
    try:
        yield
    except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionResetError) as exc:
        raise WorkerCrashed(
            f"lost the pipe to worker {worker_id} ({type(exc).__name__}); it probably died", worker_pid=pid
        ) from exc


class request_context:
    """Stamp the request's context onto any ``BridgeError`` leaving the block (keeping what is set).

    A class, not ``@contextmanager``: it wraps every request, and a generator costs more.
    """

    __slots__ = ("request_id", "session_id", "worker_pid")

    def __init__(self, *, request_id: int | None, worker_pid: int | None, session_id: str | None) -> None:
        self.request_id = request_id
        self.worker_pid = worker_pid
        self.session_id = session_id

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, BridgeError):
            exc.stamp(request_id=self.request_id, worker_pid=self.worker_pid, session_id=self.session_id)


def handler_error(error: Any, **context: Any) -> HandlerError:
    """Build ``HandlerError`` from an ``ErrorInfo`` or its plain-map form (a cassette's or a stub's).

    A remote traceback in the details becomes its ``__cause__``.
    """
    if isinstance(error, Mapping):
        fields = error
    else:
        fields = {"type": error.type, "message": error.message, "retryable": error.retryable, "details": error.details}
    details: dict[str, Any] = dict(fields.get("details") or {})
    exc = HandlerError(
        str(fields.get("message", "error")),
        type=str(fields.get("type", "lm_error")),
        retryable=bool(fields.get("retryable", False)),
        error_details=details,
        **context,
    )
    traceback_text = details.get("traceback")
    if isinstance(traceback_text, str) and traceback_text:
        exc.__cause__ = RemoteTraceback(traceback_text)
    return exc


def error_info(exc: HandlerError) -> dict[str, Any]:
    """The plain-map form of an error Response (what cassettes store and observers compare)."""
    return {
        "type": exc.type,
        "message": exc.message,
        "retryable": exc.retryable,
        "details": exc.error_details or None,
    }


@contextmanager
def usage_errors() -> Iterator[None]:
    """Arguments a command builder refused are the caller's mistake: ``UsageError``, naming the argument."""
    try:
        yield
    except CommandError as exc:
        raise UsageError(str(exc)) from None
