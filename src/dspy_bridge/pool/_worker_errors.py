"""A worker's stderr tail, and the errors its requests get when it ends: ``WorkerCrashed`` (with exit code, signal, stderr tail and
the request it held), ``WorkerStartupFailed`` before its Hello, or ``PoolClosed`` when the pool stopped it.

A mixin of ``WorkerHandle``, kept apart so the handle's module stays about I/O and state; every path that
fails a request (the reader at exit, ``SyncPool``'s direct lane, ``aclose``) asks ``error_for``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from dspy_bridge._exceptions import PoolClosed, ProtocolError, VersionMismatch, WorkerCrashed, WorkerStartupFailed
from dspy_bridge.pool._errors import ExitInfo, describe_exit

if TYPE_CHECKING:
    from dspy_bridge.protocol._messages import Goodbye

__all__ = ["WorkerErrors"]

log = logging.getLogger("dspy_bridge.pool")


class WorkerErrors:
    """What ``WorkerHandle`` knows about how it ended (its stderr too), turned into the error each request gets."""

    worker_id: str
    pid: int
    exit_info: ExitInfo | None
    goodbye: Goodbye | None
    _kill_reason: str | None
    _stop_reason: str | None
    _protocol_error: ProtocolError | None
    _stderr_tail: deque[str]

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a single line above the stream limit: keep going
                self._stderr_tail.append("[stderr line too long; truncated]")
                continue
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(text)
            log.debug("worker %s stderr: %s", self.worker_id, text)

    def _tail_suffix(self) -> str:
        tail = self.stderr_tail
        return f"\n--- last lines of the worker's stderr ---\n{tail}" if tail else ""

    def _startup_error(self) -> BaseException:
        if isinstance(self._protocol_error, VersionMismatch):
            return self._protocol_error
        info = self.exit_info or describe_exit(None)
        why = self._kill_reason or self._stop_reason or info.text
        error = WorkerStartupFailed(
            f"worker {self.worker_id} (pid {self.pid}) ended before its hello: {why}" + self._tail_suffix(),
            worker_pid=self.pid,
            exit_code=info.exit_code,
            signal_name=info.signal_name,
        )
        error.__cause__ = self._protocol_error
        return error

    def _crash_error(self, request_id: int | None, command: str | None, session_id: str | None) -> WorkerCrashed:
        info = self.exit_info or describe_exit(None)
        what = f" while request {request_id} ({command}) was in flight" if request_id is not None else ""
        if self._kill_reason is not None:
            why = f"was killed by the pool ({self._kill_reason})"
        elif self._protocol_error is not None:
            why = f"sent an invalid frame and was killed ({self._protocol_error.message})"
        elif self.goodbye is not None:
            why = f"said goodbye ({self.goodbye.reason}) and {info.text}"
        else:
            why = info.text
        error = WorkerCrashed(
            f"worker {self.worker_id} (pid {self.pid}) {why}{what}",
            exit_code=info.exit_code,
            signal_name=info.signal_name,
            stderr_tail=self.stderr_tail,
            request_id=request_id,
            worker_pid=self.pid,
            session_id=session_id,
        )
        error.__cause__ = self._protocol_error
        return error

    def error_for(self, request_id: int, command: str, session_id: str | None) -> BaseException:
        """The error a request it held gets: PoolClosed if we stopped it, else WorkerCrashed."""
        if self._stop_reason is not None:
            return PoolClosed(
                f"worker {self.worker_id} was stopped ({self._stop_reason}) while request {request_id} "
                f"({command}) was in flight",
                request_id=request_id,
                worker_pid=self.pid,
                session_id=session_id,
            )
        return self._crash_error(request_id, command, session_id)
