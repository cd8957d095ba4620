"""The supervisor: every worker's life from launch to reap — start, replace, grow, recycle, retire.

    launch ──▶ WorkerHandle (SPAWNING) ──▶ bring_up: hello + host.prepare (default state) ──▶ READY
       │ failure: WorkerStartupFailed, counted in the breaker, retried after a backoff
    exit ──▶ worker_exited: count, tell listeners, replace (restart policy and breaker permitting)
    full ──▶ grow: a worker on demand, or an overflow worker (retired after overflow_idle_timeout)
    served max_requests_per_worker ──▶ recycle: DRAINING, stopped when it holds nothing

It owns the list of workers, the launches in progress, the idle timers and the stop tasks; nobody
else writes them. It tells the pool what happened through ``SupervisorHost`` (events, readiness)
and never sends a request itself: the pool's default state is applied by ``host.prepare``.
Modelled on concurrent.futures.process: the executor (``Pool``) versus its manager (this).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from dspy_bridge._exceptions import BridgeError, ProtocolError, WorkerStartupFailed
from dspy_bridge.pool._breaker import BreakerState, CircuitBreaker
from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.pool._spawn import Launcher, SpawnLauncher
from dspy_bridge.pool._stats import Counters
from dspy_bridge.pool._worker import WorkerHandle, WorkerOwner, WorkerState

__all__ = ["Supervisor", "SupervisorHost"]

log = logging.getLogger("dspy_bridge.pool")
T = TypeVar("T")


class SupervisorHost(WorkerOwner, Protocol):
    """What the supervisor needs from the pool it serves."""

    @property
    def running(self) -> bool:
        """Admitting requests: replacements and growth are wanted."""
        ...

    @property
    def stopping(self) -> bool:
        """Closing, closed or broken: teardown owns every worker now."""
        ...

    def emit(self, kind: str, handle: WorkerHandle | None = None, **details: Any) -> None: ...

    async def prepare(self, handle: WorkerHandle) -> None:
        """Bring a new worker to the pool's default state before it takes requests."""
        ...

    def load(self, handle: WorkerHandle) -> int:
        """Requests on it now, reservations included."""
        ...

    def capacity_changed(self) -> None:
        """A worker became ready or failed to: waiting requests should look again."""
        ...


class Supervisor:
    """Launches, replaces and stops workers for one pool (see the module docstring)."""

    def __init__(
        self,
        config: PoolConfig,
        launcher: Launcher,
        breaker: CircuitBreaker,
        counters: Counters,
        host: SupervisorHost,
    ) -> None:
        self._config = config
        self._launcher = launcher
        self._breaker = breaker
        self._counters = counters
        self._host = host
        self.workers: list[WorkerHandle] = []  # read by Slots and the pool; written only here
        self._launching = {False: 0, True: 0}  # overflow? -> launches in progress without a handle yet
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle_timers: dict[WorkerHandle, asyncio.TimerHandle] = {}
        self._stop_tasks: dict[WorkerHandle, asyncio.Task[None]] = {}
        self._replenish_timer: asyncio.TimerHandle | None = None
        self._worker_numbers = itertools.count(1)
        self._start_failure_streak = 0
        self._env: dict[str, str] = {}

    # -- starting ------------------------------------------------------------------------------
    async def start_initial(self, env: dict[str, str]) -> None:
        """Launch ``size`` workers at once, then wait for the first or all of them (``ready_when``)."""
        self._env = env
        size = self._config.size
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
        bring_ups = [self.spawn_task(self._bring_up(handle, reason="initial")) for handle in handles]
        if self._config.ready_when == "all":
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

    def spawn_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
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
        worker_id = f"{self._config.worker_id_prefix}w{next(self._worker_numbers)}"
        self._launching[overflow] += 1
        spawned_at = time.monotonic()
        try:
            process = await self._launcher.launch(worker_id, self._config.mode, self._config.codec, self._env)
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
            self._host,
            codec=self._config.codec,
            max_in_flight=self._config.effective_max_in_flight,
            stderr_lines=self._config.stderr_tail_lines,
            spawned_at=spawned_at,
            overflow=overflow,
        )
        self.workers.append(handle)
        self._host.emit("worker_spawned", handle, overflow=overflow, reason=reason)
        return handle

    async def _bring_up(self, handle: WorkerHandle, *, reason: str, replaces: str | None = None) -> WorkerHandle:
        """Hello, then the pool's default state; READY only after both. A failure kills and reaps it."""
        try:
            await handle.wait_hello(self._config.start_timeout)
            await self._host.prepare(handle)
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
        if self._host.stopping:
            return handle  # teardown owns it now
        handle.mark_ready()
        self._start_failure_streak = 0
        self._host.emit("worker_started", handle, start_ms=round(handle.start_ms or 0.0, 3), overflow=handle.overflow)
        log.debug("worker %s (pid %d) ready in %.1f ms", handle.worker_id, handle.pid, handle.start_ms or 0.0)
        if replaces is not None:
            self._host.emit("worker_replaced", handle, replaces=replaces, reason=reason)
        self._host.capacity_changed()
        return handle

    def _start_failed(self, worker_id: str, pid: int | None, error: BaseException, *, overflow: bool) -> None:
        self._counters.start_failures += 1
        self._start_failure_streak += 1
        self._host.emit("worker_start_failed", worker_id=worker_id, pid=pid, error=str(error), overflow=overflow)
        log.warning("worker %s failed to start: %s", worker_id, error)
        if not self._host.stopping:  # starting or running
            self._breaker.record_failure(error)
        self._host.capacity_changed()
        if not overflow:
            self._replenish_later()

    async def _background_start(self, *, overflow: bool, reason: str, replaces: str | None = None) -> None:
        if replaces is not None:
            self._counters.restarts += 1
        try:
            handle = await self._launch(overflow=overflow, reason=reason)
            await self._bring_up(handle, reason=reason, replaces=replaces)
        except (WorkerStartupFailed, ProtocolError):
            pass  # reported, counted in the breaker, retried later by _start_failed

    # -- keeping the size ----------------------------------------------------------------------
    def _live(self, *, overflow: bool) -> int:
        """Workers of one kind that count toward capacity (spawning or serving), plus launches in progress."""
        alive = sum(
            1
            for w in self.workers
            if w.overflow is overflow and w.alive and w.state not in (WorkerState.DRAINING, WorkerState.DEAD)
        )
        return alive + self._launching[overflow]

    def replenish(self, reason: str, replaces: str | None = None) -> None:
        """Bring the pool back to ``size`` in the background (restart policy and breaker permitting)."""
        if not self._host.running:
            return
        deficit = self._config.size - self._live(overflow=False)
        if deficit <= 0:
            return
        if self._config.restart == "never":
            self._host.emit("replacement_refused", reason="restart='never'", replaces=replaces)
            log.warning("not replacing worker %s: restart policy is 'never'", replaces)
            return
        if not self._breaker.allows_restart():
            state = self._breaker.state.value
            self._host.emit("replacement_refused", reason=f"circuit breaker {state}", replaces=replaces)
            log.warning("not replacing worker %s: the circuit breaker is %s", replaces, state)
            return
        for _ in range(deficit):
            log.info("starting a worker to restore size %d: %s", self._config.size, reason)
            self.spawn_task(self._background_start(overflow=False, reason=reason, replaces=replaces))

    def _replenish_later(self) -> None:
        """After a failed start: try again after a backoff (the breaker stops the loop if it keeps failing)."""
        if not self._host.running or self._replenish_timer is not None:
            return
        delay = self._config.backoff_delay(self._start_failure_streak)
        log.info("retrying a failed worker start in %.2f s", delay)
        self._replenish_timer = asyncio.get_running_loop().call_later(delay, self._replenish_timer_fired)

    def _replenish_timer_fired(self) -> None:
        self._replenish_timer = None
        self.replenish("retrying after a failed start")

    def grow(self, probe: bool) -> bool:
        """Start a worker on demand when every slot is taken; True if one is (now) on its way."""
        if not self._host.running:
            return False
        breaker = self._breaker.state
        if not (breaker is BreakerState.CLOSED or (probe and breaker is BreakerState.HALF_OPEN)):
            return False
        if self._launching[False] + self._launching[True] or any(w.state is WorkerState.SPAWNING for w in self.workers):
            return True  # one is already coming
        if self._config.restart == "always" and self._live(overflow=False) < self._config.size:
            self.spawn_task(self._background_start(overflow=False, reason="on demand"))
            return True
        if self._live(overflow=True) < self._config.max_overflow:
            log.info("every worker is full; starting an overflow worker")
            self.spawn_task(self._background_start(overflow=True, reason="overflow"))
            return True
        return False

    # -- what workers tell us ------------------------------------------------------------------
    def slot_freed(self, handle: WorkerHandle) -> None:
        """A request on ``handle`` finished: recycle it if it served enough, stop it if idle."""
        limit = self._config.max_requests_per_worker
        if limit is not None and handle.requests_served >= limit and handle.accepts_work():
            self.recycle(handle)

    def idle(self, handle: WorkerHandle) -> None:
        """``handle`` holds nothing now: a draining worker stops, an idle overflow worker gets a timer."""
        if handle.state is WorkerState.DRAINING:
            self._stop_in_background(handle, "recycled")
            return
        if handle.overflow and handle.accepts_work() and not handle.sessions and self._host.running:
            self._cancel_idle_timer(handle)
            self._idle_timers[handle] = asyncio.get_running_loop().call_later(
                self._config.overflow_idle_timeout, self._retire, handle
            )

    def worker_exited(self, handle: WorkerHandle) -> None:
        """A worker is gone and its requests are settled: count it, tell listeners, replace it."""
        if handle in self.workers:
            self.workers.remove(handle)
        self._cancel_idle_timer(handle)
        self._stop_tasks.pop(handle, None)
        if not handle.became_ready:
            return  # a start failure: _launch/_bring_up report it
        info = handle.exit_info
        exit_text = info.text if info is not None else "unknown"
        if handle.crashed:
            self._counters.crashes += 1
            self._host.emit(
                "worker_crashed",
                handle,
                exit=exit_text,
                exit_code=info.exit_code if info else None,
                signal=info.signal_name if info else None,
                sessions=sorted(handle.sessions),
                stderr_tail=handle.stderr_tail,
            )
            log.warning("%s", handle.crash_error or f"worker {handle.worker_id} crashed: {exit_text}")
            if self._host.running and handle.crash_error is not None:
                self._breaker.record_failure(handle.crash_error)
        elif handle.kill_reason is not None:
            self._host.emit("worker_killed", handle, reason=handle.kill_reason, exit=exit_text)
            log.warning("worker %s (pid %d) was killed: %s", handle.worker_id, handle.pid, handle.kill_reason)
        else:
            self._host.emit("worker_exited", handle, exit=exit_text, reason=handle.stop_reason or "goodbye")
        if not handle.overflow:
            self.replenish(f"worker {handle.worker_id} {exit_text}", replaces=handle.worker_id)

    def recycle(self, handle: WorkerHandle) -> None:
        """Drain ``handle`` (it refused pool state, or served enough) and start its replacement."""
        handle.mark_draining()
        self._counters.recycled += 1
        self._host.emit("worker_recycled", handle, requests_served=handle.requests_served)
        log.info("recycling worker %s after %d requests", handle.worker_id, handle.requests_served)
        self.replenish(f"worker {handle.worker_id} is being recycled", replaces=handle.worker_id)
        if self._host.load(handle) == 0:
            self._stop_in_background(handle, "recycled")

    def _retire(self, handle: WorkerHandle) -> None:
        self._idle_timers.pop(handle, None)
        if self._host.load(handle) == 0 and handle.accepts_work() and not handle.sessions:
            handle.mark_draining()
            self._host.emit("worker_retired", handle, idle_s=self._config.overflow_idle_timeout)
            self._stop_in_background(handle, "idle overflow")

    def _cancel_idle_timer(self, handle: WorkerHandle) -> None:
        timer = self._idle_timers.pop(handle, None)
        if timer is not None:
            timer.cancel()

    def _stop_in_background(self, handle: WorkerHandle, reason: str) -> None:
        if not self._host.running or handle in self._stop_tasks:
            return

        async def stop() -> None:
            await handle.stop(reason, self._config.shutdown_grace, self._config.terminate_grace)
            handle.close_pipes()

        self._stop_tasks[handle] = self.spawn_task(stop())

    # -- teardown (driven by Pool.aclose, in its order) --------------------------------------------
    def halt(self) -> None:
        """Step 1: no more replacements, retirements or retries."""
        if self._replenish_timer is not None:
            self._replenish_timer.cancel()
            self._replenish_timer = None
        for timer in self._idle_timers.values():
            timer.cancel()
        self._idle_timers.clear()

    async def cancel_starts(self) -> None:
        """Step 2: cancel workers still starting (a cancelled start kills and reaps its process)."""
        current = asyncio.current_task()
        stopping = set(self._stop_tasks.values())
        starting = [task for task in self._tasks if task is not current and task not in stopping and not task.done()]
        for task in starting:
            task.cancel()
        if starting:
            await asyncio.gather(*starting, return_exceptions=True)

    def fail_in_flight(self, make_error: Callable[[int, str, str | None], BaseException]) -> int:
        """Step 3: fail every request a worker holds (closing is not a crash); returns how many."""
        return sum(handle.fail_pending(make_error) for handle in list(self.workers))

    async def stop_all(self) -> None:
        """Steps 4–7: shutdown + EOF, grace, SIGTERM, SIGKILL, reap; pipes last; release the launcher."""
        workers = list(self.workers)
        config = self._config
        stopping = [task for task in self._stop_tasks.values() if not task.done()]
        await asyncio.gather(
            *(w.stop("pool closing", config.shutdown_grace, config.terminate_grace) for w in workers),
            *stopping,
            return_exceptions=True,
        )
        for handle in workers:
            handle.close_pipes()
        self.workers.clear()
        try:
            await self._launcher.aclose()
        except Exception:
            log.exception("closing the launcher failed")

    # -- reporting -------------------------------------------------------------------------------
    def launcher_name(self) -> str:
        """``spawn``, or ``zygote:<source>`` (own, daemon, or spawn after a fallback)."""
        if isinstance(self._launcher, SpawnLauncher):
            return "spawn"
        source = getattr(self._launcher, "source", None)
        return f"zygote:{source}" if isinstance(source, str) else type(self._launcher).__name__


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
