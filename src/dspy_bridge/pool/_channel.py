"""The bytes between the host and one worker: its stdin and stdout pipes, read and written at the fd level.

    loop thread                                   a SyncPool caller thread (the direct lane)
    ───────────                                   ───────────────────────────────────────────
    write(frame) ─┐                               call(frame, id, deadline)
                  ├─ _wlock ─▶ os.write(stdin) ◀──┤   write, then poll + os.read stdout itself
    add_writer ◀──┘  (remainder buffered)         │   until its own Response; any other frame
    add_reader(stdout) ─▶ _on_readable ─┐         │   (an async request's answer, a Goodbye)
                  lane lock (try) ──────┴── lane ─┘   is handed to the loop with call_soon_threadsafe

Both sides read through one ``FrameDecoder``; whoever holds ``lane`` owns it and the stdout fd. The loop's
reader only *tries* the lane: if a caller holds it, the reader stands down (removes itself) and the caller
re-arms it when it leaves, if the loop still expects frames. So a synchronous request costs one write, one
poll and one read on the caller's own thread — no hop to the loop thread and back.

The fds are duplicates of the transports' (the transports stay, paused): closing them is ours alone, under
the locks, so a caller can never write to an fd number the loop closed and the OS handed to someone else.
Reads take up to 1 MiB at once; a batch of frames leaves in one ``os.write``.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from dspy_bridge._exceptions import BridgeError
from dspy_bridge.protocol._codec import Codec
from dspy_bridge.protocol._frames import DEFAULT_MAX_FRAME_SIZE, FrameDecoder

__all__ = ["Channel", "LaneEnded", "open_channel"]

_READ = 1024 * 1024
_GOING_ON = object()  # _hand_over: the stream has not ended
_HIGH_WATER = 256 * 1024  # drain() waits while more than this is buffered for the worker


class LaneEnded(Exception):
    """The direct lane could not finish its request: ``reason`` is ``"eof"``, ``"timeout"`` or ``"closed"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_channel(process: Any, loop: asyncio.AbstractEventLoop, max_frame_size: int | None) -> Channel | None:
    """A channel over ``process``'s pipes, or None if it has no pipe transports (then the streams are used)."""
    transports = getattr(process, "pipe_transports", None)
    if not callable(transports):
        return None
    pair = transports()
    if pair is None:
        return None
    write_transport, read_transport = pair
    write_pipe = write_transport.get_extra_info("pipe")
    read_pipe = read_transport.get_extra_info("pipe")
    stream = process.stdout
    buffered = getattr(stream, "_buffer", None)  # what the transport read before us (a forked worker's Hello)
    if write_pipe is None or read_pipe is None or not isinstance(buffered, bytearray) or stream.at_eof():
        return None
    read_transport.pause_reading()  # from now on its fd is read here, never by the transport
    channel = Channel(loop, os.dup(write_pipe.fileno()), os.dup(read_pipe.fileno()), max_frame_size)
    channel.read_transport = read_transport
    channel.preread = bytes(buffered)
    buffered.clear()
    return channel


class Channel:
    """One worker's pipes (see the module docstring); built by ``open_channel``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wfd: int, rfd: int, max_frame_size: int | None) -> None:
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        self._loop = loop
        self._wfd = wfd
        self._rfd = rfd
        self._decoder = FrameDecoder(max_frame_size or DEFAULT_MAX_FRAME_SIZE)
        self.lane = threading.Lock()  # whoever holds it reads stdout and owns the decoder
        self._wlock = threading.Lock()  # whole frames, in order, from either thread
        self._wbuf = bytearray()  # what the worker has not taken yet (non-empty: a writer is registered)
        self._wclosed = False
        self._rclosed = False
        self._eof_seen = False
        self._armed = False
        # While stood down, the loop still learns when stdout ends: an epoll set that reports only HUP.
        self._hup = select.epoll()
        self._hup.register(rfd, 0)  # EPOLLHUP is always reported, nothing else is asked for
        self._poller = select.poll()  # the lane's wait for stdout (used only by the lane's holder)
        self._poller.register(rfd, select.POLLIN)
        self._watching_hup = False
        self._hup_missed = False  # it fired while a caller held the lane: that caller re-arms us
        self._reading: asyncio.Future[None] | None = None
        self._deliver: Callable[[list[bytes]], None] | None = None
        self._drained: list[asyncio.Future[None]] = []
        self.loop_wants_frames: Callable[[], bool] = lambda: False  # set by the handle
        self.read_transport: asyncio.BaseTransport | None = None  # closed when reading ends (so wait() returns)
        self.preread = b""  # bytes the stream had read before the channel took the fd over

    # -- writing (either thread) --------------------------------------------------------------
    @property
    def write_closed(self) -> bool:
        return self._wclosed

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the worker's pipe."""
        return len(self._wbuf)

    def write(self, data: bytes) -> None:
        """Loop thread: write now what the pipe takes, buffer the rest (flushed when the pipe has room)."""
        with self._wlock:
            if self._wclosed:
                return
            if self._wbuf:
                self._wbuf += data
                return
            try:
                written = os.write(self._wfd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # the worker is gone: its reader sees the exit and fails what it held
            if written < len(data):
                self._wbuf += data[written:]
                self._loop.add_writer(self._wfd, self._flush_ready)

    def _flush_ready(self) -> None:
        with self._wlock:
            try:
                written = os.write(self._wfd, self._wbuf) if not self._wclosed else len(self._wbuf)
            except BlockingIOError:
                return
            except OSError:
                written = len(self._wbuf)
            del self._wbuf[:written]
            if not self._wbuf:
                self._loop.remove_writer(self._wfd)
            if len(self._wbuf) <= _HIGH_WATER:
                waiters, self._drained = self._drained, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def drain(self) -> None:
        """Back-pressure: wait while more than 256 KiB wait for the worker to read them."""
        while len(self._wbuf) > _HIGH_WATER and not self._wclosed:
            waiter = self._loop.create_future()
            self._drained.append(waiter)
            await waiter

    def _write_blocking(self, data: bytes, deadline: float | None, gone: Callable[[], bool]) -> None:
        """Caller thread: the whole frame, waiting for room if the pipe is full (never past ``deadline``)."""
        view = memoryview(data)
        with self._wlock:
            if self._wclosed:
                raise LaneEnded("closed")
            if self._wbuf:  # the loop's writer flushes it, in order
                self._wbuf += data
                return
            poller: select.poll | None = None
            while view:
                try:
                    view = view[os.write(self._wfd, view) :]
                    continue
                except BlockingIOError:
                    pass
                except OSError:
                    raise LaneEnded("eof") from None
                if poller is None:
                    poller = select.poll()
                    poller.register(self._wfd, select.POLLOUT)
                if not poller.poll(_wait_ms(deadline)):
                    if _past(deadline):
                        raise LaneEnded("timeout")
                    if gone():
                        raise LaneEnded("eof")

    def close_write(self) -> None:
        """EOF for the worker (after what is buffered is dropped: the worker is being stopped)."""
        with self._wlock:
            if self._wclosed:
                return
            self._wclosed = True
            if self._wbuf:
                self._wbuf.clear()
                self._loop.remove_writer(self._wfd)
            os.close(self._wfd)
        waiters, self._drained = self._drained, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- reading on the loop --------------------------------------------------------------------
    async def serve(self, deliver: Callable[[list[bytes]], None]) -> None:
        """Loop thread: hand every batch of payloads to ``deliver`` until EOF (raises what reading raised)."""
        self._deliver = deliver
        self._reading = self._loop.create_future()
        if self.preread:
            with self.lane:  # no caller can hold it yet: the worker is not ready before its Hello is read
                payloads, self.preread = self._decoder.feed(self.preread), b""
            self._hand_over(payloads, _GOING_ON)
        self.arm()
        try:
            await self._reading
        finally:
            self._disarm()

    def arm(self) -> None:
        """Loop thread: watch stdout again (a no-op while armed, or once reading has ended)."""
        if self._armed or self._reading is None or self._reading.done() or self._rclosed:
            return
        self._unwatch_hup()
        self._armed = True
        self._loop.add_reader(self._rfd, self._on_readable)

    def _disarm(self) -> None:
        self._unwatch_hup()
        if self._armed:
            self._armed = False
            if not self._rclosed:
                self._loop.remove_reader(self._rfd)

    def _stand_down(self) -> None:
        """A caller holds the lane: stop reading (it hands our frames over) but keep watching for the end."""
        self._disarm()
        if not self._rclosed:
            self._watching_hup = True
            self._loop.add_reader(self._hup.fileno(), self._on_hup)

    def _unwatch_hup(self) -> None:
        if self._watching_hup:
            self._watching_hup = False
            self._loop.remove_reader(self._hup.fileno())

    def _on_hup(self) -> None:
        """The worker's end of stdout closed while we stood down: read what is left, unless a caller is."""
        self._unwatch_hup()
        self._hup_missed = True  # first: a caller leaving from now on sees it and re-arms us
        if self.lane.locked():
            return  # the caller sees the end itself, or re-arms us when it leaves
        self._hup_missed = False
        self.arm()

    def _on_readable(self) -> None:
        if not self.lane.acquire(blocking=False):
            self._stand_down()  # a caller reads now; it hands our frames over and re-arms us if needed
            return
        try:
            payloads = self._read_available()
        except BaseException as exc:  # a frame cut short or too large: the reader task decides
            self._end(exc)
            return
        finally:
            self.lane.release()
        self._hand_over(payloads, None if self._eof_seen else _GOING_ON)

    def _hand_over(self, payloads: list[bytes], end: object) -> None:
        """Loop thread: deliver ``payloads``, then end reading (``None``: cleanly; an exception: with it)."""
        try:
            if payloads and self._deliver is not None:
                self._deliver(payloads)
        except BaseException as exc:  # a bad frame: the reader task decides
            self._end(exc)
            return
        if end is not _GOING_ON:
            self._end(end if isinstance(end, BaseException) else None)

    def _read_available(self) -> list[bytes]:
        """Holding the lane: what one read brings (``_eof_seen`` set at end of stream)."""
        if self._eof_seen or self._rclosed:
            self._eof_seen = True
            return []
        try:
            chunk = os.read(self._rfd, _READ)
        except BlockingIOError:
            return []
        except OSError:
            chunk = b""
        if not chunk:
            self._eof_seen = True
            self._decoder.check_eof()
            return []
        return self._decoder.feed(chunk)

    def _end(self, error: BaseException | None) -> None:
        self._disarm()
        if self.read_transport is not None:
            self.read_transport.close()  # asyncio's Process.wait() returns only once every pipe is closed
        reading = self._reading
        if reading is not None and not reading.done():
            if error is None:
                reading.set_result(None)
            else:
                reading.set_exception(error)

    # -- the direct lane (a caller thread holding ``lane``) -----------------------------------
    def call(
        self, frame: bytes, request_id: int, codec: Codec, deadline: float | None, gone: Callable[[], bool]
    ) -> dict[str, Any]:
        """Write ``frame`` and read until the Response to ``request_id``; other frames go to the loop.

        Raises ``LaneEnded``: ``"eof"`` at end of stream, on a broken frame (the loop is given the error and
        stops trusting the stream) or when ``gone()`` says the worker exited and nothing more comes;
        ``"timeout"`` past ``deadline`` (monotonic); ``"closed"`` if the pipe was closed already.
        """
        self._write_blocking(frame, deadline, gone)
        poller = self._poller
        foreign: list[bytes] = []
        end: object = _GOING_ON
        try:
            while True:
                # The answer cannot be there yet right after the write: wait first, then read (no EAGAIN).
                if not poller.poll(_wait_ms(deadline)):
                    if _past(deadline):
                        raise LaneEnded("timeout")
                    if gone():
                        end = None
                        raise LaneEnded("eof")
                    continue
                payloads = self._read_available()
                for index, payload in enumerate(payloads):
                    message = codec.loads(payload)
                    if message.get("id") == request_id and message.get("type") == "response":
                        foreign.extend(payloads[index + 1 :])
                        return message
                    foreign.append(payload)
                if foreign:  # now, not when we are done: the loop may be waiting for them (or must reject them)
                    self._loop.call_soon_threadsafe(self._hand_over, foreign, _GOING_ON)
                    foreign = []
                if self._eof_seen:
                    end = None
                    raise LaneEnded("eof")
        except BridgeError as exc:  # a cut or undecodable frame: the stream cannot be trusted any more
            end = exc
            raise LaneEnded("eof") from exc
        finally:
            if foreign or end is not _GOING_ON:
                self._loop.call_soon_threadsafe(self._hand_over, foreign, end)

    def fail(self, error: BaseException) -> None:
        """Caller thread: a frame read on the lane broke the protocol; the loop stops trusting the stream."""
        self._loop.call_soon_threadsafe(self._hand_over, [], error)

    def leave(self) -> None:
        """A caller is done with the lane (call after releasing it): re-arm the loop if it expects frames."""
        if not self._armed and (self._hup_missed or self.loop_wants_frames()):
            self._hup_missed = False
            try:
                self._loop.call_soon_threadsafe(self.arm)
            except RuntimeError:  # the loop is closed: nothing more to read for it
                pass

    # -- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Loop thread, after the reap: close both fds (waiting for a caller to leave the lane first)."""
        self.close_write()
        self._disarm()
        with self.lane:
            if not self._rclosed:
                self._rclosed = True
                os.close(self._rfd)
                self._hup.close()


def _wait_ms(deadline: float | None) -> int:
    if deadline is None:
        return 100  # wake now and then: a grandchild may hold the pipe open after the worker died
    return max(0, min(100, int((deadline - time.monotonic()) * 1000) + 1))


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
