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
import os
import random
import time
import warnings
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Self, TypeVar

from dspy_bridge._exceptions import (
    BridgeError,
    HandlerError,
    PoolClosed,
    PoolError,
    ProtocolError,
    RequestTimeout,
    UsageError,
    WorkerStartupFailed,
)
from dspy_bridge.pool._breaker import BreakerState, CircuitBreaker
from dspy_bridge.pool._config import UNSET, PoolConfig, Unset
from dspy_bridge.pool._errors import handler_error, request_context
from dspy_bridge.pool._launch import Launcher, SpawnLauncher, make_launcher, worker_environment
from dspy_bridge.pool._sessions import STATE_COMMANDS, SessionState
from dspy_bridge.pool._stats import Counters, PoolEvent, PoolStats
from dspy_bridge.pool._worker import WorkerHandle, WorkerState

__all__ = ["Pool", "PoolState"]

log = logging.getLogger("dspy_bridge.pool")

Listener = Callable[[PoolEvent], None]
T = TypeVar("T")


class PoolState(enum.StrEnum):
    NEW = "new"  # built; start() not called yet
    STARTING = "starting"  # start() is launching workers
    RUNNING = "running"  # admitting requests
    BROKEN = "broken"  # start() failed; every request re-raises that cause (as PoolClosed)
    CLOSING = "closing"  # aclose() is tearing down; nothing new is admitted
    CLOSED = "closed"  # every worker reaped, every pipe closed


class _Recheck(enum.Enum):
    RECHECK = "recheck"  # something changed (a worker started or died): look again
    TIMEOUT = "timeout"  # checkout_timeout passed


class _Repin(Exception):
    """The session's worker stopped taking work while the request waited for it."""


class Pool:
    """A pool of worker processes speaking the dspy-bridge protocol (see the module docstring).

    Usage::

        async with Pool(PoolConfig(size=2, mode="mock")) as pool:
            program_id = await pool.create_program("question -> answer", session_id="t1")
            await pool.stub_program(program_id, {"answer": "4"}, session_id="t1")
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
        self._launcher = launcher if launcher is not None else make_launcher(config)
        self._state = PoolState.NEW
        self._broken: BaseException | None = None
        self._workers: list[WorkerHandle] = []
        self._launching = {False: 0, True: 0}  # overflow? -> launches in progress without a handle yet
        self._sessions: dict[str, SessionState] = {}
        self._default_entries: list[tuple[str, dict[str, Any]]] = []
        if config.lm is not None:
            self._default_entries.append(("configure_lm", dict(config.lm)))
        self._waiters: deque[asyncio.Future[Any]] = deque()  # anonymous; a session's wait on its worker
        self._tasks: set[asyncio.Task[Any]] = set()
        self._replenish_timer: asyncio.TimerHandle | None = None
        self._start_task: asyncio.Task[Any] | None = None
        self._closed_by_aclose = False
        self._listeners: list[Listener] = []
        self.events: deque[PoolEvent] = deque(maxlen=2000)
        self._counters = Counters()
        self._request_ids = itertools.count(1)
        self._worker_numbers = itertools.count(1)
        self._start_failure_streak = 0
        self._time_to_ready_ms: float | None = None
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()
        self._closer: asyncio.Task[None] | None = None
        self._env: dict[str, str] = {}
        xdist = os.environ.get("PYTEST_XDIST_WORKER")
        self._id_prefix = f"{xdist}-" if xdist else ""
        self._breaker = CircuitBreaker(
            config.breaker_threshold,
            config.breaker_window,
            config.breaker_reset,
            clock=clock,
            on_change=self._breaker_changed,
        )

    # == lifecycle ===========================================================================
    @property
    def state(self) -> PoolState:
        return self._state

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

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
        self._env = worker_environment(self.config)
        began = time.monotonic()
        try:
            await self._start_initial_workers()
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
        self._emit("pool_ready", time_to_ready_ms=round(self._time_to_ready_ms, 3), workers=len(self._workers))
        log.info(
            "pool ready in %.1f ms with %d %s workers", self._time_to_ready_ms, len(self._workers), self.config.mode
        )
        self._replenish("initial worker failed")

    async def _start_initial_workers(self) -> None:
        size = self.config.size
        if size == 0:
            return
        # Phase 1: every process is spawned before we wait for any hello.
        launched = await asyncio.gather(
            *(self._launch(overflow=False, reason="initial") for _ in range(size)), return_exceptions=True
        )
        handles = [item for item in launched if isinstance(item, WorkerHandle)]
        errors = [item for item in launched if isinstance(item, BaseException)]
        for error in errors:
            if not isinstance(error, Exception):
                raise error  # cancelled or interrupted while launching: let teardown reap the rest
        # Phase 2: hellos (and the default state) for all of them, concurrently.
        bring_ups = [self._spawn_task(self._bring_up(handle, reason="initial")) for handle in handles]
        if self.config.ready_when == "all":
            results = await asyncio.gather(*bring_ups, return_exceptions=True)
            errors += [item for item in results if isinstance(item, BaseException)]
            if errors:
                raise _first_error(errors, f"{len(errors)} of {size} workers failed to start")
            return
        last: BaseException | None = errors[-1] if errors else None
        for next_done in asyncio.as_completed(bring_ups):
            try:
                await next_done
                return
            except Exception as exc:
                last = exc
        raise _first_error([last] if last else [], f"none of the {size} workers started")

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
        if self._replenish_timer is not None:
            self._replenish_timer.cancel()
        for handle in self._workers:
            if handle.idle_timer is not None:
                handle.idle_timer.cancel()
        # 2. fail what is queued; stop starting workers (a cancelled start kills and reaps its process)
        closed = self._closed_error()
        for queue in (self._waiters, *(handle.waiters for handle in self._workers)):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_exception(closed)
        current = asyncio.current_task()
        stopping = {handle.stop_task for handle in self._workers if handle.stop_task is not None}
        starting = [task for task in self._tasks if task is not current and task not in stopping and not task.done()]
        if self._start_task is not None and self._start_task is not current and not self._start_task.done():
            self._closed_by_aclose = True
            self._start_task.cancel()
        for task in starting:
            task.cancel()
        if starting:
            await asyncio.gather(*starting, return_exceptions=True)
        # 3. fail in-flight requests: closing is not a crash
        failed = 0
        for handle in list(self._workers):
            failed += handle.fail_pending(self._closed_in_flight)
        # 4-6. shutdown request + EOF, grace, SIGTERM, SIGKILL, reap (recycled workers already on their way)
        workers = list(self._workers)
        await asyncio.gather(
            *(w.stop("pool closing", self.config.shutdown_grace, self.config.terminate_grace) for w in workers),
            *(task for task in stopping if not task.done()),
            return_exceptions=True,
        )
        # 7. pipes last
        for handle in workers:
            handle.close_pipes()
        self._workers.clear()
        try:
            await self._launcher.aclose()
        except Exception:
            log.exception("closing the launcher failed")
        if self._state is not PoolState.BROKEN:
            self._state = PoolState.CLOSED
        self._closed.set()
        self._emit("pool_closed", failed_in_flight=failed)
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

    # == starting workers =====================================================================
    def _spawn_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            if not isinstance(error, BridgeError):  # start failures were reported already
                log.error("pool background task %s failed", task.get_name(), exc_info=error)

    async def _launch(self, *, overflow: bool, reason: str) -> WorkerHandle:
        """Spawn one process and wrap it; errors become ``WorkerStartupFailed`` (and count in the breaker)."""
        worker_id = f"{self._id_prefix}w{next(self._worker_numbers)}"
        self._launching[overflow] += 1
        spawned_at = time.monotonic()
        try:
            process = await self._launcher.launch(worker_id, self.config.mode, self.config.codec, self._env)
        except Exception as exc:
            error = WorkerStartupFailed(f"could not launch worker {worker_id}: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._start_failed(worker_id, None, error, overflow=overflow)
            raise error from exc
        finally:
            self._launching[overflow] -= 1
        handle = WorkerHandle._create(
            worker_id,
            process,
            self,
            codec=self.config.codec,
            max_in_flight=self.config.effective_max_in_flight,
            stderr_lines=self.config.stderr_tail_lines,
            spawned_at=spawned_at,
            overflow=overflow,
        )
        self._workers.append(handle)
        self._emit("worker_spawned", handle, overflow=overflow, reason=reason)
        return handle

    async def _bring_up(self, handle: WorkerHandle, *, reason: str, replaces: str | None = None) -> WorkerHandle:
        """Hello, then the pool's default state; READY only after both. A failure kills and reaps it."""
        try:
            await handle.wait_hello(self.config.start_timeout)
            await self._sync_defaults(handle)
        except BaseException as exc:
            handle.kill(f"start failed: {type(exc).__name__}")
            try:
                await handle.wait_closed()
            finally:
                handle.close_pipes()
            if isinstance(exc, Exception):
                error = exc if isinstance(exc, WorkerStartupFailed | ProtocolError) else None
                if error is None:
                    error = WorkerStartupFailed(
                        f"worker {handle.worker_id} failed while being set up: {exc}", worker_pid=handle.pid
                    )
                    error.__cause__ = exc
                self._start_failed(handle.worker_id, handle.pid, error, overflow=handle.overflow)
                if error is not exc:
                    raise error from exc
            raise
        if self._state in (PoolState.CLOSING, PoolState.CLOSED, PoolState.BROKEN):
            return handle  # teardown owns it now
        handle.mark_ready()
        self._start_failure_streak = 0
        self._emit("worker_started", handle, start_ms=round(handle.start_ms or 0.0, 3), overflow=handle.overflow)
        log.debug("worker %s (pid %d) ready in %.1f ms", handle.worker_id, handle.pid, handle.start_ms or 0.0)
        if replaces is not None:
            self._emit("worker_replaced", handle, replaces=replaces, reason=reason)
        self._wake_all()
        return handle

    def _start_failed(self, worker_id: str, pid: int | None, error: BaseException, *, overflow: bool) -> None:
        self._counters.start_failures += 1
        self._start_failure_streak += 1
        self._emit("worker_start_failed", worker_id=worker_id, pid=pid, error=str(error), overflow=overflow)
        log.warning("worker %s failed to start: %s", worker_id, error)
        if self._state in (PoolState.RUNNING, PoolState.STARTING):
            self._breaker.record_failure(error)
        self._wake_all()
        if not overflow:
            self._replenish_later()

    async def _start_worker(self, *, overflow: bool, reason: str, replaces: str | None = None) -> WorkerHandle:
        handle = await self._launch(overflow=overflow, reason=reason)
        return await self._bring_up(handle, reason=reason, replaces=replaces)

    async def _background_start(self, *, overflow: bool, reason: str, replaces: str | None = None) -> None:
        if replaces is not None:
            self._counters.restarts += 1
        try:
            await self._start_worker(overflow=overflow, reason=reason, replaces=replaces)
        except (WorkerStartupFailed, ProtocolError):
            pass  # reported, counted in the breaker, retried later by _start_failed

    def _live(self, *, overflow: bool) -> int:
        """Workers of one kind that count toward capacity (spawning or serving), plus launches in progress."""
        alive = sum(
            1
            for w in self._workers
            if w.overflow is overflow and w.alive and w.state not in (WorkerState.DRAINING, WorkerState.DEAD)
        )
        return alive + self._launching[overflow]

    def _replenish(self, reason: str, replaces: str | None = None) -> None:
        """Bring the pool back to ``size`` in the background (restart policy and breaker permitting)."""
        if self._state is not PoolState.RUNNING:
            return
        deficit = self.config.size - self._live(overflow=False)
        if deficit <= 0:
            return
        if self.config.restart == "never":
            self._emit("replacement_refused", reason="restart='never'", replaces=replaces)
            log.warning("not replacing worker %s: restart policy is 'never'", replaces)
            return
        if not self._breaker.allows_restart():
            self._emit("replacement_refused", reason=f"circuit breaker {self._breaker.state.value}", replaces=replaces)
            log.warning("not replacing worker %s: the circuit breaker is %s", replaces, self._breaker.state.value)
            return
        for _ in range(deficit):
            log.info("starting a worker to restore size %d: %s", self.config.size, reason)
            self._spawn_task(self._background_start(overflow=False, reason=reason, replaces=replaces))

    def _replenish_later(self) -> None:
        """After a failed start: try again after a backoff (the breaker stops the loop if it keeps failing)."""
        if self._state is not PoolState.RUNNING or self._replenish_timer is not None:
            return
        delay = self._backoff(self._start_failure_streak)
        log.info("retrying a failed worker start in %.2f s", delay)
        self._replenish_timer = asyncio.get_running_loop().call_later(delay, self._replenish_timer_fired)

    def _replenish_timer_fired(self) -> None:
        self._replenish_timer = None
        self._replenish("retrying after a failed start")

    def _grow(self, probe: bool) -> bool:
        """Start a worker on demand when every slot is taken; True if one is (now) on its way."""
        if self._state is not PoolState.RUNNING:
            return False
        breaker = self._breaker.state
        if not (breaker is BreakerState.CLOSED or (probe and breaker is BreakerState.HALF_OPEN)):
            return False
        if self._launching[False] + self._launching[True] or any(
            w.state is WorkerState.SPAWNING for w in self._workers
        ):
            return True  # one is already coming
        if self.config.restart == "always" and self._live(overflow=False) < self.config.size:
            self._spawn_task(self._background_start(overflow=False, reason="on demand"))
            return True
        if self._live(overflow=True) < self.config.max_overflow:
            log.info("every worker is full; starting an overflow worker")
            self._spawn_task(self._background_start(overflow=True, reason="overflow"))
            return True
        return False

    async def _sync_defaults(self, handle: WorkerHandle) -> None:
        """Apply the pool-wide state (default LM, anonymous programs) this worker has not seen yet."""
        async with handle.defaults_lock:
            while handle.defaults_applied < len(self._default_entries):
                command, args = self._default_entries[handle.defaults_applied]
                handle.reserved += 1
                try:
                    await self._call(handle, command, args, None, None, self.config.request_timeout)
                except HandlerError as exc:
                    if not (command == "delete_program" and exc.type == "program_not_found"):
                        raise
                handle.defaults_applied += 1

    # == worker callbacks (from WorkerHandle) =================================================
    def on_slot_free(self, handle: WorkerHandle) -> None:
        """A request finished (or a reservation was returned): hand the slot to the next waiter."""
        limit = self.config.max_requests_per_worker
        if limit is not None and handle.requests_served >= limit and handle.accepts_work():
            self._recycle(handle)
        while handle.has_capacity():
            waiter = _next_live(handle.waiters) or _next_live(self._waiters)  # its sessions first
            if waiter is None:
                break
            self._reserve(handle)
            waiter.set_result(handle)
        if handle.in_flight == 0:
            self._maybe_stop_idle(handle)

    def on_worker_exit(self, handle: WorkerHandle) -> None:
        """A worker is gone and its requests are settled: count it, tell listeners, replace it."""
        if handle in self._workers:
            self._workers.remove(handle)
        if handle.idle_timer is not None:
            handle.idle_timer.cancel()
        info = handle.exit_info
        exit_text = info.text if info is not None else "unknown"
        _wake(handle.waiters)
        self._wake_all()
        if not handle.became_ready:
            return  # a start failure: _launch/_bring_up report it
        if handle.crashed:
            self._counters.crashes += 1
            self._emit(
                "worker_crashed",
                handle,
                exit=exit_text,
                exit_code=info.exit_code if info else None,
                signal=info.signal_name if info else None,
                sessions=sorted(handle.sessions),
                stderr_tail=handle.stderr_tail,
            )
            log.warning("%s", handle.crash_error or f"worker {handle.worker_id} crashed: {exit_text}")
            if self._state is PoolState.RUNNING and handle.crash_error is not None:
                self._breaker.record_failure(handle.crash_error)
        elif handle.kill_reason is not None:
            self._emit("worker_killed", handle, reason=handle.kill_reason, exit=exit_text)
            log.warning("worker %s (pid %d) was killed: %s", handle.worker_id, handle.pid, handle.kill_reason)
        else:
            self._emit("worker_exited", handle, exit=exit_text, reason=handle.stop_reason or "goodbye")
        if not handle.overflow:
            self._replenish(f"worker {handle.worker_id} {exit_text}", replaces=handle.worker_id)

    def _recycle(self, handle: WorkerHandle) -> None:
        handle.mark_draining()
        self._counters.recycled += 1
        self._emit("worker_recycled", handle, requests_served=handle.requests_served)
        log.info("recycling worker %s after %d requests", handle.worker_id, handle.requests_served)
        self._replenish(f"worker {handle.worker_id} is being recycled", replaces=handle.worker_id)
        if handle.in_flight == 0:
            self._stop_in_background(handle, "recycled")

    def _maybe_stop_idle(self, handle: WorkerHandle) -> None:
        if handle.state is WorkerState.DRAINING:
            self._stop_in_background(handle, "recycled")
            return
        if handle.overflow and handle.accepts_work() and not handle.sessions and self._state is PoolState.RUNNING:
            if handle.idle_timer is not None:
                handle.idle_timer.cancel()
            handle.idle_timer = asyncio.get_running_loop().call_later(
                self.config.overflow_idle_timeout, self._retire, handle
            )

    def _retire(self, handle: WorkerHandle) -> None:
        handle.idle_timer = None
        if handle.in_flight == 0 and handle.accepts_work() and not handle.sessions:
            handle.mark_draining()
            self._emit("worker_retired", handle, idle_s=self.config.overflow_idle_timeout)
            self._stop_in_background(handle, "idle overflow")

    def _stop_in_background(self, handle: WorkerHandle, reason: str) -> None:
        if self._state is not PoolState.RUNNING or handle.stop_task is not None:
            return

        async def stop() -> None:
            await handle.stop(reason, self.config.shutdown_grace, self.config.terminate_grace)
            handle.close_pipes()

        handle.stop_task = self._spawn_task(stop())

    def _breaker_changed(self, old: BreakerState, new: BreakerState, reason: str) -> None:
        kind = {"open": "breaker_opened", "half_open": "breaker_half_open", "closed": "breaker_closed"}[new.value]
        self._emit(kind, reason=reason, previous=old.value)
        (log.error if new is BreakerState.OPEN else log.warning)("circuit breaker %s: %s", new.value, reason)
        if new is BreakerState.OPEN:
            self._wake_all()  # waiting requests fail fast now
        elif new is BreakerState.CLOSED:
            self._replenish("circuit breaker closed")

    # == checkout ============================================================================
    def _reserve(self, handle: WorkerHandle) -> None:
        handle.reserved += 1
        if handle.idle_timer is not None:
            handle.idle_timer.cancel()
            handle.idle_timer = None

    def _least_loaded(self) -> WorkerHandle | None:
        best: WorkerHandle | None = None
        for handle in self._workers:
            if handle.has_capacity() and (
                best is None or (handle.in_flight, len(handle.sessions)) < (best.in_flight, len(best.sessions))
            ):
                best = handle
        return best

    def _wake_all(self) -> None:
        """Something structural changed (a worker started or died, the breaker moved): every waiter looks again."""
        _wake(self._waiters)
        for handle in self._workers:
            _wake(handle.waiters)

    async def _checkout(self, target: WorkerHandle | None, probe: bool, deadline: float) -> WorkerHandle:
        """Reserve a slot on ``target`` (a session's worker) or on the least-loaded worker; wait if full."""
        loop = asyncio.get_running_loop()
        while True:
            self._check_admitting()
            if target is not None:
                if not target.accepts_work():
                    raise _Repin
                if target.has_capacity():
                    self._reserve(target)
                    return target
            else:
                best = self._least_loaded()
                if best is not None:
                    self._reserve(best)
                    return best
                coming = self._grow(probe)
                if not coming and not self._workers:
                    self._raise_no_workers()
            if self._breaker.state is BreakerState.OPEN:
                raise self._breaker.open_error("failing fast")
            future: asyncio.Future[WorkerHandle | _Recheck] = loop.create_future()
            (self._waiters if target is None else target.waiters).append(future)  # done ones are skipped later
            timer = loop.call_at(deadline, _expire, future)
            try:
                result = await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    handed = future.result()
                    if isinstance(handed, WorkerHandle):
                        handed.release_reservation()  # handed a slot just as we were cancelled
                raise
            finally:
                timer.cancel()
            if isinstance(result, WorkerHandle):
                return result
            if result is _Recheck.TIMEOUT:
                raise PoolError(
                    f"no worker slot became free within checkout_timeout={self.config.checkout_timeout} s "
                    f"({len(self._workers)} workers, max_in_flight={self.config.effective_max_in_flight}, "
                    f"max_overflow={self.config.max_overflow}); raise size/max_overflow or checkout_timeout",
                    timeout=self.config.checkout_timeout,
                )

    def _raise_no_workers(self) -> None:
        if self._breaker.state is not BreakerState.CLOSED:
            raise self._breaker.open_error("no worker is alive")
        error = PoolError(
            f"no live workers and none may be started (restart={self.config.restart!r}, "
            f"max_overflow={self.config.max_overflow})"
        )
        error.__cause__ = self._breaker.last_failure
        raise error

    async def _session_worker(self, session: SessionState, probe: bool, deadline: float) -> WorkerHandle:
        """The session's worker with a reserved slot; re-pins (and replays the history) if it died."""
        while True:
            pinned = session.pinned()
            if pinned is not None:
                try:
                    return await self._checkout(pinned, probe, deadline)
                except _Repin:
                    continue
            async with session.lock:
                if session.pinned() is not None:
                    continue
                previous = session.worker
                if previous is not None:
                    previous.sessions.discard(session.session_id)
                session.worker = None
                handle = await self._checkout(None, probe, deadline)
                try:
                    await self._replay(session, handle)
                except BaseException:
                    handle.release_reservation()
                    raise
                session.worker = handle
                handle.sessions.add(session.session_id)
                if previous is not None:
                    session.repins += 1
                    self._counters.repins += 1
                    self._emit(
                        "session_repinned",
                        handle,
                        session_id=session.session_id,
                        previous=previous.worker_id,
                        replayed=len(session.history),
                    )
                    log.info(
                        "session %s moved from %s to %s; replayed %d requests",
                        session.session_id,
                        previous.worker_id,
                        handle.worker_id,
                        len(session.history),
                    )
                return handle

    async def _replay(self, session: SessionState, handle: WorkerHandle) -> None:
        for command, args in session.history.entries():
            handle.reserved += 1
            await self._call(handle, command, args, session.session_id, None, self.config.request_timeout)

    # == requests ============================================================================
    async def request(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
    ) -> Any:
        """Send one command and return its result.

        ``timeout`` bounds each attempt from the moment it is sent (``None``: no limit; default
        ``request_timeout``); waiting for a free slot is bounded by ``checkout_timeout``. Raises
        ``HandlerError`` (``.type`` from the taxonomy) for an error Response, ``WorkerCrashed`` if the
        worker died holding it, ``RequestTimeout``, ``CircuitOpen``, ``PoolClosed``.
        """
        self._check_admitting()
        args = dict(args or {})
        attempt_timeout = self.config.request_timeout if isinstance(timeout, Unset) else timeout
        if attempt_timeout is not None and attempt_timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, got {attempt_timeout!r}")
        self._counters.requests += 1
        probe = self._breaker.admit()
        try:
            result = await self._with_retries(command, args, session_id, context, attempt_timeout, probe)
        except BaseException as exc:
            self._counters.failures += 1
            if probe:
                failed_workers = isinstance(exc, RequestTimeout | PoolError) and not isinstance(exc, PoolClosed)
                self._breaker.release_probe(exc if failed_workers else None)
            raise
        if command in STATE_COMMANDS:
            await self._remember(command, args, session_id)
        return result

    async def _with_retries(
        self,
        command: str,
        args: dict[str, Any],
        session_id: str | None,
        context: dict[str, Any] | None,
        timeout: float | None,
        probe: bool,
    ) -> Any:
        attempt = 0
        while True:
            try:
                return await self._attempt(command, args, session_id, context, timeout, probe)
            except HandlerError as exc:
                if not exc.retryable or attempt >= self.config.retries:
                    raise
                attempt += 1
                self._counters.retries += 1
                delay = self._backoff(attempt)
                self._emit("request_retried", attempt=attempt, delay_s=round(delay, 4), error_type=exc.type)
                log.info("retrying %s (attempt %d) in %.3f s after %s", command, attempt + 1, delay, exc.type)
                await self._pause(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half the cap fixed, half random; never above ``backoff_max``."""
        cap = min(self.config.backoff_max, self.config.backoff * (2.0 ** max(attempt - 1, 0)))
        return cap / 2 + random.uniform(0, cap / 2)

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
    ) -> Any:
        deadline = asyncio.get_running_loop().time() + self.config.checkout_timeout
        with request_context(request_id=None, worker_pid=None, session_id=session_id):
            if session_id is None:
                handle = await self._checkout(None, probe, deadline)
            else:
                session = self._sessions.get(session_id)
                if session is None:
                    session = self._sessions[session_id] = SessionState(session_id)
                handle = await self._session_worker(session, probe, deadline)
            return await self._call(handle, command, args, session_id, context, timeout, probe=probe)

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
            handle.reserved -= 1
            if not handle.alive:
                self.on_slot_free(handle)
                raise handle.error_for(request_id, command, session_id)
            try:
                future = handle.send(message)
            except BaseException:
                self.on_slot_free(handle)
                raise
            try:
                await handle.drain()
                if timeout is None:
                    response = await future
                else:
                    async with asyncio.timeout(timeout):
                        response = await future
            except TimeoutError:
                handle.forget(request_id)
                reason = f"request {request_id} ({command}) exceeded its {timeout} s timeout"
                handle.kill(reason)
                self._counters.timeouts += 1
                self._emit("request_timeout", handle, request_id=request_id, command=command, timeout_s=timeout)
                log.warning("killing worker %s (pid %d): %s", handle.worker_id, handle.pid, reason)
                raise RequestTimeout(
                    f"request {request_id} ({command}) got no answer within {timeout} s; "
                    f"worker {handle.worker_id} was killed and will be replaced",
                    timeout=timeout,
                ) from None
            finally:
                if not future.done():
                    future.cancel()
            self._breaker.record_success(probe)
            if response.ok:
                return response.result
            assert response.error is not None
            raise handler_error(response.error)

    async def _remember(self, command: str, args: dict[str, Any], session_id: str | None) -> None:
        if session_id is not None:
            session = self._sessions.get(session_id)
            if session is not None:
                session.history.remember(command, args)
            return
        # Anonymous state is pool-wide: every worker (and every future one) gets it.
        self._default_entries.append((command, dict(args)))
        ready = [w for w in self._workers if w.accepts_work()]
        results = await asyncio.gather(*(self._sync_defaults(w) for w in ready), return_exceptions=True)
        for handle, result in zip(ready, results, strict=True):
            if isinstance(result, HandlerError):
                log.error("worker %s refused pool-wide %s (%s); recycling it", handle.worker_id, command, result)
                if handle.accepts_work():
                    self._recycle(handle)

    # == conveniences ========================================================================
    async def ping(self, *, session_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("ping", session_id=session_id)
        return result

    async def configure_lm(
        self, model: str, *, session_id: str | None = None, api_key: str | None = None, **settings: Any
    ) -> dict[str, Any]:
        """Configure the LM of ``session_id`` (or the pool-wide default); the key stays in memory only."""
        args: dict[str, Any] = {"model": model, **settings}
        if api_key is not None:
            args["api_key"] = api_key
        result: dict[str, Any] = await self.request("configure_lm", args, session_id=session_id)
        return result

    async def create_program(
        self,
        signature: str | dict[str, Any],
        *,
        program_type: str = "predict",
        instructions: str | None = None,
        program_id: str | None = None,
        session_id: str | None = None,
    ) -> str:
        """Create a program and return its (deterministic) id."""
        args: dict[str, Any] = {"signature": signature, "program_type": program_type}
        if instructions is not None:
            args["instructions"] = instructions
        if program_id is not None:
            args["id"] = program_id
        result = await self.request("create_program", args, session_id=session_id)
        return str(result["program_id"])

    async def delete_program(self, program_id: str, *, session_id: str | None = None) -> None:
        await self.request("delete_program", {"program_id": program_id}, session_id=session_id)

    async def stub_program(
        self,
        program_id: str,
        outputs: dict[str, Any] | None = None,
        *,
        inputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> None:
        """Mock workers only: answer ``program_id`` with ``outputs`` (or ``error``), for ``inputs`` or any."""
        args: dict[str, Any] = {"program_id": program_id}
        if outputs is not None:
            args["outputs"] = outputs
        if error is not None:
            args["error"] = error
        if inputs is not None:
            args["inputs"] = inputs
        await self.request("stub_program", args, session_id=session_id)

    async def execute(
        self,
        program_id: str,
        inputs: dict[str, Any],
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
    ) -> dict[str, Any]:
        """Run a program; the result holds ``outputs`` (and usage, source, elapsed_ms)."""
        result: dict[str, Any] = await self.request(
            "execute_program",
            {"program_id": program_id, "inputs": inputs},
            session_id=session_id,
            context=context,
            timeout=timeout,
        )
        return result

    async def close_session(self, session_id: str) -> bool:
        """Forget a session and drop its state on its worker; True if the pool knew it."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        handle = session.pinned()
        if handle is not None:
            handle.sessions.discard(session_id)
            if self._state is PoolState.RUNNING:
                deadline = asyncio.get_running_loop().time() + self.config.checkout_timeout
                try:
                    handle = await self._checkout(handle, False, deadline)
                    await self._call(handle, "cleanup_session", {"session_id": session_id}, session_id, None, 5.0)
                except (_Repin, BridgeError) as exc:
                    log.debug("cleanup of session %s skipped: %s", session_id, exc)
        return True

    # == observability =======================================================================
    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every ``PoolEvent`` (on the loop's thread); returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def _emit(self, kind: str, handle: WorkerHandle | None = None, **details: Any) -> None:
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
        workers = tuple(handle.snapshot() for handle in self._workers)
        by_state: dict[str, int] = dict.fromkeys((state.value for state in WorkerState), 0)
        for worker in workers:
            by_state[worker.state] += 1
        counters = self._counters
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
            start_strategy=self._launcher_name(),
        )

    def _launcher_name(self) -> str:
        """``spawn``, or ``zygote:<source>`` (own, daemon, or spawn after a fallback)."""
        if isinstance(self._launcher, SpawnLauncher):
            return "spawn"
        source = getattr(self._launcher, "source", None)
        return f"zygote:{source}" if isinstance(source, str) else type(self._launcher).__name__

    def workers(self) -> list[WorkerHandle]:
        """The current worker handles (for inspection and tests; do not drive them directly)."""
        return list(self._workers)

    def session_worker(self, session_id: str) -> WorkerHandle | None:
        """The worker a session is pinned to right now, if any."""
        session = self._sessions.get(session_id)
        return session.worker if session is not None else None

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_state", None) in (PoolState.STARTING, PoolState.RUNNING):
            _warn(
                f"unclosed {self!r}: use 'async with Pool(...)' or 'await pool.aclose()'", ResourceWarning, stacklevel=1
            )

    def __repr__(self) -> str:
        return (
            f"<Pool {self._state.value} mode={self.config.mode} workers={len(self._workers)}/{self.config.size} "
            f"breaker={self._breaker.state.value}>"
        )


def _expire(future: asyncio.Future[WorkerHandle | _Recheck]) -> None:
    if not future.done():
        future.set_result(_Recheck.TIMEOUT)


def _next_live(queue: deque[asyncio.Future[Any]]) -> asyncio.Future[Any] | None:
    """The oldest waiter still waiting (timed-out and cancelled ones are dropped on the way)."""
    while queue:
        waiter = queue.popleft()
        if not waiter.done():
            return waiter
    return None


def _wake(queue: deque[asyncio.Future[Any]]) -> None:
    while queue:
        waiter = queue.popleft()
        if not waiter.done():
            waiter.set_result(_Recheck.RECHECK)


def _first_error(errors: list[BaseException], summary: str) -> BaseException:
    if not errors:
        return WorkerStartupFailed(summary)
    first = errors[0]
    if isinstance(first, BridgeError):
        first.details.setdefault("summary", summary)
        return first
    error = WorkerStartupFailed(f"{summary}: {first}")
    error.__cause__ = first
    return error
