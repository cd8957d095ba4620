"""The fork server: one thread, one ``select`` loop, serving the zygote protocol to one host or many.

Owned (``Zygote(owned=sock)``): one end of a socketpair, one host; the zygote stops when that host hangs
up. Daemon (``Zygote(listener=sock)``): a listening socket; each connection is checked (same uid,
``SO_PEERCRED``) and must present a matching environment fingerprint before it may spawn. When a client
disconnects, its children are SIGKILLed (nobody is left to read their answers); the daemon stops on
``stop``, SIGTERM, or after ``idle_timeout`` seconds with neither clients nor children. The messages are
``dspy_bridge.protocol._zygote``'s; what the child does after ``fork()`` is ``_fork_child``'s.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from dspy_bridge.protocol._fingerprint import fingerprint_mismatch
from dspy_bridge.protocol._rendezvous import check_peer
from dspy_bridge.protocol._zygote import MAX_MESSAGE, ZYGOTE_PROTOCOL, close_fds, decode_message, encode_message
from dspy_bridge.worker._fork_child import SpawnSpec, become_worker
from dspy_bridge.worker._preload import import_preload, open_fds, thread_report

__all__ = ["Zygote"]

_RECV_FDS = 4  # accept one extra so that a client sending too many is detected, not silently truncated

log = logging.getLogger("dspy_bridge.zygote")


@dataclass(eq=False)
class _Client:
    """One control connection: a host run. ``greeted`` once its hello was accepted."""

    sock: socket.socket
    greeted: bool = False
    refused: bool = False
    pids: set[int] = field(default_factory=set)
    peer_pid: int | None = None


class Zygote:
    """The fork server's state and its single-threaded ``select`` loop."""

    def __init__(
        self,
        *,
        owned: socket.socket | None = None,
        listener: socket.socket | None = None,
        idle_timeout: float | None = None,
        fingerprint: dict[str, str] | None = None,
        preload: tuple[str, ...] = (),
    ) -> None:
        if (owned is None) == (listener is None):
            raise ValueError("a zygote serves either one owned socket or one listener")
        self.owned = owned
        self.listener = listener
        self.idle_timeout = idle_timeout
        self.fingerprint = fingerprint
        self.preload = preload
        self.preloaded: list[str] = []
        self.preload_failed: dict[str, str] = {}
        self.import_seconds = 0.0
        self.started = time.time()
        self.forks = 0
        self.clients: dict[int, _Client] = {}
        self.children: dict[int, _Client | None] = {}
        self.stray_fds: list[str] = []
        self.selector = selectors.DefaultSelector()
        self._stopping = False
        self._idle_since = time.monotonic()
        self._wake_r, self._wake_w = os.pipe()
        self._saved_signals: dict[int, Any] = {}
        self._bound = _socket_file(listener) if listener is not None else None

    # -- start-up ---------------------------------------------------------------------------------
    def import_preload(self) -> None:
        """Import the preload once (see ``_preload.import_preload``); failures are reported to clients."""
        result = import_preload(self.preload)
        self.preloaded, self.preload_failed, self.import_seconds = result.names, result.failed, result.seconds

    def check_fds(self) -> None:
        """Record descriptors the preload left open (every child closes them; a stray one is worth a look)."""
        self.stray_fds = open_fds(self._own_fds())
        if self.stray_fds:
            log.warning("descriptors left open by the preload (closed in every child): %s", self.stray_fds)

    def _own_fds(self) -> set[int]:
        fds = {0, 1, 2, self._wake_r, self._wake_w, self.selector.fileno()}
        for sock in (self.owned, self.listener, *(c.sock for c in self.clients.values())):
            if sock is not None and sock.fileno() >= 0:
                fds.add(sock.fileno())
        return fds

    def install_signals(self) -> None:
        """SIGCHLD and SIGTERM wake the loop through a pipe (handlers only record); ^C is the host's business."""
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        for signum, handler in (
            (signal.SIGCHLD, _note_signal),
            (signal.SIGTERM, _note_signal),
            (signal.SIGINT, signal.SIG_IGN),
        ):
            self._saved_signals[signum] = signal.signal(signum, handler)

    # -- the loop ---------------------------------------------------------------------------------
    def serve(self) -> int:
        """Run until stopped; return the exit code."""
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self.owned is not None:
            self._add_client(self.owned)
        if self.listener is not None:
            self.listener.setblocking(False)
            self.selector.register(self.listener, selectors.EVENT_READ, "listener")
        try:
            while not self._stopping:
                for key, _ in self.selector.select(self._select_timeout()):
                    if key.data == "wake":
                        self._on_wake()
                    elif key.data == "listener":
                        self._accept()
                    else:
                        self._on_client(key.data)
                    if self._stopping:
                        break
                if self._idle_expired():
                    log.info("idle for %.0f s with no clients: exiting", self.idle_timeout)
                    self._stopping = True
        finally:
            self._shutdown()
        return 0

    def _select_timeout(self) -> float | None:
        if self.idle_timeout is None or self.clients or self.children:
            return None
        return max(0.0, self._idle_since + self.idle_timeout - time.monotonic())

    def _idle_expired(self) -> bool:
        if self.idle_timeout is None or self.clients or self.children:
            self._idle_since = time.monotonic()
            return False
        return time.monotonic() - self._idle_since >= self.idle_timeout

    def _on_wake(self) -> None:
        try:
            signals = os.read(self._wake_r, 4096)
        except BlockingIOError:
            return
        if signal.SIGTERM in signals:
            log.info("SIGTERM: stopping")
            self._stopping = True
        self._reap()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        refusal, peer_pid = check_peer(sock)
        client = self._add_client(sock)
        client.peer_pid = peer_pid
        if refusal is not None:
            log.warning("refused a client: %s", refusal)
            self._refuse(client, refusal)

    def _add_client(self, sock: socket.socket) -> _Client:
        sock.setblocking(False)
        client = _Client(sock)
        self.clients[sock.fileno()] = client
        self.selector.register(sock, selectors.EVENT_READ, client)
        return client

    def _drop_client(self, client: _Client) -> None:
        """The host is gone: its workers have nobody to answer, so they die now."""
        if client.sock.fileno() < 0:
            return
        self.selector.unregister(client.sock)
        self.clients.pop(client.sock.fileno(), None)
        client.sock.close()
        for pid in list(client.pids):
            self.children[pid] = None
            _kill(pid)
        if self.owned is not None:
            self._stopping = True

    def _on_client(self, client: _Client) -> None:
        while client.sock.fileno() >= 0:  # until drained, or the client was dropped meanwhile
            try:
                data, fds, flags, _ = socket.recv_fds(client.sock, MAX_MESSAGE, _RECV_FDS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("control connection failed: %s", exc)
                self._drop_client(client)
                return
            if not data:
                close_fds(fds)
                self._drop_client(client)
                return
            if client.refused:  # whatever it still says is ignored until it hangs up
                close_fds(fds)
                continue
            try:
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise ValueError("control message truncated (too large, or too many descriptors)")
                self._dispatch(client, decode_message(data), fds)  # a spawn consumes (and clears) fds
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("bad control message: %s", exc)
                self._send(client.sock, {"op": "error", "error": str(exc)})
            finally:
                close_fds(fds)

    def _dispatch(self, client: _Client, message: dict[str, Any], fds: list[int]) -> None:
        op = message["op"]
        if op == "hello":
            self._hello(client, message)
        elif op == "spawn":
            if not client.greeted:
                raise ValueError("spawn before an accepted hello")
            self._spawn(client, message, fds)
        elif op == "status":
            self._send(client.sock, {"op": "status", **self.status()})
        elif op == "stop":
            log.info("stop requested by client pid %s", client.peer_pid)
            self._send(client.sock, {"op": "stopping", "pid": os.getpid()})
            self._stopping = True
        else:
            raise ValueError(f"unknown op {op!r}")

    def _hello(self, client: _Client, message: dict[str, Any]) -> None:
        reason = None
        if message.get("protocol") != ZYGOTE_PROTOCOL:
            reason = f"zygote protocol {message.get('protocol')!r} requested, this zygote speaks {ZYGOTE_PROTOCOL}"
        elif self.fingerprint is not None:
            reason = fingerprint_mismatch(self.fingerprint, message.get("fingerprint"))
        if reason is not None:
            log.warning("refused client pid %s: %s", client.peer_pid, reason)
            self._refuse(client, reason)
            return
        client.greeted = True
        self._send(client.sock, {"op": "ready", **self.status()})

    def _refuse(self, client: _Client, reason: str) -> None:
        """Say why, then half-close: closing outright with its hello unread would reset the connection
        and the client would see ECONNRESET instead of the reason. Its EOF drops it later."""
        self._send(client.sock, {"op": "refused", "reason": reason})
        if self.listener is None:
            return  # an owned zygote's host may say hello again; nobody else can connect
        client.refused = True
        with contextlib.suppress(OSError):
            client.sock.shutdown(socket.SHUT_WR)

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "protocol": ZYGOTE_PROTOCOL,
            "started": self.started,
            "preloaded": self.preloaded,
            "preload_failed": self.preload_failed,
            "import_seconds": round(self.import_seconds, 3),
            "forks": self.forks,
            "clients": sum(1 for client in self.clients.values() if client.greeted),
            "children": sum(1 for owner in self.children.values() if owner is not None),  # serving a client
            "dying": sum(1 for owner in self.children.values() if owner is None),  # killed, not yet reaped
            "idle_timeout": self.idle_timeout,
            "fingerprint": self.fingerprint,
            "stray_fds": self.stray_fds,
        }

    # -- forking ----------------------------------------------------------------------------------
    def _spawn(self, client: _Client, message: dict[str, Any], fds: list[int]) -> None:
        request_id = message.get("req")
        try:
            spec = SpawnSpec.parse(message, fds)
            python_threads, tasks = thread_report()
            if python_threads != 1 or tasks != 1:
                names = [t.name for t in threading.enumerate()]
                raise RuntimeError(
                    f"refusing to fork: the zygote runs {python_threads} Python threads {names} and {tasks} "
                    "kernel tasks; a preloaded module started a thread, and forking it could deadlock the child"
                )
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            gc.freeze()
            pid = os.fork()
        except (ValueError, TypeError, RuntimeError, OSError) as exc:
            self._send(client.sock, {"op": "spawn_failed", "req": request_id, "error": str(exc)})
            return
        if pid == 0:
            become_worker(spec, self._shed_in_child)  # never returns
        self.forks += 1
        close_fds(fds)
        fds.clear()
        client.pids.add(pid)
        self.children[pid] = client
        pidfd = _pidfd_open(pid)
        try:
            self._send(client.sock, {"op": "spawned", "req": request_id, "pid": pid}, [] if pidfd is None else [pidfd])
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _shed_in_child(self) -> None:
        """In a fresh child: drop the zygote's signal handling and close its selector and sockets."""
        signal.set_wakeup_fd(-1)
        for signum, handler in self._saved_signals.items():
            signal.signal(signum, handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self.selector.close()
        for sock in (self.owned, self.listener, *(c.sock for c in self.clients.values())):
            if sock is not None:
                sock.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            returncode = os.waitstatus_to_exitcode(status)
            client = self.children.pop(pid, None)
            if client is not None:
                client.pids.discard(pid)
                self._send(client.sock, {"op": "exit", "pid": pid, "returncode": returncode})

    def _send(self, sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """Best effort: a client that vanished is noticed by its EOF, not here."""
        try:
            if fds:
                socket.send_fds(sock, [encode_message(message)], fds)
            else:
                sock.send(encode_message(message))
        except (BrokenPipeError, ConnectionResetError, BlockingIOError, OSError) as exc:
            if sock.fileno() >= 0:
                log.warning("could not send %s to a client: %s", message.get("op"), exc)

    # -- shutdown ---------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Kill every child, reap them all, close the sockets, remove our socket file."""
        for pid in list(self.children):
            _kill(pid)
        deadline = time.monotonic() + 5.0
        while self.children and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            client = self.children.pop(pid, None)
            if client is not None and client.sock.fileno() >= 0:
                self._send(client.sock, {"op": "exit", "pid": pid, "returncode": os.waitstatus_to_exitcode(status)})
        for client in list(self.clients.values()):
            client.sock.close()
        self.clients.clear()
        if self.listener is not None:
            _unlink_if_ours(self._bound)
            self.listener.close()
        self.selector.close()
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)


def _note_signal(signum: int, frame: FrameType | None) -> None:
    """Nothing to do here: ``set_wakeup_fd`` already wrote the signal number to the wake pipe."""


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _pidfd_open(pid: int) -> int | None:
    """A descriptor for exactly this child (no pid reuse race: it is not reaped yet); None before Linux 5.3."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _socket_file(listener: socket.socket) -> tuple[str, int] | None:
    """The path a listener is bound to and that file's inode (to recognise it later), if any."""
    with contextlib.suppress(OSError):
        path = listener.getsockname()
        if isinstance(path, str) and path:
            return path, os.stat(path).st_ino
    return None


def _unlink_if_ours(bound: tuple[str, int] | None) -> None:
    """Remove our socket file, unless a newer daemon has already replaced it with its own."""
    if bound is not None:
        with contextlib.suppress(OSError):
            if os.stat(bound[0]).st_ino == bound[1]:
                os.unlink(bound[0])
