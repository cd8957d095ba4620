"""The zygote: import DSPy once, then fork ready-to-serve workers in milliseconds.

Run as ``python -m dspy_bridge.worker.zygote``. Modelled on CPython's ``multiprocessing.forkserver``
(descriptors travel over a Unix socket with SCM_RIGHTS), reduced to what a worker pool needs::

    host (ZygoteLauncher)                 zygote (one thread)                  worker (forked child)
    ─────────────────────                 ───────────────────                  ─────────────────────
    hello{fingerprint?}   ──control──▶    ready{pid, preloaded} | refused{why}
    3 × pipe();
    spawn{req, worker_id, mode, codec, env, cwd}
      + SCM_RIGHTS[stdin_r, stdout_w, stderr_w] ──▶ fork() ─────────────────▶ dup2 → fds 0/1/2, close the rest,
                          ◀── spawned{req, pid} + SCM_RIGHTS[pidfd]           reseed random, reset logging and
    frames on the pipes  ◀───────────────────────────────────────────────────▶ DSPy state, PDEATHSIG, run_worker()
                          ◀── exit{pid, returncode}   (SIGCHLD → waitpid)

The control channel is an ``AF_UNIX``/``SOCK_SEQPACKET`` socket: message boundaries are kept, so each
JSON object is one message and the descriptors sent with it arrive with it. It is either one end of a
socketpair (``--fd N``: a zygote owned by one host) or a listening socket (``--listen PATH`` or
``--listen-fd N``: the warm daemon, one connection per host run; see ``dspy_bridge.daemon``).

Lifetimes. Owned: the zygote exits when its socket reaches EOF (the host closed it or died) and has the
parent-death signal armed; before exiting it SIGKILLs its children. Daemon: when a client disconnects, that
client's children are SIGKILLed (nobody is left to read their answers); the daemon exits on ``stop``,
SIGTERM, or after ``--idle-timeout`` seconds with neither clients nor children. Children: the parent-death
signal kills them with the zygote; EOF on stdin ends an idle worker.

Fork hygiene: the zygote starts no threads (checked before every fork: ``threading.active_count()`` and
``/proc/self/task``, which also sees native pools such as OpenBLAS's — so the zygote pins
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` to 1 unless they are set), never touches ``dspy.cache`` (DSPy builds it, with its SQLite files, lazily), runs with
the collector disabled and calls ``gc.freeze()`` before forking so that children keep sharing its pages.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

__all__ = [
    "DEFAULT_PRELOAD",
    "ZYGOTE_PROTOCOL",
    "Zygote",
    "decode_message",
    "encode_message",
    "main",
    "thread_report",
]

ZYGOTE_PROTOCOL = 1
DEFAULT_PRELOAD = ("dspy", "dspy_bridge.worker._real", "dspy_bridge.worker.zygote:warm_dspy")
# What every child runs, whatever the preload: imported once here so no child pays for (or un-shares) it.
_WORKER_MODULES = ("dspy_bridge.worker._main", "dspy_bridge.worker._loop", "dspy_bridge.worker._mock")
MAX_MESSAGE = 1024 * 1024  # a spawn request carries a whole environment; SEQPACKET caps it at the send buffer
SPAWN_FDS = 3  # the child's stdin read end, stdout write end, stderr write end
_RECV_FDS = 4  # accept one extra so that a client sending too many is detected, not silently truncated

log = logging.getLogger("dspy_bridge.zygote")


def encode_message(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def decode_message(data: bytes) -> dict[str, Any]:
    message = json.loads(data)
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ValueError(f"control message is not an object with an 'op': {data[:80]!r}")
    return message


def thread_report() -> tuple[int, int]:
    """(Python threads, kernel tasks) of this process; both must be 1 before a fork is safe."""
    try:
        tasks = len(os.listdir("/proc/self/task"))
    except OSError:  # no procfs: trust Python's count
        tasks = threading.active_count()
    return threading.active_count(), tasks


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
        """Import the heavy modules once; a failure is reported to clients, not fatal.

        An entry ``module:function`` imports ``module`` and calls ``function()`` (a warm-up hook, like
        ``warm_dspy``); it must start no thread and open no descriptor.
        """
        import importlib

        started = time.perf_counter()
        for name in _WORKER_MODULES:
            importlib.import_module(name)
        for name in self.preload:
            try:
                module_name, _, function = name.partition(":")
                module = importlib.import_module(module_name)
                if function:
                    getattr(module, function)()
                self.preloaded.append(name)
            except Exception as exc:
                self.preload_failed[name] = f"{type(exc).__name__}: {exc}"
                log.warning("preload of %s failed: %s", name, exc)
        self.import_seconds = time.perf_counter() - started
        gc.collect()
        gc.freeze()

    def check_fds(self) -> None:
        """Record descriptors the preload left open (every child closes them; a stray one is worth a look)."""
        self.stray_fds = self._stray_fds()
        if self.stray_fds:
            log.warning("descriptors left open by the preload (closed in every child): %s", self.stray_fds)

    def _own_fds(self) -> set[int]:
        fds = {0, 1, 2, self._wake_r, self._wake_w, self.selector.fileno()}
        for sock in (self.owned, self.listener, *(c.sock for c in self.clients.values())):
            if sock is not None and sock.fileno() >= 0:
                fds.add(sock.fileno())
        return fds

    def _stray_fds(self) -> list[str]:
        try:
            names = os.listdir("/proc/self/fd")
        except OSError:
            return []
        stray = []
        own = self._own_fds()
        for name in names:
            fd = int(name)
            if fd in own:
                continue
            try:
                stray.append(f"{fd}→{os.readlink(f'/proc/self/fd/{fd}')}")
            except OSError:  # the descriptor listdir itself used, already closed
                continue
        return stray

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
        from dspy_bridge.daemon import check_peer

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
                _close_all(fds)
                self._drop_client(client)
                return
            if client.refused:  # whatever it still says is ignored until it hangs up
                _close_all(fds)
                continue
            try:
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise ValueError("control message truncated (too large, or too many descriptors)")
                self._dispatch(client, decode_message(data), fds)  # a spawn consumes (and clears) fds
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("bad control message: %s", exc)
                self._send(client.sock, {"op": "error", "error": str(exc)})
            finally:
                _close_all(fds)

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
            from dspy_bridge.daemon import fingerprint_mismatch

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
            spec = _SpawnSpec.parse(message, fds)
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
            self._become_worker(spec)  # never returns
        self.forks += 1
        _close_all(fds)
        fds.clear()
        client.pids.add(pid)
        self.children[pid] = client
        pidfd = _pidfd_open(pid)
        try:
            self._send(client.sock, {"op": "spawned", "req": request_id, "pid": pid}, [] if pidfd is None else [pidfd])
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _become_worker(self, spec: _SpawnSpec) -> None:
        """In the child: shed the zygote, take the three pipes as 0/1/2, become a normal worker."""
        code = 70
        try:
            zygote_pid = os.getppid()
            signal.set_wakeup_fd(-1)
            for signum, handler in self._saved_signals.items():
                signal.signal(signum, handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self.selector.close()
            for sock in (self.owned, self.listener, *(c.sock for c in self.clients.values())):
                if sock is not None:
                    sock.close()
            for fd, target in zip(spec.fds, (0, 1, 2), strict=True):
                os.dup2(fd, target)
            os.closerange(3, _max_fd())  # our pipes' originals, the wake pipe, anything a preload left open
            gc.enable()
            from dspy_bridge.worker._process import PARENT_PID_ENV, watch_parent

            watch_parent(expected_parent=zygote_pid)
            os.setsid()  # own process group, as a spawned worker has: the pool may signal the group
            _replace_environ({**spec.env, PARENT_PID_ENV: str(zygote_pid)})
            _extend_sys_path(spec.env.get("PYTHONPATH", ""))
            if spec.cwd:
                os.chdir(spec.cwd)
            _set_process_name(f"dspyb-{spec.worker_id}")
            sys.argv = ["dspy_bridge.worker", "--mode", spec.mode, "--codec", spec.codec, "--worker-id", spec.worker_id]
            _reset_inherited_state(spec)
            from dspy_bridge.worker._main import run_worker

            run_worker(
                spec.mode,
                spec.codec,
                spec.worker_id,
                spec.max_concurrency,
                spec.max_frame_size,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
                sys.stderr.flush()
        finally:
            os._exit(code)

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


@dataclass(frozen=True)
class _SpawnSpec:
    """A validated spawn request: what the child needs after the fork."""

    worker_id: str
    mode: str
    codec: str
    env: dict[str, str]
    cwd: str | None
    max_concurrency: int
    max_frame_size: int
    fds: tuple[int, int, int]

    @classmethod
    def parse(cls, message: dict[str, Any], fds: list[int]) -> _SpawnSpec:
        if len(fds) != SPAWN_FDS:
            raise ValueError(f"spawn needs exactly {SPAWN_FDS} descriptors (stdin, stdout, stderr), got {len(fds)}")
        from dspy_bridge.protocol._frames import DEFAULT_MAX_FRAME_SIZE

        worker_id, mode, codec = message.get("worker_id"), message.get("mode"), message.get("codec")
        env, cwd = message.get("env"), message.get("cwd")
        max_concurrency = message.get("max_concurrency", 1)
        max_frame_size = message.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE)
        if not isinstance(worker_id, str) or not worker_id:
            raise ValueError("spawn needs a non-empty string 'worker_id'")
        if mode not in ("real", "mock"):
            raise ValueError(f"spawn 'mode' must be 'real' or 'mock', got {mode!r}")
        if codec not in ("msgpack", "json"):
            raise ValueError(f"spawn 'codec' must be 'msgpack' or 'json', got {codec!r}")
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError("spawn 'env' must map strings to strings (the child's whole environment)")
        if cwd is not None and not isinstance(cwd, str):
            raise ValueError("spawn 'cwd' must be a string or null")
        if type(max_concurrency) is not int or max_concurrency < 1:
            raise ValueError("spawn 'max_concurrency' must be a positive integer")
        if type(max_frame_size) is not int or max_frame_size < 1:
            raise ValueError("spawn 'max_frame_size' must be a positive integer")
        return cls(worker_id, mode, codec, env, cwd, max_concurrency, max_frame_size, (fds[0], fds[1], fds[2]))


# -- helpers shared by the parent and the child ------------------------------------------------------


def _note_signal(signum: int, frame: FrameType | None) -> None:
    """Nothing to do here: ``set_wakeup_fd`` already wrote the signal number to the wake pipe."""


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _pidfd_open(pid: int) -> int | None:
    """A descriptor for exactly this child (no pid reuse race: it is not reaped yet); None before Linux 5.3."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1024


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


def _replace_environ(env: dict[str, str]) -> None:
    """Make ``os.environ`` exactly ``env``, touching only what differs (each putenv costs)."""
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def warm_dspy() -> None:
    """Load, once in the zygote, what every DSPy worker would load on its first LM call.

    Those lazy imports and DSPy's model-metadata map (~80 ms and ~15 MiB per process, read from the
    packaged snapshot) then stay shared by all children. The map is loaded only when it comes from the
    local snapshot (``LITELLM_LOCAL_MODEL_COST_MAP``, which the zygote defaults to true): a zygote must
    not wait on the network.
    """
    import importlib

    for name in ("dspy.clients.execution", "dspy.clients.costs", "dspy.clients.call_result"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "").lower() == "true":
        with contextlib.suppress(Exception):  # advisory data: a DSPy without it simply loads lazily
            importlib.import_module("dspy.clients.model_metadata").model_info("gemini", "gemini-2.5-flash")


def _extend_sys_path(pythonpath: str) -> None:
    """Give the child the host's import path, as a spawned worker gets through PYTHONPATH."""
    for entry in reversed([p for p in pythonpath.split(os.pathsep) if p]):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _set_process_name(name: str) -> None:
    """``ps -o comm`` shows which worker this is (PR_SET_NAME, at most 15 bytes)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


_THREAD_POOL_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_KEEPALIVE: list[Any] = []  # inherited objects the child must neither use nor let the GC close


def _reset_inherited_state(spec: _SpawnSpec) -> None:
    """What a fork copies but a worker must own: random state, logging handlers, DSPy/litellm globals."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        with contextlib.suppress(Exception):
            numpy.random.seed()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = spec.env.get("DSPY_BRIDGE_WORKER_LOG", "WARNING").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=level if level in logging.getLevelNamesMapping() else "WARNING",
        format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    dspy = sys.modules.get("dspy")
    if dspy is not None and "cache" in vars(dspy):
        # The zygote should never build it (its SQLite connections must not cross a fork); if something
        # did, keep the inherited one alive and untouched and let DSPy lazily build a fresh one.
        _KEEPALIVE.append(vars(dspy).pop("cache"))
    settings = sys.modules.get("dspy.dsp.utils.settings")
    if settings is not None:
        for name in ("config_owner_thread_id", "config_owner_async_task"):
            if hasattr(settings, name):
                setattr(settings, name, None)
    litellm = sys.modules.get("litellm")
    clients = getattr(litellm, "in_memory_llm_clients_cache", None) if litellm is not None else None
    if clients is not None and hasattr(clients, "flush_cache"):
        with contextlib.suppress(Exception):
            clients.flush_cache()


# -- entry point ---------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dspy_bridge.worker.zygote", description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="inherited socketpair end: a zygote owned by one host")
    where.add_argument("--listen", help="daemon: path of the Unix socket to create (mode 0600)")
    where.add_argument("--listen-fd", type=int, help="daemon: an already listening SOCK_SEQPACKET socket")
    parser.add_argument(
        "--preload",
        default=",".join(DEFAULT_PRELOAD),
        help="comma-separated modules to import once (default: %(default)s; add litellm if the LM needs it)",
    )
    parser.add_argument("--parent-pid", type=int, help="owned zygote: exit if this process is not our parent")
    parser.add_argument("--idle-timeout", type=float, default=None, help="daemon: exit after this many idle seconds")
    parser.add_argument("--ready-fd", type=int, help="daemon: write one line to this descriptor once serving")
    parser.add_argument("--daemonize", action="store_true", help="daemon: fork, let the parent exit, new session")
    parser.add_argument("--log-level", default=os.environ.get("DSPY_BRIDGE_ZYGOTE_LOG", "INFO"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    options = _parse_args(argv)
    if options.daemonize:
        if os.fork():
            os._exit(0)  # the starter reaps this parent at once; the daemon is adopted by init (or a subreaper)
        os.setsid()
    gc.disable()  # from here on: no collection frees holes in pages the children will share
    logging.basicConfig(
        stream=sys.stderr,
        level=options.log_level.upper(),
        format=f"%(asctime)s zygote[{os.getpid()}] %(levelname)s %(message)s",
    )
    import faulthandler

    faulthandler.enable()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    for name in _THREAD_POOL_ENV:  # numpy's OpenBLAS would start a thread pool at import (explicit values win)
        os.environ.setdefault(name, "1")
    preload = tuple(name.strip() for name in options.preload.split(",") if name.strip())
    if options.fd is not None:
        from dspy_bridge.worker._process import watch_parent

        watch_parent(expected_parent=options.parent_pid)
        zygote = Zygote(owned=socket.socket(fileno=options.fd), preload=preload)
    else:
        from dspy_bridge.daemon import environment_fingerprint, listen

        listener = socket.socket(fileno=options.listen_fd) if options.listen_fd is not None else listen(options.listen)
        zygote = Zygote(
            listener=listener,
            idle_timeout=options.idle_timeout,
            fingerprint=environment_fingerprint(),
            preload=preload,
        )
    zygote.install_signals()
    zygote.import_preload()
    python_threads, tasks = thread_report()
    if python_threads != 1 or tasks != 1:
        log.error("preload started threads (%d Python, %d kernel tasks): forks will be refused", python_threads, tasks)
    log.info("ready: preloaded %s in %.2f s", ",".join(zygote.preloaded) or "nothing", zygote.import_seconds)
    if options.ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(options.ready_fd, f"ready {os.getpid()}\n".encode())
        os.close(options.ready_fd)
    zygote.check_fds()
    sys.exit(zygote.serve())


if __name__ == "__main__":
    main()
