"""``SyncPool``: the same pool for synchronous callers, driven on a private event-loop thread.

    caller thread ── run_coroutine_threadsafe ──▶ loop thread: Pool (all state lives here)
                 ◀── concurrent Future ─────────┘
    caller thread ── direct lane (``_direct``) ──▶ the worker's pipes, no hop (a request on a pinned
                 ◀── its Response ──────────────┘  session's worker, or on the least-loaded one)

Requests take the direct lane when the pool's rules allow it without the loop (see ``_direct``): the
caller writes the frame and reads its Response itself, which costs about what a raw pipe round trip does.
Everything else — starting, pinning a new session, replay, breaker probes, retries, streaming, closing —
goes through the loop thread as before.

The loop thread spawns the workers, and Linux's PDEATHSIG fires when the *spawning thread* exits,
so the thread must outlive its workers: it only stops after ``aclose()`` has reaped them all.
``close()`` is idempotent, bounded in time, never raises, and may be called from a signal handler
(it takes no lock the interrupted code could hold) or at interpreter exit (registered with atexit).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Self, TypeVar

from dspy_bridge._exceptions import PoolClosed, UsageError
from dspy_bridge.pool._config import UNSET, PoolConfig, Unset
from dspy_bridge.pool._direct import DirectLane, holding_lane
from dspy_bridge.pool._pool import Pool
from dspy_bridge.pool._pool_commands import CommandsMixin
from dspy_bridge.pool._spawn import Launcher
from dspy_bridge.pool._stats import PoolEvent, PoolStats
from dspy_bridge.pool._streaming import ChunkCallback, StreamEvent, iterate_blocking, stream_args

__all__ = ["SyncPool"]

log = logging.getLogger("dspy_bridge.pool")
T = TypeVar("T")


class SyncPool:
    """Blocking facade over ``Pool``; usable as a context manager.

    Usage::

        with SyncPool(PoolConfig(size=2)) as pool:
            program_id = pool.create_program("question -> answer", session_id="t1")
            pool.stub(program_id, {"answer": "4"}, session_id="t1")
            pool.execute(program_id, {"question": "2+2?"}, session_id="t1")

    Listeners added with ``add_listener`` are called on the loop thread.
    """

    def __init__(
        self,
        config: PoolConfig | None = None,
        *,
        launcher: Launcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        self._pool = Pool(config, launcher=launcher, clock=clock, **options)
        self.config = self._pool.config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None  # set (on the loop) by close(): the loop thread closes the pool
        self._close_requested = False  # plain attribute writes only: close() may run in a signal handler
        self._stopped = False  # the loop is closed: nothing scheduled on it will ever run
        self._error: BaseException | None = None  # what aclose() raised, logged by close()
        # every future handed to a caller, with its coroutine: what the loop could not settle is failed here
        self._futures: dict[concurrent.futures.Future[Any], Coroutine[Any, Any, Any]] = {}
        self._direct: DirectLane | None = None  # made once the loop runs
        self._requester = _BlockingRequester(self)
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            pool = ref()
            if pool is not None:
                pool.close()

        self._at_exit = close_at_exit

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def pool(self) -> Pool:
        """The underlying asyncio pool (touch it only from the loop thread)."""
        return self._pool

    def start(self) -> Self:
        if self._close_requested:
            raise UsageError("this SyncPool is closed; build a new one")
        if self._loop is not None:
            raise UsageError("SyncPool.start() was already called")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._stop = asyncio.Event()  # made before the thread runs, so an early close() cannot be lost
        self._loop = loop
        self._direct = DirectLane(self._pool, loop)
        thread = threading.Thread(target=self._run_loop, args=(loop, ready), name="dspy-bridge-pool", daemon=True)
        thread.start()
        self._thread = thread  # only once it runs: close() joins it
        ready.wait()
        atexit.register(self._at_exit)
        if self._close_requested:  # close() ran (another thread, a signal handler) before the loop was ours
            self.close()
            raise PoolClosed("the pool was closed while it was starting")
        try:
            self._call(self._pool.start())
        except BaseException as exc:
            self.close()
            if isinstance(exc, UsageError) and self._close_requested:
                raise PoolClosed("the pool was closed while it was starting") from None
            raise
        return self

    def _run_loop(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        """The loop thread: serve until close(), close the pool, settle every task, then close the loop.

        Nothing the loop was given is left pending: tasks still running after ``aclose`` are cancelled
        and awaited, callbacks scheduled meanwhile run (a late request fails with ``PoolClosed``), and
        a future scheduled after the loop closed is failed by ``_abandon``.
        """
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:  # reported by close(), never lost
            self._error = exc
        finally:
            try:
                self._settle(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                asyncio.set_event_loop(None)
                self._stopped = True
                for future in list(self._futures):
                    self._abandon(future)

    async def _serve(self, ready: threading.Event) -> None:
        assert self._stop is not None
        ready.set()
        await self._stop.wait()
        await self._pool.aclose()

    @staticmethod
    def _settle(loop: asyncio.AbstractEventLoop) -> None:
        """Run what is still scheduled until no task is left: first a grace to finish, then cancellation."""
        for _ in range(100):
            loop.run_until_complete(asyncio.sleep(0))  # callbacks queued by other threads create their tasks
            tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
            if not tasks:
                return
            _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=1.0))

    def _abandon(self, future: concurrent.futures.Future[Any]) -> None:
        """Fail a future whose coroutine can no longer run (its loop is closed)."""
        coro = self._futures.pop(future, None)
        if coro is not None:
            coro.close()
        if not future.done():
            try:
                future.set_exception(PoolClosed("the pool was closed"))
            except concurrent.futures.InvalidStateError:
                pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> None:
        """Close the pool and stop the loop thread; idempotent, bounded, never raises.

        Safe from any thread, from a signal handler (it takes no lock: it only writes attributes and
        wakes the loop through its self-pipe) and while ``start()`` runs elsewhere, which then raises
        ``PoolClosed``. Every caller blocked on the pool returns.
        """
        self._close_requested = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return  # never started, or start() has not made its loop yet: it checks _close_requested after
        atexit.unregister(self._at_exit)
        if timeout is None:
            timeout = self.config.shutdown_grace + self.config.terminate_grace + 5.0
        try:
            loop.call_soon_threadsafe(self._request_stop)
        except RuntimeError:  # the loop is already closed
            pass
        if threading.current_thread() is thread or holding_lane():
            # from a listener on the loop thread, or from a signal handler that interrupted this thread's direct
            # request (the loop's close waits for that lane): the close proceeds, the interrupted request ends
            return
        thread.join(timeout)
        if thread.is_alive():
            log.error("SyncPool.close() did not finish within %.1f s", timeout)
        elif self._error is not None:
            error, self._error = self._error, None
            log.error("SyncPool.close() failed", exc_info=error)

    def _request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _track(self, future: concurrent.futures.Future[T], coro: Coroutine[Any, Any, T]) -> None:
        """Remember ``future`` until it settles; fail it now if the loop closed before it could run."""
        self._futures[future] = coro
        future.add_done_callback(lambda done: self._futures.pop(done, None))
        if self._stopped:
            self._abandon(future)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            coro.close()
            raise UsageError("the SyncPool is not started; call start() or use 'with SyncPool(...)'")
        if threading.current_thread() is thread:
            coro.close()
            raise UsageError("a blocking SyncPool call from its own loop thread (e.g. a listener) would deadlock")
        future = self._schedule(coro)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._close_requested:  # cancelled by the close, not by the caller
                raise PoolClosed("the pool was closed") from None
            raise
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: do not leave the request running
            raise

    # -- the Pool API, blocking -------------------------------------------------------------
    def submit(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
        on_chunk: ChunkCallback | None = None,
    ) -> concurrent.futures.Future[Any]:
        """Like ``request`` but returns at once with a future (pipelining from one thread); ``on_chunk``
        gets a streamed request's chunks on the loop thread."""
        return self._schedule(
            self._pool.request(
                command, args, session_id=session_id, context=context, timeout=timeout, on_chunk=on_chunk
            )
        )

    def submit_blocking(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
    ) -> concurrent.futures.Future[Any]:
        """``submit`` for a caller that waits for the answer right away (``Bridge.request``): on the direct
        lane the request is answered before this returns (a done future); otherwise it is ``submit``'s."""
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            answered = self._direct_request(command, args, session_id, context, timeout)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise
            done.set_exception(exc)
            return done
        if answered is None:
            return self.submit(command, args, session_id=session_id, context=context, timeout=timeout)
        done.set_result(answered[0])
        return done

    def _direct_request(
        self,
        command: str,
        args: dict[str, Any] | None,
        session_id: str | None,
        context: dict[str, Any] | None,
        timeout: float | Unset | None,
    ) -> tuple[Any] | None:
        """``(result,)`` from the direct lane, or ``None`` if the request must go through the loop thread."""
        direct = self._direct
        if direct is None or self._close_requested or threading.current_thread() is self._thread:
            return None
        attempt_timeout = self.config.request_timeout if isinstance(timeout, Unset) else timeout
        if attempt_timeout is not None and attempt_timeout <= 0:
            return None  # the loop path explains the bad timeout
        return direct.request(command, dict(args or {}), session_id, context, attempt_timeout)

    def _schedule(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Hand ``coro`` to the loop thread without waiting for it."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise UsageError("the SyncPool is not started; call start() or use 'with SyncPool(...)'")
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:
            coro.close()
            raise PoolClosed("the pool is closed") from None
        self._track(future, coro)
        return future

    def submit_close_session(self, session_id: str) -> concurrent.futures.Future[bool]:
        """``close_session`` without waiting for the loop: the caller (e.g. a test's teardown) moves on at once.

        On the direct lane it is done before this returns (one round trip, cheaper than waking the loop)."""
        direct = self._direct
        if direct is not None and threading.current_thread() is not self._thread and not self._close_requested:
            closed = direct.close_session(session_id)
            if closed is not None:
                done: concurrent.futures.Future[bool] = concurrent.futures.Future()
                done.set_result(closed)
                return done
        return self._schedule(self._pool.close_session(session_id))

    def request(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
    ) -> Any:
        """``Pool.request``, blocking; on the direct lane when it can be (no hop to the loop thread)."""
        answered = self._direct_request(command, args, session_id, context, timeout)
        if answered is not None:
            return answered[0]
        return self._call(self._pool.request(command, args, session_id=session_id, context=context, timeout=timeout))

    def ping(self, *, session_id: str | None = None) -> dict[str, Any]:
        return _inline(CommandsMixin.ping(self._requester, session_id=session_id))

    def configure_lm(
        self, model: str, *, session_id: str | None = None, api_key: str | None = None, **settings: Any
    ) -> dict[str, Any]:
        return _inline(
            CommandsMixin.configure_lm(self._requester, model, session_id=session_id, api_key=api_key, **settings)
        )

    def allow_hosts(self, hosts: list[str]) -> dict[str, Any]:
        """Let every worker also connect to ``hosts``; see ``Pool.allow_hosts``."""
        return self._call(self._pool.allow_hosts(hosts))

    def create_program(
        self,
        signature: str | dict[str, Any] | None = None,
        *,
        program_type: str = "predict",
        instructions: str | None = None,
        program_id: str | None = None,
        session_id: str | None = None,
        **definition: Any,
    ) -> str:
        return _inline(
            CommandsMixin.create_program(
                self._requester,
                signature,
                program_type=program_type,
                instructions=instructions,
                program_id=program_id,
                session_id=session_id,
                **definition,
            )
        )

    def delete_program(self, program_id: str, *, session_id: str | None = None) -> None:
        _inline(CommandsMixin.delete_program(self._requester, program_id, session_id=session_id))

    def stub(
        self,
        program_id: str,
        outputs: dict[str, Any] | None = None,
        *,
        inputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> None:
        _inline(
            CommandsMixin.stub(self._requester, program_id, outputs, inputs=inputs, error=error, session_id=session_id)
        )

    def script(
        self, script: dict[str, Any], *, strict: bool = True, auto: bool = False, session_id: str | None = None
    ) -> dict[str, Any]:
        """Real workers only: answer ``session_id``'s LM calls from ``script``; see ``Pool.script``."""
        return self._call(self._pool.script(script, strict=strict, auto=auto, session_id=session_id))

    def stub_program(self, *args: Any, **kwargs: Any) -> None:
        """Deprecated name of ``stub`` (one name on ``Pool``, ``SyncPool`` and ``Bridge``)."""
        warnings.warn("SyncPool.stub_program() is deprecated; use SyncPool.stub()", DeprecationWarning, stacklevel=2)
        self.stub(*args, **kwargs)

    def execute(
        self,
        program_id: str,
        inputs: dict[str, Any],
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
        **options: Any,
    ) -> dict[str, Any]:
        return _inline(
            CommandsMixin.execute(
                self._requester, program_id, inputs, session_id=session_id, context=context, timeout=timeout, **options
            )
        )

    def stream(
        self,
        program_id: str,
        inputs: dict[str, Any],
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
    ) -> Iterator[StreamEvent]:
        """``Pool.stream``, blocking: ``StreamChunk`` items as they arrive, then one ``StreamEnd(result)``."""
        args = stream_args(program_id, inputs)
        if self._loop is None:
            raise UsageError("the SyncPool is not started; call start() or use 'with SyncPool(...)'")
        if threading.current_thread() is self._thread:
            raise UsageError("a blocking SyncPool.stream from its own loop thread (e.g. a listener) would deadlock")
        return iterate_blocking(
            lambda on_chunk: self.submit(
                "execute_program", args, session_id=session_id, context=context, timeout=timeout, on_chunk=on_chunk
            )
        )

    def close_session(self, session_id: str) -> bool:
        direct = self._direct
        if direct is not None and threading.current_thread() is not self._thread and not self._close_requested:
            closed = direct.close_session(session_id)
            if closed is not None:
                return closed
        return self._call(self._pool.close_session(session_id))

    def stats(self) -> PoolStats:
        async def snapshot() -> PoolStats:
            return self._pool.stats()

        return self._call(snapshot())

    def add_listener(self, listener: Callable[[PoolEvent], None]) -> Callable[[], None]:
        return self._pool.add_listener(listener)

    @property
    def events(self) -> list[PoolEvent]:
        return list(self._pool.events)

    def worker_pids(self) -> list[int]:
        """Pids of the current workers (for tests and diagnostics)."""

        async def pids() -> list[int]:
            return [handle.pid for handle in self._pool.workers()]

        return self._call(pids())

    def __repr__(self) -> str:
        return f"<SyncPool {self._pool!r}>"


class _BlockingRequester:
    """``CommandsMixin``'s ``request`` answered by ``SyncPool.request`` (blocking, so the coroutine never
    suspends): the commands' arguments are built by the same code on both sides."""

    __slots__ = ("_pool",)

    def __init__(self, pool: SyncPool) -> None:
        self._pool = pool

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
        if on_chunk is not None:
            raise UsageError("streamed requests go through SyncPool.stream")
        return self._pool.request(command, args, session_id=session_id, context=context, timeout=timeout)


def _inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its only await is ``_BlockingRequester.request``) to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a SyncPool command suspended; it must only await _BlockingRequester.request")
