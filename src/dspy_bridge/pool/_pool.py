"""The asyncio worker pool.

    caller ── request(command, args, session_id) ──▶ breaker.admit() ── CircuitOpen (fail fast)
                 │                                        │
                 │                 session? ──▶ SessionState ── pinned worker (re-pin + replay if it died)
                 │                 anonymous ──▶ least-loaded worker with a free slot
                 ▼                                        │   (none: wait ≤ checkout_timeout, grow overflow)
            retries (retryable errors only, backoff+jitter)  ▼
                                             WorkerHandle.send ── frame ──▶ stdin ──▶ worker loop ──▶ handlers
                                             WorkerHandle reader ◀── frame ── stdout ◀──┘
                                                   │ exit/EOF: fail what it held (WorkerCrashed),
                                                   ▼ tell the pool ─▶ breaker, events, replacement
    Launcher (spawn | zygote fork) ──▶ WorkerProcess ──▶ WorkerHandle (SPAWNING → READY → DRAINING → DEAD)

Four parts, each with its own state (the Pool is the coordinator a reader can hold in their head):
``Supervisor`` (launch, bring up, replace, grow, recycle, retire — ``_supervisor.py``), ``Slots``
(reservations and the queues waiting for them — ``_slots.py``), ``Sessions`` (pinning, replay,
pool-wide default state — ``_sessions.py``) and this module (lifecycle, the request path with its
retries and timeouts, events and stats). Command arguments are built by ``protocol._commands``.

Start: every worker is launched at once (one ``gather``), then the pool waits for the first or all
hellos. No sleeps anywhere: waits are on futures, events and process exits, each with a deadline.
Close (``aclose``, idempotent): stop admitting → fail waiters and in-flight requests with
``PoolClosed`` → ``shutdown`` + stdin EOF → grace → SIGTERM → SIGKILL → reap → close pipes.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from dspy_bridge._exceptions import HandlerError, PoolClosed, PoolError, RequestTimeout, UsageError
from dspy_bridge.pool._breaker import BreakerState, CircuitBreaker
from dspy_bridge.pool._config import UNSET, PoolConfig, Unset
from dspy_bridge.pool._errors import handler_error, request_context
from dspy_bridge.pool._heartbeat import HeartbeatMixin
from dspy_bridge.pool._launch import make_launcher
from dspy_bridge.pool._pool_commands import CommandsMixin
from dspy_bridge.pool._sessions import Sessions
from dspy_bridge.pool._slots import Slots
from dspy_bridge.pool._spawn import Launcher, worker_environment
from dspy_bridge.pool._stats import Counters, PoolEvent, PoolStats
from dspy_bridge.pool._streaming import ChunkCallback, CountingSink, StreamingMixin, no_stream
from dspy_bridge.pool._supervisor import Supervisor
from dspy_bridge.pool._worker import WorkerHandle, WorkerState
from dspy_bridge.protocol import _commands as commands

__all__ = ["Pool", "PoolState"]

log = logging.getLogger("dspy_bridge.pool")

Listener = Callable[[PoolEvent], None]


class PoolState(enum.StrEnum):
    NEW = "new"  # built; start() not called yet
    STARTING = "starting"  # start() is launching workers
    RUNNING = "running"  # admitting requests
    BROKEN = "broken"  # start() failed; every request re-raises that cause (as PoolClosed)
    CLOSING = "closing"  # aclose() is tearing down; nothing new is admitted
    CLOSED = "closed"  # every worker reaped, every pipe closed


_STOPPING = frozenset({PoolState.CLOSING, PoolState.CLOSED, PoolState.BROKEN})


class Pool(CommandsMixin, StreamingMixin, HeartbeatMixin):
    """A pool of worker processes speaking the dspy-bridge protocol (see the module docstring).

    Usage::

        async with Pool(PoolConfig(size=2, mode="mock")) as pool:
            program_id = await pool.create_program("question -> answer", session_id="t1")
            await pool.stub(program_id, {"answer": "4"}, session_id="t1")
            result = await pool.execute(program_id, {"question": "2+2?"}, session_id="t1")

    ``launcher`` replaces the one ``start_strategy`` picks; ``clock`` drives the circuit breaker's
    window and reset (tests pass a fake one). Options may also be given as keywords.
    """

    def __init__(
        self,
        config: PoolConfig | None = None,
        *,
        launcher: Launcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        if config is None:
            config = PoolConfig(**options)
        elif options:
            config = PoolConfig.model_validate({**config.model_dump(), **options})
        self.config = config
        self._state = PoolState.NEW
        self._broken: BaseException | None = None
        self._start_task: asyncio.Task[Any] | None = None
        self._closed_by_aclose = False
        self._listeners: list[Listener] = []
        self.events: deque[PoolEvent] = deque(maxlen=2000)
        self._counters = Counters()
        self.direct_counters = Counters()  # written only by SyncPool's direct lane, under its lock
        self._request_ids = itertools.count(1)
        self._time_to_ready_ms: float | None = None
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()
        self._closer: asyncio.Task[None] | None = None
        self._breaker = CircuitBreaker(
            config.breaker_threshold,
            config.breaker_window,
            config.breaker_reset,
            clock=clock,
            on_change=self._breaker_changed,
        )
        self._launcher = launcher if launcher is not None else make_launcher(config)
        self._supervisor = Supervisor(config, self._launcher, self._breaker, self._counters, self)
        self._slots = Slots(
            self._supervisor.workers,
            config,
            self._breaker,
            check_admitting=self._check_admitting,
            grow=self._supervisor.grow,
        )
        self._sessions = Sessions(
            self._slots,
            self._call,
            lm=config.lm,
            allowed_hosts=config.allowed_hosts,
            counters=self._counters,
            emit=self.emit,
            recycle=self._supervisor.recycle,
            request_timeout=config.request_timeout,
        )

    # == lifecycle ===========================================================================
    @property
    def state(self) -> PoolState:
        return self._state

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def running(self) -> bool:
        return self._state is PoolState.RUNNING

    @property
    def stopping(self) -> bool:
        return self._state in _STOPPING

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Launch ``size`` workers at once; return when the first or all (``ready_when``) said hello."""
        if self._state is not PoolState.NEW:
            raise UsageError(
                "Pool.start() was already called"
                if self._state in (PoolState.STARTING, PoolState.RUNNING)
                else f"cannot start a pool that is {self._state.value}; build a new Pool"
            )
        self._state = PoolState.STARTING
        self._start_task = asyncio.current_task()
        began = time.monotonic()
        try:
            await self._supervisor.start_initial(worker_environment(self.config))
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._broken = exc
                self._state = PoolState.BROKEN
            self._start_task = None  # teardown must not cancel us: we are waiting for it
            if self._closer is None:
                self._closer = asyncio.get_running_loop().create_task(self._teardown(), name="pool-teardown")
            await asyncio.shield(self._closer)
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and self._closed_by_aclose and task and task.uncancel() == 0:
                raise PoolClosed("the pool was closed while it was starting") from None
            raise
        self._start_task = None
        self._time_to_ready_ms = (time.monotonic() - began) * 1000
        if self._state is not PoolState.STARTING:
            return  # closed while starting
        self._state = PoolState.RUNNING
        workers = len(self._supervisor.workers)
        self.emit("pool_ready", time_to_ready_ms=round(self._time_to_ready_ms, 3), workers=workers)
        log.info("pool ready in %.1f ms with %d %s workers", self._time_to_ready_ms, workers, self.config.mode)
        self._supervisor.replenish("initial worker failed")
        self._start_heartbeat()

    async def aclose(self) -> None:
        """Close the pool; idempotent, never raises (but cancellation), never leaves a child behind."""
        if self._state is PoolState.NEW:
            self._state = PoolState.CLOSED
            self._closing.set()
            self._closed.set()
            await self._launcher.aclose()
            return
        if self._closer is None:
            if self._state in (PoolState.BROKEN, PoolState.CLOSED):
                return
            self._closer = asyncio.get_running_loop().create_task(self._teardown(), name="pool-teardown")
        await asyncio.shield(self._closer)

    async def _teardown(self) -> None:
        # 1. stop admitting
        if self._state is not PoolState.BROKEN:
            self._state = PoolState.CLOSING
        self._closing.set()
        await self._stop_heartbeat()
        self._supervisor.halt()
        # 2. fail what is queued; stop starting workers (a cancelled start kills and reaps its process)
        self._slots.fail_waiters(self._closed_error())
        current = asyncio.current_task()
        if self._start_task is not None and self._start_task is not current and not self._start_task.done():
            self._closed_by_aclose = True
            self._start_task.cancel()
        await self._supervisor.cancel_starts()
        # 3. fail in-flight requests: closing is not a crash
        failed = self._supervisor.fail_in_flight(self._closed_in_flight)
        # 4-7. shutdown request + EOF, grace, SIGTERM, SIGKILL, reap; pipes last
        await self._supervisor.stop_all()
        if self._state is not PoolState.BROKEN:
            self._state = PoolState.CLOSED
        self._closed.set()
        self.emit("pool_closed", failed_in_flight=failed)
        log.info("pool closed (%d in-flight requests failed with PoolClosed)", failed)

    def _closed_error(self) -> PoolClosed:
        if self._broken is not None:
            error = PoolClosed(f"the pool failed to start: {self._broken}")
            error.__cause__ = self._broken
            return error
        return PoolClosed("the pool is closed")

    def _closed_in_flight(self, request_id: int, command: str, session_id: str | None) -> BaseException:
        return PoolClosed(
            f"the pool was closed while request {request_id} ({command}) was in flight",
            request_id=request_id,
            session_id=session_id,
        )

    def _check_admitting(self) -> None:
        if self._state is PoolState.RUNNING:
            return
        if self._state is PoolState.NEW:
            raise UsageError("the pool is not started; call 'await pool.start()' or use 'async with Pool(...)'")
        if self._state is PoolState.STARTING:
            raise UsageError("the pool is still starting; wait for start() to return")
        raise self._closed_error()

    # == what the parts tell the coordinator ====================================================
    def on_slot_free(self, handle: WorkerHandle) -> None:
        """A request finished (or a reservation was returned): hand the slot on, recycle or idle."""
        self._supervisor.slot_freed(handle)
        self._slots.hand_over(handle)
        if self._slots.load(handle) == 0:
            self._supervisor.idle(handle)

    def on_worker_exit(self, handle: WorkerHandle) -> None:
        """A worker is gone and its requests are settled: its waiters look again; it is replaced."""
        self._slots.forget(handle)
        self._sessions.forget_worker(handle)
        self._supervisor.worker_exited(handle)

    async def prepare(self, handle: WorkerHandle) -> None:
        await self._sessions.prepare(handle)

    def load(self, handle: WorkerHandle) -> int:
        return self._slots.load(handle)

    def capacity_changed(self) -> None:
        self._slots.wake_all()

    def _breaker_changed(self, old: BreakerState, new: BreakerState, reason: str) -> None:
        kind = {"open": "breaker_opened", "half_open": "breaker_half_open", "closed": "breaker_closed"}[new.value]
        self.emit(kind, reason=reason, previous=old.value)
        (log.error if new is BreakerState.OPEN else log.warning)("circuit breaker %s: %s", new.value, reason)
        if new is BreakerState.OPEN:
            self._slots.wake_all()  # waiting requests fail fast now
        elif new is BreakerState.CLOSED:
            self._supervisor.replenish("circuit breaker closed")

    # == requests ============================================================================
    async def request(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
        on_chunk: ChunkCallback | None = None,
    ) -> Any:
        """Send one command and return its result.

        ``timeout`` bounds each attempt from the moment it is sent (``None``: no limit; default
        ``request_timeout``); waiting for a free slot is bounded by ``checkout_timeout``. Raises
        ``HandlerError`` (``.type`` from the taxonomy) for an error Response, ``WorkerCrashed`` if the
        worker died holding it, ``RequestTimeout``, ``CircuitOpen``, ``PoolClosed``. ``on_chunk(field, text)``
        gets a streamed request's chunks on the loop's thread (see ``stream``).
        """
        self._check_admitting()
        args = dict(args or {})
        attempt_timeout = self.config.request_timeout if isinstance(timeout, Unset) else timeout
        if attempt_timeout is not None and attempt_timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, got {attempt_timeout!r}")
        self._counters.requests += 1
        probe = self._breaker.admit()
        try:
            handle = None if probe or on_chunk is not None else self._ready_slot(session_id)
            if handle is None:
                result = await self._with_retries(command, args, session_id, context, attempt_timeout, probe, on_chunk)
            else:  # the common case: a slot free at once, no coroutine layers between here and the wire
                try:
                    result = await self._call(handle, command, args, session_id, context, attempt_timeout)
                except HandlerError as exc:
                    result = await self._with_retries(
                        command, args, session_id, context, attempt_timeout, probe, failed=exc
                    )
        except BaseException as exc:
            self._counters.failures += 1
            if probe:
                failed_workers = isinstance(exc, RequestTimeout | PoolError) and not isinstance(exc, PoolClosed)
                self._breaker.release_probe(exc if failed_workers else None)
            raise
        if command in commands.STATE_COMMANDS:
            ready = [w for w in self._supervisor.workers if w.accepts_work()]
            await self._sessions.remember(command, args, session_id, ready)
        return result

    def _ready_slot(self, session_id: str | None) -> WorkerHandle | None:
        """A slot reserved right now without waiting (the session's pinned worker, or the least loaded), or None."""
        if session_id is None:
            handle = self._slots.least_loaded()
        else:
            handle = self._sessions.pinned(session_id)
            if handle is not None and not self._slots.has_capacity(handle):
                return None
        if handle is not None:
            self._slots.reserve(handle)
        return handle

    async def _with_retries(
        self,
        command: str,
        args: dict[str, Any],
        session_id: str | None,
        context: dict[str, Any] | None,
        timeout: float | None,
        probe: bool,
        on_chunk: ChunkCallback | None = None,
        failed: HandlerError | None = None,
    ) -> Any:
        """``failed``: the first attempt already happened (``SyncPool``'s direct lane) and got this error."""
        attempt = 0
        sink = None if on_chunk is None else CountingSink(on_chunk)
        while True:
            if failed is not None:
                exc, failed = failed, None
                if not exc.retryable or attempt >= self.config.retries or (sink is not None and sink.delivered):
                    raise exc
                attempt += 1
                self._counters.retries += 1
                delay = self.config.backoff_delay(attempt)
                self.emit("request_retried", attempt=attempt, delay_s=round(delay, 4), error_type=exc.type)
                log.info("retrying %s (attempt %d) in %.3f s after %s", command, attempt + 1, delay, exc.type)
                await self._pause(delay)
            try:
                return await self._attempt(command, args, session_id, context, timeout, probe, sink)
            except HandlerError as exc:
                failed = exc

    async def _resume(
        self,
        command: str,
        args: dict[str, Any],
        session_id: str | None,
        context: dict[str, Any] | None,
        timeout: float | None,
        failed: HandlerError,
    ) -> Any:
        """The rest of a request whose first attempt ran on ``SyncPool``'s direct lane and may be retried."""
        try:
            result = await self._with_retries(command, args, session_id, context, timeout, False, failed=failed)
        except BaseException:
            self._counters.failures += 1
            raise
        if command in commands.STATE_COMMANDS:
            ready = [w for w in self._supervisor.workers if w.accepts_work()]
            await self._sessions.remember(command, args, session_id, ready)
        return result

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` s unless the pool closes first (an event wait with a deadline, not a sleep-poll)."""
        try:
            async with asyncio.timeout(delay):
                await self._closing.wait()
        except TimeoutError:
            return
        raise self._closed_error()

    async def _attempt(
        self,
        command: str,
        args: dict[str, Any],
        session_id: str | None,
        context: dict[str, Any] | None,
        timeout: float | None,
        probe: bool,
        on_chunk: ChunkCallback | None = None,
    ) -> Any:
        deadline = asyncio.get_running_loop().time() + self.config.checkout_timeout
        with request_context(request_id=None, worker_pid=None, session_id=session_id):
            if session_id is None:
                handle = await self._slots.checkout(None, probe, deadline)
            else:
                handle = await self._sessions.worker_for(session_id, probe, deadline)
            return await self._call(handle, command, args, session_id, context, timeout, probe=probe, on_chunk=on_chunk)

    async def _call(
        self,
        handle: WorkerHandle,
        command: str,
        args: dict[str, Any],
        session_id: str | None,
        context: dict[str, Any] | None,
        timeout: float | None,
        *,
        probe: bool = False,
        on_chunk: ChunkCallback | None = None,
    ) -> Any:
        """Send on a slot already reserved on ``handle``; wait for the answer within ``timeout``."""
        request_id = next(self._request_ids)
        ctx = dict(context) if context else {}
        if timeout is not None and "deadline" not in ctx:
            ctx["deadline"] = time.time() + timeout
        message = {
            "type": "request",
            "id": request_id,
            "command": command,
            "args": args,
            "session_id": session_id,
            "context": ctx,
        }
        with request_context(request_id=request_id, worker_pid=handle.pid, session_id=session_id):
            if not handle.alive or (on_chunk is not None and not handle.can_stream()):
                self._slots.release(handle)
                raise no_stream(handle) if handle.alive else handle.error_for(request_id, command, session_id)
            self._slots.consume(handle)
            try:
                future = handle.send(message, on_chunk)
            except BaseException:
                self.on_slot_free(handle)
                raise
            timer = None if timeout is None else self._loop_time_out(future, timeout)
            try:
                if handle.must_drain():
                    await handle.drain()
                response = await future
            except _AttemptExpired:
                self._kill_for_timeout(handle, request_id, command, timeout)
                raise RequestTimeout(
                    f"request {request_id} ({command}) got no answer within {timeout} s; "
                    f"worker {handle.worker_id} was killed and will be replaced",
                    timeout=timeout,
                ) from None
            finally:
                if timer is not None:
                    timer.cancel()
                if not future.done():
                    future.cancel()
            self._breaker.record_success(probe)
            if response.ok:
                return response.result
            assert response.error is not None
            raise handler_error(response.error)

    @staticmethod
    def _loop_time_out(future: asyncio.Future[Any], timeout: float) -> asyncio.TimerHandle:
        """One timer per attempt (cheaper than ``asyncio.timeout``'s scope): it fails the future when due."""
        loop = asyncio.get_running_loop()
        return loop.call_at(loop.time() + timeout, _expire_attempt, future)

    def _kill_for_timeout(self, handle: WorkerHandle, request_id: int, command: str, timeout: float | None) -> None:
        """A request outlived its timeout: its worker is killed (a stuck DSPy call cannot be cancelled)."""
        handle.forget(request_id)
        reason = f"request {request_id} ({command}) exceeded its {timeout} s timeout"
        handle.kill(reason)
        self._counters.timeouts += 1
        self.emit("request_timeout", handle, request_id=request_id, command=command, timeout_s=timeout)
        log.warning("killing worker %s (pid %d): %s", handle.worker_id, handle.pid, reason)

    async def close_session(self, session_id: str) -> bool:
        """Forget a session and drop its state on its worker; True if the pool knew it."""
        deadline = asyncio.get_running_loop().time() + self.config.checkout_timeout
        return await self._sessions.close(session_id, running=self.running, deadline=deadline)

    # == observability =======================================================================
    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every ``PoolEvent`` (on the loop's thread); returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def emit(self, kind: str, handle: WorkerHandle | None = None, **details: Any) -> None:
        """Record a ``PoolEvent`` and hand it to every listener (a failing listener is logged, not raised)."""
        worker_id = details.pop("worker_id", None)
        pid = details.pop("pid", None)
        if handle is not None:
            worker_id, pid = handle.worker_id, handle.pid
        event = PoolEvent(kind=kind, worker_id=worker_id, pid=pid, details=details)
        self.events.append(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("pool event listener %r failed on %s", listener, kind)

    def stats(self) -> PoolStats:
        workers = tuple(handle.snapshot(self._slots.reserved(handle)) for handle in self._supervisor.workers)
        by_state: dict[str, int] = dict.fromkeys((state.value for state in WorkerState), 0)
        for worker in workers:
            by_state[worker.state] += 1
        counters = self._counters.plus(self.direct_counters)
        return PoolStats(
            state=self._state.value,
            size=self.config.size,
            workers_by_state=by_state,
            workers=workers,
            requests=counters.requests,
            failures=counters.failures,
            crashes=counters.crashes,
            start_failures=counters.start_failures,
            restarts=counters.restarts,
            timeouts=counters.timeouts,
            retries=counters.retries,
            recycled=counters.recycled,
            repins=counters.repins,
            sessions=len(self._sessions),
            breaker_state=self._breaker.state.value,
            breaker_opened=self._breaker.times_opened,
            time_to_ready_ms=None if self._time_to_ready_ms is None else round(self._time_to_ready_ms, 3),
            start_strategy=self._supervisor.launcher_name(),
        )

    def workers(self) -> list[WorkerHandle]:
        """The current worker handles (for inspection and tests; do not drive them directly)."""
        return list(self._supervisor.workers)

    def session_worker(self, session_id: str) -> WorkerHandle | None:
        """The worker a session is pinned to right now, if any."""
        return self._sessions.worker_of(session_id)

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_state", None) in (PoolState.STARTING, PoolState.RUNNING):
            _warn(
                f"unclosed {self!r}: use 'async with Pool(...)' or 'await pool.aclose()'", ResourceWarning, stacklevel=1
            )

    def __repr__(self) -> str:
        workers = len(self._supervisor.workers) if hasattr(self, "_supervisor") else 0
        return (
            f"<Pool {self._state.value} mode={self.config.mode} workers={workers}/{self.config.size} "
            f"breaker={self._breaker.state.value}>"
        )


class _AttemptExpired(Exception):
    """Set on a request's future when its timeout passes (turned into ``RequestTimeout`` by ``_call``)."""


def _expire_attempt(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_AttemptExpired())
