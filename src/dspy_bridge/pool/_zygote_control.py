"""The host end of one zygote control connection: hello, spawn requests, and the children's fates.

``ZygoteControl`` is driven by a loop reader callback on the control socket. It routes the zygote's
``spawned`` / ``spawn_failed`` / ``exit{pid, returncode}`` messages (``dspy_bridge.protocol._zygote``) to
the futures waiting for them; EOF on the socket means the zygote is gone, and every waiter hears so.
``connect_to_daemon`` opens such a connection to a listening daemon and presents our environment
fingerprint. Which zygote to use and what to do when it fails is ``ZygoteLauncher``'s business (``_zygote``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from dspy_bridge._exceptions import WorkerStartupFailed
from dspy_bridge.protocol._fingerprint import environment_fingerprint
from dspy_bridge.protocol._zygote import ZYGOTE_PROTOCOL, close_fds, decode_message, encode_message

__all__ = ["SpawnFailed", "ZygoteControl", "ZygoteGone", "connect_to_daemon"]

log = logging.getLogger("dspy_bridge.pool.zygote")


class ZygoteGone(Exception):
    """Control flow only: the zygote is unreachable; the launcher falls back to spawning."""


class SpawnFailed(Exception):
    """Control flow only: the zygote declined this one fork (it said why); spawn this worker instead."""


class ZygoteControl:
    """The host end of one control connection, driven by a loop reader callback."""

    def __init__(self, sock: socket.socket, description: str) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock = sock
        self.description = description
        self.lost: str | None = None
        self.ready_info: dict[str, Any] = {}
        self.on_lost: list[Callable[[str], None]] = []
        self._next_req = 0
        self._hello: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._spawns: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._pidfds: dict[int, int] = {}
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._on_readable)

    # -- receiving --------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        while self.lost is None:
            try:
                data, fds, _flags, _ = socket.recv_fds(self.sock, 65536, 2)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lose(f"control socket failed: {exc}")
                return
            if not data:
                self._lose("it closed the control socket (exited or was killed)")
                return
            try:
                self._handle(decode_message(data), fds)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring a bad message from %s: %s", self.description, exc)
                close_fds(fds)

    def _handle(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message["op"]
        if op in ("ready", "refused"):
            close_fds(fds)
            if not self._hello.done():
                self._hello.set_result(message)
        elif op == "spawned":
            pid = int(message["pid"])
            pidfd = fds.pop(0) if fds else None
            close_fds(fds)
            self._exits[pid] = self._loop.create_future()
            if pidfd is not None:
                self._pidfds[pid] = pidfd
            waiter = self._spawns.pop(message["req"], None)
            if waiter is None or waiter.done():  # the launch was cancelled meanwhile: nobody will use it
                self.signal(pid, signal.SIGKILL)
            else:
                waiter.set_result(pid)
        elif op == "spawn_failed":
            close_fds(fds)
            waiter = self._spawns.pop(message["req"], None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(SpawnFailed(str(message.get("error"))))
        elif op == "exit":
            close_fds(fds)
            self._resolve_exit(int(message["pid"]), int(message["returncode"]))
        else:
            close_fds(fds)
            log.warning("%s says: %s", self.description, message)

    def _resolve_exit(self, pid: int, returncode: int) -> None:
        future = self._exits.pop(pid, None)
        if future is not None and not future.done():
            future.set_result(returncode)
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(pidfd)
            os.close(pidfd)

    def _lose(self, reason: str) -> None:
        """The zygote is gone (or we hung up): fail waiters; children die by PDEATHSIG or the zygote's hand."""
        if self.lost is not None:
            return
        self.lost = reason
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if not self._hello.done():
            self._hello.set_exception(ZygoteGone(reason))
        for waiter in self._spawns.values():
            if not waiter.done():
                waiter.set_exception(ZygoteGone(reason))
        self._spawns.clear()
        for pid in list(self._exits):
            pidfd = self._pidfds.get(pid)
            if pidfd is None:
                self._resolve_exit(pid, -signal.SIGKILL)  # no way to watch it: assume the usual fate
            else:
                self._loop.add_reader(pidfd, self._resolve_exit, pid, -signal.SIGKILL)
        for callback in self.on_lost:
            callback(reason)

    # -- sending ----------------------------------------------------------------------------------
    async def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        if self.lost is not None:
            raise ZygoteGone(self.lost)
        data = encode_message(message)
        while True:
            try:
                if fds:
                    socket.send_fds(self.sock, [data], fds)
                else:
                    self.sock.send(data)
                return
            except (BlockingIOError, InterruptedError):
                writable: asyncio.Future[None] = self._loop.create_future()
                self._loop.add_writer(self.sock.fileno(), writable.set_result, None)
                try:
                    await writable
                finally:
                    self._loop.remove_writer(self.sock.fileno())
            except OSError as exc:
                self._on_readable()  # a refusal may be waiting behind the broken pipe: read it first
                self._lose(f"control socket failed: {exc}")
                raise ZygoteGone(self.lost) from exc

    async def hello(self, fingerprint: dict[str, str] | None) -> dict[str, Any]:
        """Handshake; raises WorkerStartupFailed with the zygote's reason when it refuses us."""
        with contextlib.suppress(ZygoteGone):  # the answer (a refusal) may already be in
            await self._send({"op": "hello", "protocol": ZYGOTE_PROTOCOL, "fingerprint": fingerprint})
        reply = await self._hello
        if reply["op"] == "refused":
            self._lose("refused")
            raise WorkerStartupFailed(f"{self.description} refused this client: {reply.get('reason')}")
        self.ready_info = reply
        return reply

    async def spawn(self, request: dict[str, Any], fds: list[int], timeout: float | None) -> int:
        req = self._next_req
        self._next_req += 1
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._spawns[req] = waiter
        try:
            await self._send({**request, "op": "spawn", "req": req}, fds)
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        finally:
            self._spawns.pop(req, None)

    # -- children ---------------------------------------------------------------------------------
    def exit_future(self, pid: int) -> asyncio.Future[int]:
        future = self._exits.get(pid)
        if future is None:  # already exited and reported: the exit message consumed it
            raise KeyError(pid)
        return future

    def signal(self, pid: int, sig: int) -> None:
        """Signal the worker's process group, after the pidfd proves the pid is still that worker."""
        if pid not in self._exits:
            return
        pidfd = self._pidfds.get(pid)
        if pidfd is not None:
            try:
                signal.pidfd_send_signal(pidfd, 0)
            except ProcessLookupError:
                return
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def close(self) -> None:
        self._lose("closed by the host")


async def connect_to_daemon(path: str, fingerprint: dict[str, str] | None, timeout: float) -> ZygoteControl:
    """A greeted connection to the daemon at ``path`` (``fingerprint`` defaults to ours).

    Raises WorkerStartupFailed when the daemon refuses us, ZygoteGone or OSError when it cannot be reached.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, path), timeout)
    except BaseException:
        sock.close()
        raise
    control = ZygoteControl(sock, f"daemon at {path}")
    try:
        await asyncio.wait_for(
            control.hello(fingerprint if fingerprint is not None else environment_fingerprint()), timeout
        )
    except BaseException:
        control.close()
        raise
    return control
