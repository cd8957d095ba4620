"""One worker as the pool sees it: its process, its reader task, its in-flight requests.

    WorkerHandle
    ├── reader task ── frames from stdout ──▶ Hello → ready future; Response → its future; Goodbye noted;
    │        │                                   Chunk → its request's on_chunk (streamed requests only)
    │        └── races the reads against process exit: on exit it drains briefly, reaps, and fails
    │            exactly the requests this worker held (WorkerCrashed, or PoolClosed when we stopped it)
    ├── stderr task ── lines ──▶ ring buffer (the tail goes into crash reports)
    └── pending {request id: future}   state SPAWNING → READY/BUSY → DRAINING → DEAD

It knows its process and the requests it sent, nothing of the pool's bookkeeping: reservations
belong to ``Slots``, timers and stop tasks to the ``Supervisor``, default state to ``Sessions``.
Only the pool (or a zygote launcher) builds handles, through ``WorkerHandle._create``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from dspy_bridge._exceptions import (
    BridgeError,
    MalformedFrame,
    ProtocolError,
    VersionMismatch,
    WorkerStartupFailed,
)
from dspy_bridge.pool._channel import open_channel
from dspy_bridge.pool._errors import ExitInfo, describe_exit
from dspy_bridge.pool._replies import Reply, fast_reply, reply_from
from dspy_bridge.pool._spawn import WorkerProcess
from dspy_bridge.pool._stats import WorkerStats
from dspy_bridge.pool._worker_errors import WorkerErrors
from dspy_bridge.protocol import PROTOCOL_VERSION, FrameDecoder, encode_frame, get_codec
from dspy_bridge.protocol._frames import DEFAULT_MAX_FRAME_SIZE
from dspy_bridge.protocol._messages import Chunk, Goodbye, Hello, Response, parse_worker_message

if TYPE_CHECKING:
    from dspy_bridge.pool._channel import Channel

__all__ = ["ChunkCallback", "WorkerHandle", "WorkerOwner", "WorkerState"]

log = logging.getLogger("dspy_bridge.pool")

_CHUNK = 256 * 1024
DRAIN_AFTER_EXIT = 0.05  # s to read what a dead worker left in its pipes (a grandchild may hold them open)
EXIT_AFTER_EOF = 0.5  # s a worker that closed stdout gets to exit before it is killed
_PLANNED_GOODBYES = frozenset({"eof", "shutdown", "sigterm"})
_CREATE = object()


class WorkerState(enum.StrEnum):
    SPAWNING = "spawning"  # launched; waiting for its Hello and for the pool's default state
    READY = "ready"  # accepting requests: fewer than max_in_flight outstanding
    BUSY = "busy"  # accepting none right now: max_in_flight outstanding (derived from READY)
    DRAINING = "draining"  # finishing what it holds, then stopped (recycling, idle overflow, close)
    DEAD = "dead"  # exited or exiting; what it held has been failed


class WorkerOwner(Protocol):
    """What a handle tells its pool."""

    def on_slot_free(self, handle: WorkerHandle) -> None: ...

    def on_worker_exit(self, handle: WorkerHandle) -> None: ...


ChunkCallback = Callable[[str, str], None]


class _Pending:
    __slots__ = ("command", "future", "on_chunk", "session_id")

    def __init__(
        self,
        future: asyncio.Future[Reply],
        command: str,
        session_id: str | None,
        on_chunk: ChunkCallback | None = None,
    ) -> None:
        self.future = future
        self.command = command
        self.session_id = session_id
        self.on_chunk = on_chunk  # a streamed request's chunks go here, in order, on the loop's thread


class WorkerHandle(WorkerErrors):
    """The host side of one worker process (see the module docstring for its parts)."""

    @classmethod
    def _create(
        cls,
        worker_id: str,
        process: WorkerProcess,
        owner: WorkerOwner,
        *,
        codec: str,
        max_in_flight: int,
        stderr_lines: int,
        spawned_at: float,
        overflow: bool = False,
        max_frame_size: int | None = None,
    ) -> WorkerHandle:
        handle = cls(_CREATE)
        handle._setup(
            worker_id,
            process,
            owner,
            codec=codec,
            max_in_flight=max_in_flight,
            stderr_lines=stderr_lines,
            spawned_at=spawned_at,
            overflow=overflow,
            max_frame_size=max_frame_size,
        )
        return handle

    def __init__(self, key: object) -> None:
        if key is not _CREATE:
            raise TypeError("WorkerHandle has no public constructor; the pool creates handles")

    def _setup(
        self,
        worker_id: str,
        process: WorkerProcess,
        owner: WorkerOwner,
        *,
        codec: str,
        max_in_flight: int,
        stderr_lines: int,
        spawned_at: float,
        overflow: bool,
        max_frame_size: int | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.worker_id = worker_id
        self.process = process
        self.pid = process.pid
        self.owner = owner
        self.codec = get_codec(codec)
        self.max_in_flight = max_in_flight
        self.overflow = overflow
        self.max_frame_size = max_frame_size
        self.spawned_at = spawned_at
        self.hello_at: float | None = None
        self.hello: Hello | None = None
        self.goodbye: Goodbye | None = None
        self._served = 0  # answers read on the loop; the direct lane counts its own (one writer each)
        self._failed = 0
        self.served_direct = 0
        self.failed_direct = 0
        self.direct_in_flight = 0  # 0 or 1: written only by the caller holding the channel's lane
        self._sessions: set[str] = set()
        self.exit_info: ExitInfo | None = None
        self.crashed = False
        self.crash_error: BaseException | None = None
        self._outbox: list[bytes] = []  # frames sent after the first in this loop turn, written as one
        self._turn_open = False  # a frame was written in this loop turn already
        self.became_ready = False
        self._state = WorkerState.SPAWNING
        self._pending: dict[int, _Pending] = {}
        self._forgotten: set[int] = set()  # requests given up on: a late answer to one is no violation
        self._stderr_tail: deque[str] = deque(maxlen=stderr_lines)
        self._stop_reason: str | None = None
        self._kill_reason: str | None = None
        self._protocol_error: ProtocolError | None = None
        self._abandon_read = False
        self._hello_future: asyncio.Future[Hello] = loop.create_future()
        self._exit_task: asyncio.Future[int] = asyncio.ensure_future(process.wait())
        self._exit_task.add_done_callback(self._on_exit_seen)
        self._done = asyncio.Event()
        self._stderr_task: asyncio.Task[None] | None = None
        if process.stderr is not None:
            self._stderr_task = loop.create_task(self._read_stderr(process.stderr), name=f"stderr-{worker_id}")
        self._channel = open_channel(process, loop, max_frame_size)  # None: read through the streams
        if self._channel is not None:
            self._channel.loop_wants_frames = self._loop_wants_frames
        self._reader_task = loop.create_task(self._run(), name=f"reader-{worker_id}")

    @property
    def channel(self) -> Channel | None:
        """Its pipes at the fd level (what ``SyncPool``'s direct lane uses), if the process has pipe transports."""
        return self._channel

    def _loop_wants_frames(self) -> bool:
        return bool(self._pending) or self._exit_task.done() or self.hello is None

    @property
    def requests_served(self) -> int:
        return self._served + self.served_direct

    @property
    def failures(self) -> int:
        return self._failed + self.failed_direct

    # -- state ------------------------------------------------------------------------------
    @property
    def state(self) -> WorkerState:
        if self._state is WorkerState.READY and self.pending_count >= self.max_in_flight:
            return WorkerState.BUSY
        return self._state

    @property
    def pending_count(self) -> int:
        """Requests sent to it and not yet answered, the direct lane's included (reservations: ``Slots``)."""
        return len(self._pending) + self.direct_in_flight

    @property
    def sessions(self) -> frozenset[str]:
        """The sessions pinned to it (``Sessions`` pins and unpins them)."""
        return frozenset(self._sessions)

    def pin(self, session_id: str) -> None:
        self._sessions.add(session_id)

    def unpin(self, session_id: str) -> None:
        self._sessions.discard(session_id)

    @property
    def alive(self) -> bool:
        """Not dead and not known to be exiting (it may still be spawning or draining)."""
        return self._state is not WorkerState.DEAD and not self._exit_task.done()

    def can_stream(self) -> bool:
        """Whether its Hello lists the ``stream`` capability (chunk frames before a Response)."""
        return self.hello is not None and "stream" in self.hello.capabilities

    def accepts_work(self) -> bool:
        return self._state is WorkerState.READY and not self._exit_task.done()

    def mark_ready(self) -> None:
        if self._state is WorkerState.SPAWNING and self.alive:
            self._state = WorkerState.READY
            self.became_ready = True

    def mark_draining(self) -> None:
        if self._state in (WorkerState.SPAWNING, WorkerState.READY):
            self._state = WorkerState.DRAINING

    @property
    def kill_reason(self) -> str | None:
        """Why the pool killed it (a request timeout, a failed start), if it did."""
        return self._kill_reason

    @property
    def stop_reason(self) -> str | None:
        """Why the pool stopped it on purpose (closing, recycling, idle overflow), if it did."""
        return self._stop_reason

    @property
    def start_ms(self) -> float | None:
        return None if self.hello_at is None else (self.hello_at - self.spawned_at) * 1000

    def snapshot(self, reserved: int = 0) -> WorkerStats:
        """Its stats; ``reserved`` is what ``Slots`` holds for it (it counts as in flight)."""
        in_flight = self.pending_count + reserved
        state = self.state
        if state is WorkerState.READY and in_flight >= self.max_in_flight:
            state = WorkerState.BUSY
        return WorkerStats(
            worker_id=self.worker_id,
            pid=self.pid,
            state=state.value,
            overflow=self.overflow,
            start_ms=None if self.start_ms is None else round(self.start_ms, 3),
            requests_served=self.requests_served,
            failures=self.failures,
            in_flight=in_flight,
            sessions=len(self._sessions),
        )

    def __repr__(self) -> str:
        mode = self.hello.mode if self.hello is not None else "?"
        exited = f" {self.exit_info.text}" if self.exit_info is not None else ""
        return (
            f"<WorkerHandle {self.worker_id} pid={self.pid} {self.state.value}{exited} "
            f"handlers={mode} pending={len(self._pending)}>"
        )

    # -- start ------------------------------------------------------------------------------
    async def wait_hello(self, timeout: float) -> Hello:
        """The validated Hello, or ``WorkerStartupFailed``/``VersionMismatch`` (the worker is then killed)."""
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._hello_future)
        except TimeoutError:
            self.kill(f"no hello within start_timeout={timeout} s")
            await self.wait_closed()
            raise WorkerStartupFailed(
                f"worker {self.worker_id} sent no hello within start_timeout={timeout} s; it was killed"
                + self._tail_suffix(),
                worker_pid=self.pid,
            ) from None

    # -- requests ---------------------------------------------------------------------------
    def send(self, request: dict[str, Any], on_chunk: ChunkCallback | None = None) -> asyncio.Future[Reply]:
        """Queue one request frame and return the future its Response (or failure) will settle.

        ``on_chunk(field, text)`` receives the chunk frames of a streamed request before the future settles.

        The first frame of a loop turn is written at once (no added latency); the ones that follow
        in the same turn go out together in one write at the end of it (one syscall, one wake-up of
        the worker), which is what makes pipelining pay on a 2-core machine.
        """
        request_id: int = request["id"]
        frame = self.frame(request)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._pending[request_id] = _Pending(future, request["command"], request.get("session_id"), on_chunk)
        if self._outbox:
            self._outbox.append(frame)
        elif self._turn_open:
            self._outbox.append(frame)
            loop.call_soon(self._flush)
        else:
            self._turn_open = True
            loop.call_soon(self._close_turn)
            self._write(frame)
        if self._channel is not None:
            self._channel.arm()  # a direct lane may have stood the reader down
        return future

    def frame(self, message: dict[str, Any]) -> bytes:
        """``message`` encoded in its codec and framed (``FrameTooLarge`` above its limit)."""
        return encode_frame(self.codec.dumps(message), self.max_frame_size or DEFAULT_MAX_FRAME_SIZE)

    def exited(self) -> bool:
        """Its exit was seen (safe to ask from any thread)."""
        return self._exit_task.done()

    def _close_turn(self) -> None:
        self._turn_open = False

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        self._write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _write(self, data: bytes) -> None:
        if self._channel is not None:
            if not self._exit_task.done():
                self._channel.write(data)
            return
        stdin = self.process.stdin
        if self._exit_task.done() or stdin.is_closing():
            return  # the reader fails those requests when it sees the exit
        stdin.write(data)

    def must_drain(self) -> bool:
        """Whether ``drain`` would wait (skipping it saves a coroutine per request)."""
        return self._channel is None or self._channel.buffered > 0

    async def drain(self) -> None:
        """Back-pressure on the stdin pipe; a broken pipe is left to the reader, which sees the exit."""
        if self._channel is not None:
            await self._channel.drain()
            return
        try:
            await self.process.stdin.drain()
        except (ConnectionError, RuntimeError):
            pass

    def forget(self, request_id: int) -> None:
        """Stop tracking a request whose caller gave up (its worker is being killed)."""
        self._pending.pop(request_id, None)
        self._forgotten.add(request_id)  # a direct lane's request was never pending: forgotten all the same

    # -- stopping ---------------------------------------------------------------------------
    def kill(self, reason: str) -> None:
        """SIGKILL now (a stuck DSPy call cannot be cancelled); what it held fails naming ``reason``."""
        if self._kill_reason is None and self._stop_reason is None:
            self._kill_reason = reason
        self._state = WorkerState.DEAD
        self.process.kill()

    def fail_pending(self, make_error: Callable[[int, str, str | None], BaseException]) -> int:
        """Fail every in-flight request now (used by ``aclose``: PoolClosed); returns how many."""
        pending, self._pending = self._pending, {}
        self._forgotten.update(pending)  # the worker may still answer them while it drains
        for request_id, item in pending.items():
            if not item.future.done():
                item.future.set_exception(make_error(request_id, item.command, item.session_id))
        return len(pending)

    async def stop(self, reason: str, grace: float, terminate_grace: float) -> None:
        """Planned stop: ``shutdown`` request + stdin EOF, then SIGTERM, then SIGKILL; always reaped."""
        if self._stop_reason is None and self._kill_reason is None:
            self._stop_reason = reason
        if self._state is not WorkerState.DEAD:
            self._state = WorkerState.DRAINING
        try:
            if not self._exit_task.done():
                self._say_shutdown()
                if not await self._wait_exit(grace):
                    log.info("worker %s ignored shutdown for %.1f s; sending SIGTERM", self.worker_id, grace)
                    self.process.send_signal(signal.SIGTERM)
                    if not await self._wait_exit(terminate_grace):
                        log.warning("worker %s ignored SIGTERM; sending SIGKILL", self.worker_id)
                        self.process.kill()
        finally:
            await self.wait_closed()

    def _say_shutdown(self) -> None:
        stdin = self.process.stdin
        shutdown = encode_frame(self.codec.dumps({"id": 0, "command": "shutdown", "args": {}}))
        if self._channel is not None:
            self._channel.write(shutdown)
            self._channel.close_write()
            shutdown = b""
        try:
            if not stdin.is_closing():
                if shutdown:
                    stdin.write(shutdown)
                stdin.close()  # EOF as well: either one makes the worker leave
        except (ConnectionError, RuntimeError):
            pass

    async def _wait_exit(self, timeout: float) -> bool:
        if not self._exit_task.done():
            await asyncio.wait((self._exit_task,), timeout=timeout)
        return self._exit_task.done()

    async def wait_closed(self) -> None:
        """Wait until the process is reaped and the reader has settled everything; kill if cancelled."""
        try:
            await asyncio.shield(self._done.wait())
        except asyncio.CancelledError:
            self.process.kill()  # whoever cancels us must not leave a live child behind
            raise

    def close_pipes(self) -> None:
        """Close every pipe; last step of teardown, after the reap."""
        if self._channel is not None:
            self._channel.close()
        close = getattr(self.process, "close", None)
        if callable(close):
            close()
        else:
            self.process.stdin.close()

    # -- reader -----------------------------------------------------------------------------
    def _on_exit_seen(self, task: asyncio.Future[int]) -> None:
        """Process exit observed: give the reader a short deadline to drain, then abandon the pipe."""
        if not self._reader_task.done():
            if self._channel is not None:
                self._channel.arm()  # read what it left (a Goodbye) and the end of the stream
            asyncio.get_running_loop().call_later(DRAIN_AFTER_EXIT, self._abandon)

    def _abandon(self) -> None:
        if not self._reader_task.done():
            self._abandon_read = True
            self._reader_task.cancel()

    async def _read_frames(self) -> None:
        if self._channel is not None:
            await self._channel.serve(self._deliver)
            return
        decoder = FrameDecoder(self.max_frame_size) if self.max_frame_size else FrameDecoder()
        loads = self.codec.loads
        stdout = self.process.stdout
        while True:
            chunk = await stdout.read(_CHUNK)
            if not chunk:
                decoder.check_eof()
                return
            for payload in decoder.feed(chunk):
                self._dispatch(loads(payload))

    def _deliver(self, payloads: list[bytes]) -> None:
        loads = self.codec.loads
        for payload in payloads:
            self._dispatch(loads(payload))

    def _dispatch(self, data: dict[str, Any]) -> None:
        reply = fast_reply(data)  # the common case, checked by hand: no pydantic on the hot path
        if reply is not None and self.hello is not None:
            self._settle(reply)
            return
        message = parse_worker_message(data)
        if isinstance(message, Response):
            if self.hello is None:
                raise MalformedFrame(f"worker {self.worker_id} sent a response before its hello")
            self._settle(reply_from(message))
        elif isinstance(message, Chunk):
            self._chunk(message)
        elif isinstance(message, Hello):
            self._accept_hello(message)
        else:
            self.goodbye = message

    def _chunk(self, chunk: Chunk) -> None:
        item = self._pending.get(chunk.id)
        if item is None or item.future.done():
            return  # a caller that gave up
        if item.on_chunk is None:
            raise MalformedFrame(f"worker {self.worker_id} sent a chunk for request {chunk.id}, which did not stream")
        try:
            item.on_chunk(chunk.field, chunk.text)
        except Exception:  # the consumer's bug must not look like the worker's
            log.exception("chunk callback of request %s failed", chunk.id)

    def _settle(self, response: Reply) -> None:
        if response.id is None:
            error = response.error
            log.warning("worker %s reported an uncorrelated error: %s", self.worker_id, error and error.message)
            return
        item = self._pending.pop(response.id, None)
        if item is None:
            if response.id == 0 or response.id in self._forgotten:
                self._forgotten.discard(response.id)
                return  # the shutdown request's answer, or a request whose caller gave up
            raise MalformedFrame(  # a duplicate, or an id never sent: the stream cannot be trusted (spec §6)
                f"worker {self.worker_id} sent a response for request {response.id}, which is not in flight"
            )
        self._served += 1
        if not response.ok:
            self._failed += 1
        if not item.future.done():
            item.future.set_result(response)
        self.owner.on_slot_free(self)

    def _accept_hello(self, hello: Hello) -> None:
        if self.hello is not None:
            raise MalformedFrame(f"worker {self.worker_id} sent a second hello")
        if hello.protocol != PROTOCOL_VERSION:
            raise VersionMismatch(
                f"worker {self.worker_id} speaks protocol {hello.protocol}, this host speaks {PROTOCOL_VERSION}; "
                "install the same dspy-bridge version on both sides",
                worker_pid=self.pid,
            )
        self.hello = hello
        self.hello_at = time.monotonic()
        if not self._hello_future.done():
            self._hello_future.set_result(hello)

    async def _run(self) -> None:
        """Read until EOF/exit, then make sure the process is gone and settle everything it held."""
        try:
            await self._read_frames()
        except asyncio.CancelledError:
            if not self._abandon_read:
                self.process.kill()
                await self._finish()
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except BridgeError as exc:  # ProtocolError: the stream cannot be trusted any more
            self._protocol_error = exc if isinstance(exc, ProtocolError) else MalformedFrame(str(exc))
            log.error("worker %s broke the protocol, killing it: %s", self.worker_id, exc)
            self.process.kill()
        except (ConnectionError, OSError) as exc:
            log.warning("reading from worker %s failed: %s", self.worker_id, exc)
        except Exception as exc:  # a bug on our side: still settle every request, never leave one hanging
            log.exception("reader of worker %s failed; killing the worker", self.worker_id)
            self._protocol_error = MalformedFrame(f"the host's reader failed: {type(exc).__name__}: {exc}")
            self._protocol_error.__cause__ = exc
            self.process.kill()
        await self._finish()

    async def _finish(self) -> None:
        self._state = WorkerState.DEAD
        try:
            if not await self._wait_exit(EXIT_AFTER_EOF):
                log.warning("worker %s closed its stdout but did not exit; killing it", self.worker_id)
                self.process.kill()
            await asyncio.shield(self._exit_task)  # reaped
            if self._stderr_task is not None:
                await asyncio.wait((self._stderr_task,), timeout=DRAIN_AFTER_EXIT)
        finally:
            self._settle_exit()

    def _settle_exit(self) -> None:
        """Record how it ended, fail what it held, tell the pool. Runs exactly once."""
        if self._done.is_set():
            return
        if self._stderr_task is not None and not self._stderr_task.done():
            self._stderr_task.cancel()
        self.exit_info = describe_exit(self.process.returncode)
        planned = self._stop_reason is not None or (
            self.goodbye is not None and self.goodbye.reason in _PLANNED_GOODBYES and self._protocol_error is None
        )
        self.crashed = self._kill_reason is None and not planned
        if not self._hello_future.done():
            self._hello_future.set_exception(self._startup_error())
            self._hello_future.exception()  # retrieved: nobody may be waiting any more
        elif self.crashed:
            self.crash_error = self._crash_error(None, None, None)
        self.fail_pending(self.error_for)
        self._done.set()
        self.owner.on_worker_exit(self)
