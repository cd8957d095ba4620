"""``SyncPool``'s direct lane: a blocking request on the caller's own thread, under the pool's rules.

    caller thread                                               loop thread (owns the pool's state)
    ─────────────                                               ───────────────────────────────────
    request ─▶ may it go direct?  running, breaker closed, a worker that takes work now
               (the session's pinned one; anonymous: the least loaded), nobody queued for it
            ─▶ that worker's Channel lane ─▶ write the frame, poll, read its Response ─ no hop
            ◀─ result; a session's state command goes into its history (replayed on a re-pin)
    HandlerError, retryable, retries left ──────────────────────▶ Pool._resume: backoff, retries
    end of stream ─▶ wait for the loop to settle the exit ──────▶ the same WorkerCrashed as async
    past the timeout ─▶ the loop kills, counts, emits ──────────▶ the same RequestTimeout as async
    anything else (no pin yet, breaker not closed, streaming, a pool-wide state command, a full
    worker) ─▶ ``None``: the caller takes the ordinary path through the loop thread.

What the lane writes is its own: the worker's ``direct_in_flight`` and served counts (one lane holder at a
time), the pool's ``direct_counters`` (under this lane's lock), a session's history (a session is used from
one thread at a time). Everything else it only reads; what must change on the loop (a slot freed with
requests waiting, a recycle due, a kill) is handed over with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from dspy_bridge._exceptions import BridgeError, MalformedFrame, RequestTimeout
from dspy_bridge.pool._breaker import BreakerState
from dspy_bridge.pool._channel import Channel, LaneEnded
from dspy_bridge.pool._errors import handler_error, request_context
from dspy_bridge.pool._replies import fast_reply, reply_from
from dspy_bridge.protocol._commands import STATE_COMMANDS
from dspy_bridge.protocol._messages import Response, parse_worker_message

if TYPE_CHECKING:
    from dspy_bridge.pool._pool import Pool
    from dspy_bridge.pool._worker import WorkerHandle

__all__ = ["DirectLane"]

log = logging.getLogger("dspy_bridge.pool")

_LANE_WAIT = 0.05  # s to wait for a lane another thread holds before taking the ordinary path instead
_held = threading.local()  # how many lanes this thread holds (a signal handler may run while it holds one)


def _take_lane(handle: WorkerHandle | None) -> Channel | None:
    """``handle``'s channel with its lane held by this thread, or None (no channel, or another thread kept it)."""
    channel = handle.channel if handle is not None else None
    if channel is None or not channel.lane.acquire(timeout=_LANE_WAIT):
        return None
    _held.lanes = getattr(_held, "lanes", 0) + 1
    return channel


def _give_back(channel: Channel) -> None:
    """Release a lane ``_take_lane`` took, and let the loop read the worker again if it expects frames."""
    _held.lanes -= 1
    channel.lane.release()
    channel.leave()


def holding_lane() -> bool:
    """Whether this thread is inside a direct request (e.g. ``SyncPool.close()`` from a signal handler that
    interrupted one): waiting for the loop to finish closing would then wait for this very thread."""
    return getattr(_held, "lanes", 0) > 0


class DirectLane:
    """Blocking requests for ``SyncPool`` without the hop to its loop thread (see the module docstring)."""

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._counts = threading.Lock()
        self._eager_free = pool.config.max_requests_per_worker is not None

    def request(
        self,
        command: str,
        args: dict[str, Any],
        session_id: str | None,
        context: dict[str, Any] | None,
        timeout: float | None,
    ) -> tuple[Any] | None:
        """``(result,)``, or ``None`` when the request must take the ordinary path (nothing was sent)."""
        pool = self._pool
        if not pool.running or pool.breaker.state is not BreakerState.CLOSED:
            return None
        new_session = False
        if session_id is None:
            if command in STATE_COMMANDS:
                return None  # pool-wide state goes to every worker: the loop fans it out
            handle = self._least_loaded()
        else:
            handle = pool._sessions.pinned(session_id)
            if handle is None and pool._sessions.worker_of(session_id) is None and session_id not in pool._sessions:
                handle, new_session = self._least_loaded(), True  # a new session: nothing to replay
        channel = _take_lane(handle)
        if handle is None or channel is None:
            return None
        try:
            if not self._may_send(handle):
                return None
            if new_session and not pool._sessions.pin_new(session_id, handle):  # type: ignore[arg-type]
                return None
            request_id, data, ended = self._exchange(handle, command, args, session_id, context, timeout)
        finally:
            _give_back(channel)
        # The lane is free again: the loop may need it (and this thread may now wait for the loop).
        reply = fast_reply(data) if data is not None else None
        if reply is not None and command not in STATE_COMMANDS and not self._notify(handle):
            handle.served_direct += 1  # the common case, finished here: an ok answer that changes no state
            pool.breaker.record_success(False)
            return (reply.result,)
        with request_context(request_id=request_id, worker_pid=handle.pid, session_id=session_id):
            if data is None:
                self._count_failure()
                if ended == "timeout":
                    raise self._timed_out(handle, request_id, command, timeout)
                raise self._ended(handle, request_id, command, session_id)
            return (self._answer(handle, data, request_id, command, args, session_id, context, timeout),)

    def _notify(self, handle: WorkerHandle) -> bool:
        """Whether the loop must hear that a slot on ``handle`` is free (a recycle due, an idle timer, waiters)."""
        return self._eager_free or handle.overflow or self._pool._slots.has_waiters(handle)

    def close_session(self, session_id: str) -> bool | None:
        """``Pool.close_session`` on the lane: forget the session, then ``cleanup_session`` on its worker
        (its errors only logged, as the loop's close does); ``None`` if the loop must do it."""
        pool = self._pool
        handle = pool._sessions.pinned(session_id) if pool.running else None
        channel = _take_lane(handle)
        if handle is None or channel is None:
            return None
        try:
            if not self._may_send(handle):
                return None
            pool._sessions.drop(session_id)
            args = {"session_id": session_id}
            request_id, data, ended = self._exchange(handle, "cleanup_session", args, session_id, None, 5.0)
        finally:
            _give_back(channel)
        try:
            with request_context(request_id=request_id, worker_pid=handle.pid, session_id=session_id):
                if data is None:
                    self._count_failure()
                    raise (
                        self._timed_out(handle, request_id, "cleanup_session", 5.0)
                        if ended == "timeout"
                        else self._ended(handle, request_id, "cleanup_session", session_id)
                    )
                self._answer(handle, data, request_id, "cleanup_session", args, session_id, None, 5.0)
        except BridgeError as exc:
            log.debug("cleanup of session %s skipped: %s", session_id, exc)
        return True

    def _may_send(self, handle: WorkerHandle) -> bool:
        """Holding its lane: ``handle`` takes work, has a free slot, and nobody is queued for it."""
        slots = self._pool._slots
        return (
            handle.accepts_work()
            and slots.load(handle) < handle.max_in_flight
            and not slots.has_waiters(handle)
            and not handle.channel.write_closed  # type: ignore[union-attr]
        )

    def _exchange(
        self,
        handle: WorkerHandle,
        command: str,
        args: dict[str, Any],
        session_id: str | None,
        context: dict[str, Any] | None,
        timeout: float | None,
    ) -> tuple[int, dict[str, Any] | None, str | None]:
        """Holding the lane: send one request and read its Response: ``(id, response, None)`` or
        ``(id, None, why the lane ended)``."""
        pool = self._pool
        request_id = next(pool._request_ids)
        frame = handle.frame(_message(request_id, command, args, session_id, context, timeout))
        with self._counts:
            pool.direct_counters.requests += 1
        handle.direct_in_flight = 1
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            return request_id, handle.channel.call(frame, request_id, handle.codec, deadline, handle.exited), None  # type: ignore[union-attr]
        except LaneEnded as exc:
            return request_id, None, exc.reason
        except BaseException:  # e.g. KeyboardInterrupt mid-wait: its late answer is no protocol violation
            handle.forget(request_id)
            raise
        finally:
            handle.direct_in_flight = 0

    def _least_loaded(self) -> WorkerHandle | None:
        workers = self._pool._supervisor.workers
        if len(workers) == 1:
            return workers[0]  # checked by _may_send, holding its lane
        slots = self._pool._slots
        best: WorkerHandle | None = None
        best_key = (0, 0, 0)
        for handle in self._pool._supervisor.workers:
            channel = handle.channel
            if channel is None or not handle.accepts_work():
                continue
            key = (int(channel.lane.locked()), slots.load(handle), len(handle.sessions))
            if best is None or key < best_key:
                best, best_key = handle, key
        return best

    def _count_failure(self) -> None:
        with self._counts:
            self._pool.direct_counters.failures += 1

    def _answer(
        self,
        handle: WorkerHandle,
        data: dict[str, Any],
        request_id: int,
        command: str,
        args: dict[str, Any],
        session_id: str | None,
        context: dict[str, Any] | None,
        timeout: float | None,
    ) -> Any:
        """The Response read on the lane, as ``Pool._call`` and ``Pool.request`` would finish it."""
        pool = self._pool
        reply = fast_reply(data)
        if reply is None:
            try:
                reply = reply_from(_as_response(data))
            except MalformedFrame as exc:  # as on the loop: the stream cannot be trusted, the worker is killed
                self._count_failure()
                handle.channel.fail(exc)  # type: ignore[union-attr]
                raise self._ended(handle, request_id, command, session_id) from None
        handle.served_direct += 1
        if self._notify(handle):
            self._loop.call_soon_threadsafe(pool.on_slot_free, handle)  # recycle, idle timer, waiters
        pool.breaker.record_success(False)
        if not reply.ok:
            handle.failed_direct += 1
            assert reply.error is not None
            error = handler_error(reply.error)
            if error.retryable and pool.config.retries > 0:
                retried = pool._resume(command, args, session_id, context, timeout, error)
                return asyncio.run_coroutine_threadsafe(retried, self._loop).result()
            self._count_failure()
            raise error
        if session_id is not None and command in STATE_COMMANDS:
            pool._sessions.remember_now(session_id, command, args)
        return reply.result

    def _timed_out(self, handle: WorkerHandle, request_id: int, command: str, timeout: float | None) -> RequestTimeout:
        """As ``Pool._call`` does on a timeout: the worker is killed (and replaced), counted and reported."""

        async def kill() -> None:
            self._pool._kill_for_timeout(handle, request_id, command, timeout)

        asyncio.run_coroutine_threadsafe(kill(), self._loop).result()
        return RequestTimeout(
            f"request {request_id} ({command}) got no answer within {timeout} s; "
            f"worker {handle.worker_id} was killed and will be replaced",
            timeout=timeout,
        )

    def _ended(self, handle: WorkerHandle, request_id: int, command: str, session_id: str | None) -> BaseException:
        """The stream ended under the request: once the loop has settled the exit, the error async gets."""
        asyncio.run_coroutine_threadsafe(handle.wait_closed(), self._loop).result()
        return handle.error_for(request_id, command, session_id)


def _message(
    request_id: int,
    command: str,
    args: dict[str, Any],
    session_id: str | None,
    context: dict[str, Any] | None,
    timeout: float | None,
) -> dict[str, Any]:
    ctx = dict(context) if context else {}
    if timeout is not None and "deadline" not in ctx:
        ctx["deadline"] = time.time() + timeout
    return {
        "type": "request",
        "id": request_id,
        "command": command,
        "args": args,
        "session_id": session_id,
        "context": ctx,
    }


def _as_response(data: dict[str, Any]) -> Response:
    """A Response the fast check did not take: validated by the models, a wrong shape a ``MalformedFrame``."""
    message = parse_worker_message(data)
    if not isinstance(message, Response):  # the lane matched type "response", so this cannot happen
        raise MalformedFrame(f"expected a response frame, got {type(message).__name__}")
    return message
