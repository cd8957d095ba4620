"""Checkout: which worker a request may be sent to, and the queues of requests waiting for one.

A *slot* is room for one more request on a worker (``max_in_flight`` per worker). A request first
reserves a slot here, then sends on it; a reservation is either consumed by that send or released.
The reservation counts are private to this object — nothing else writes them — and a worker's load
is always ``pending requests + reservations``.

Anonymous requests wait in one queue for the least-loaded worker; a session's requests wait on its
pinned worker's own queue, which is served first when that worker frees a slot. Waits are futures
with a deadline (``checkout_timeout``), never sleeps.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

from dspy_bridge._exceptions import PoolError
from dspy_bridge.pool._breaker import BreakerState, CircuitBreaker
from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.pool._worker import WorkerHandle

__all__ = ["Repin", "Slots"]


class _Recheck(enum.Enum):
    RECHECK = "recheck"  # something changed (a worker started or died): look again
    TIMEOUT = "timeout"  # checkout_timeout passed


class Repin(Exception):
    """The session's worker stopped taking work while the request waited for it."""


class Slots:
    """Reservations and waiters over the supervisor's list of workers (read, never changed, here)."""

    def __init__(
        self,
        workers: list[WorkerHandle],
        config: PoolConfig,
        breaker: CircuitBreaker,
        *,
        check_admitting: Callable[[], None],
        grow: Callable[[bool], bool],
    ) -> None:
        self._workers = workers
        self._config = config
        self._breaker = breaker
        self._check_admitting = check_admitting
        self._grow = grow
        self._reserved: dict[WorkerHandle, int] = {}
        self._anonymous: deque[asyncio.Future[Any]] = deque()
        self._by_worker: dict[WorkerHandle, deque[asyncio.Future[Any]]] = {}

    # -- load ------------------------------------------------------------------------------
    def load(self, handle: WorkerHandle) -> int:
        """Requests on ``handle`` now: sent and unanswered, plus reserved."""
        return handle.pending_count + self._reserved.get(handle, 0)

    def has_capacity(self, handle: WorkerHandle) -> bool:
        return handle.accepts_work() and self.load(handle) < handle.max_in_flight

    def has_waiters(self, handle: WorkerHandle) -> bool:
        """Whether requests wait for a slot on ``handle`` or on any worker (read from any thread)."""
        queue = self._by_worker.get(handle)
        return bool(queue) or bool(self._anonymous)

    def reserved(self, handle: WorkerHandle) -> int:
        return self._reserved.get(handle, 0)

    def reserve(self, handle: WorkerHandle) -> None:
        self._reserved[handle] = self._reserved.get(handle, 0) + 1

    def consume(self, handle: WorkerHandle) -> None:
        """The reservation turns into a sent request (counted by the handle from now on)."""
        left = self._reserved.get(handle, 0) - 1
        if left > 0:
            self._reserved[handle] = left
        else:
            self._reserved.pop(handle, None)

    def release(self, handle: WorkerHandle) -> None:
        """A reservation given back unused: the slot goes to the next waiter."""
        self.consume(handle)
        self.hand_over(handle)

    def least_loaded(self) -> WorkerHandle | None:
        best: WorkerHandle | None = None
        best_key: tuple[int, int] = (0, 0)
        for handle in self._workers:
            if not self.has_capacity(handle):
                continue
            key = (self.load(handle), len(handle.sessions))
            if best is None or key < best_key:
                best, best_key = handle, key
        return best

    # -- waiting -----------------------------------------------------------------------------
    def hand_over(self, handle: WorkerHandle) -> None:
        """``handle`` has room again: give it to its sessions' waiters first, then to anyone's."""
        queue = self._by_worker.get(handle)
        while self.has_capacity(handle):
            waiter = (_next_live(queue) if queue else None) or _next_live(self._anonymous)
            if waiter is None:
                break
            self.reserve(handle)
            waiter.set_result(handle)

    def wake_all(self) -> None:
        """Something structural changed (a worker started or died, the breaker moved): every waiter looks again."""
        _wake(self._anonymous)
        for queue in self._by_worker.values():
            _wake(queue)

    def forget(self, handle: WorkerHandle) -> None:
        """``handle`` is gone: its waiters look again (and re-pin); its reservations are void."""
        self._reserved.pop(handle, None)
        queue = self._by_worker.pop(handle, None)
        if queue:
            _wake(queue)
        self.wake_all()

    def fail_waiters(self, error: BaseException) -> None:
        """Closing: every queued request fails with ``error``."""
        for queue in (self._anonymous, *self._by_worker.values()):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_exception(error)

    async def checkout(self, target: WorkerHandle | None, probe: bool, deadline: float) -> WorkerHandle:
        """Reserve a slot on ``target`` (a session's worker) or on the least-loaded worker; wait if full."""
        loop = asyncio.get_running_loop()
        while True:
            self._check_admitting()
            if target is not None:
                if not target.accepts_work():
                    raise Repin
                if self.has_capacity(target):
                    self.reserve(target)
                    return target
            else:
                best = self.least_loaded()
                if best is not None:
                    self.reserve(best)
                    return best
                coming = self._grow(probe)
                if not coming and not self._workers:
                    self._raise_no_workers()
            if self._breaker.state is BreakerState.OPEN:
                raise self._breaker.open_error("failing fast")
            future: asyncio.Future[WorkerHandle | _Recheck] = loop.create_future()
            queue = self._anonymous if target is None else self._by_worker.setdefault(target, deque())
            queue.append(future)  # done ones are skipped later
            timer = loop.call_at(deadline, _expire, future)
            try:
                result = await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    handed = future.result()
                    if isinstance(handed, WorkerHandle):
                        self.release(handed)  # handed a slot just as we were cancelled
                raise
            finally:
                timer.cancel()
            if isinstance(result, WorkerHandle):
                return result
            if result is _Recheck.TIMEOUT:
                config = self._config
                raise PoolError(
                    f"no worker slot became free within checkout_timeout={config.checkout_timeout} s "
                    f"({len(self._workers)} workers, max_in_flight={config.effective_max_in_flight}, "
                    f"max_overflow={config.max_overflow}); raise size/max_overflow or checkout_timeout",
                    timeout=config.checkout_timeout,
                )

    def _raise_no_workers(self) -> NoReturn:
        if self._breaker.state is not BreakerState.CLOSED:
            raise self._breaker.open_error("no worker is alive")
        error = PoolError(
            f"no live workers and none may be started (restart={self._config.restart!r}, "
            f"max_overflow={self._config.max_overflow})"
        )
        error.__cause__ = self._breaker.last_failure
        raise error


def _expire(future: asyncio.Future[Any]) -> None:
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
