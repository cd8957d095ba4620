"""The warm daemon, host side: start, stop and ask it (the CLI), and connect a pool to it.

    dspy-bridge daemon start ──▶ python -m dspy_bridge.worker.zygote --listen <dir>/zygote.sock --daemonize
                                   (imports dspy once; forks workers for every compatible client)
    pytest run 1 ─┐  connect, SO_PEERCRED uid check, hello{fingerprint} → ready | refused{why}
    pytest run 2 ─┴▶ spawn … (as with an owned zygote; see dspy_bridge.pool._zygote)

The daemon *process* is the worker side's fork server (``dspy_bridge.worker.zygote`` with ``--listen``);
this module only runs it and talks to it, over the zygote protocol (``dspy_bridge.protocol._zygote``).
Where it listens and who may connect (a private 0700 runtime directory, a 0600 socket, same uid only) are
``dspy_bridge.protocol._rendezvous``'s rules; which environment it serves (a client must present the same
fingerprint, otherwise it is told which fields differ and starts its own zygote) is
``dspy_bridge.protocol._fingerprint``'s. The daemon exits after an idle timeout (no clients, no workers),
on ``daemon stop`` or on SIGTERM.

The CLI wraps ``daemon_start``, ``daemon_stop`` and ``daemon_status`` (each returns a printable
``DaemonInfo``); ``connect_daemon`` gives a ``ZygoteLauncher`` bound to the running daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspy_bridge._exceptions import WorkerStartupFailed
from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.pool._spawn import worker_environment
from dspy_bridge.pool._zygote import ZygoteLauncher
from dspy_bridge.protocol._fingerprint import environment_fingerprint, fingerprint_mismatch
from dspy_bridge.protocol._rendezvous import runtime_dir, socket_path
from dspy_bridge.protocol._zygote import DEFAULT_PRELOAD

__all__ = ["DEFAULT_IDLE_TIMEOUT", "DaemonInfo", "connect_daemon", "daemon_start", "daemon_status", "daemon_stop"]

DEFAULT_IDLE_TIMEOUT = 3600.0


@dataclass
class DaemonInfo:
    """What ``daemon start|stop|status`` report; ``str()`` is the printable form."""

    running: bool
    socket: str
    message: str = ""
    pid: int | None = None
    uptime: float | None = None
    preloaded: list[str] = field(default_factory=list)
    preload_failed: dict[str, str] = field(default_factory=dict)
    import_seconds: float | None = None
    clients: int | None = None
    children: int | None = None
    forks: int | None = None
    idle_timeout: float | None = None
    compatible: bool | None = None
    incompatibility: str | None = None

    def __str__(self) -> str:
        lines = [self.message] if self.message else []
        if not self.running:
            lines.append(f"daemon: not running (socket {self.socket})")
            return "\n".join(lines)
        lines.append(f"daemon: running, pid {self.pid}, socket {self.socket}")
        if self.uptime is not None:
            lines.append(f"  up {self.uptime:.0f} s; idle timeout {self.idle_timeout or 'none'} s")
        lines.append(f"  preloaded: {', '.join(self.preloaded) or 'nothing'} ({self.import_seconds} s)")
        for name, error in self.preload_failed.items():
            lines.append(f"  preload failed: {name}: {error}")
        lines.append(f"  clients: {self.clients}, live workers: {self.children}, workers forked: {self.forks}")
        if self.compatible is not None:
            lines.append(
                "  compatible with this environment: yes"
                if self.compatible
                else f"  compatible with this environment: NO — {self.incompatibility}"
            )
        return "\n".join(lines)


def _info_from_status(path: Path, status: dict[str, Any], message: str = "") -> DaemonInfo:
    reason = fingerprint_mismatch(status.get("fingerprint") or {}, environment_fingerprint())
    return DaemonInfo(
        running=True,
        socket=str(path),
        message=message,
        pid=status.get("pid"),
        uptime=time.time() - float(status.get("started", time.time())),
        preloaded=list(status.get("preloaded", [])),
        preload_failed=dict(status.get("preload_failed", {})),
        import_seconds=status.get("import_seconds"),
        clients=status.get("clients"),
        children=status.get("children"),
        forks=status.get("forks"),
        idle_timeout=status.get("idle_timeout"),
        compatible=reason is None,
        incompatibility=reason,
    )


def _request(path: Path, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One blocking request/reply with the daemon (status, stop); raises OSError if nobody listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused at once: the reason waits
            sock.send(json.dumps(message).encode())
        data = sock.recv(1024 * 1024)
    if not data:
        raise ConnectionResetError(f"the daemon at {path} closed the connection without answering")
    reply: dict[str, Any] = json.loads(data)
    if reply.get("op") == "refused":
        raise PermissionError(reply.get("reason", "refused"))
    return reply


def daemon_status(directory: Path | None = None) -> DaemonInfo:
    """Ask the daemon about itself (works even when its environment no longer matches ours)."""
    path = socket_path(directory)
    try:
        status = _request(path, {"op": "status"})
    except FileNotFoundError:
        return DaemonInfo(running=False, socket=str(path))
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError) as exc:
        return DaemonInfo(running=False, socket=str(path), message=f"stale socket ({exc})")
    return _info_from_status(path, status)


def daemon_start(
    *,
    preload: Sequence[str] | None = None,
    extra_preload: Sequence[str] = (),
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    directory: Path | None = None,
    python: str | None = None,
    timeout: float = 120.0,
    secret_env: Sequence[str] = (),
) -> DaemonInfo:
    """Start the daemon unless a compatible one runs; wait until it has imported its preload and listens.

    ``preload`` replaces the default module list (``DEFAULT_PRELOAD``); ``extra_preload`` adds to it
    (e.g. ``["litellm"]`` when the LMs go through LiteLLM). The daemon starts with ``worker_environment``'s
    environment: no key variable (nor any name in ``secret_env``) even when this shell holds one, so
    neither the daemon nor anything it forks ever has it.

    An incompatible daemon is left alone and reported: stop it first (it may serve another checkout).
    """
    from filelock import FileLock

    directory = directory or runtime_dir()
    path = socket_path(directory)
    with FileLock(str(directory / "daemon.lock"), timeout=timeout):
        current = daemon_status(directory)
        if current.running:
            current.message = (
                "daemon already running"
                if current.compatible
                else "a daemon from another environment is running; run `dspy-bridge daemon stop` first"
            )
            return current
        modules = list(DEFAULT_PRELOAD if preload is None else preload)
        modules += [name for name in extra_preload if name not in modules]
        argv = [python or sys.executable, "-m", "dspy_bridge.worker.zygote", "--listen", str(path), "--daemonize"]
        argv += ["--preload", ",".join(modules)]
        if idle_timeout is not None:
            argv += ["--idle-timeout", str(idle_timeout)]
        read_end, write_end = os.pipe()
        started = time.monotonic()
        try:
            with open(directory / "daemon.log", "ab") as log:
                launcher = subprocess.Popen(
                    [*argv, "--ready-fd", str(write_end)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(write_end,),
                    start_new_session=True,
                    env=worker_environment(PoolConfig(mode="real", secret_env=tuple(secret_env)), daemon=True),
                )
            os.close(write_end)
            write_end = -1
            launcher.wait()  # the daemonizing parent leaves at once; the daemon itself is reparented
            line = _read_line(read_end, timeout)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        if not line.startswith("ready"):
            tail = _tail(directory / "daemon.log")
            return DaemonInfo(
                running=False, socket=str(path), message=f"daemon failed to start; last log lines:\n{tail}"
            )
        info = daemon_status(directory)
        if info.pid is None:  # it already left again (a very short idle timeout): report what it said
            info.pid = int(line.split()[1])
        info.message = f"daemon started in {time.monotonic() - started:.2f} s (log: {directory / 'daemon.log'})"
        return info


def _read_line(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return ""
        chunk = os.read(fd, 256)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def daemon_stop(directory: Path | None = None, timeout: float = 10.0) -> DaemonInfo:
    """Ask the daemon to stop (its workers are killed) and wait until its process is gone."""
    path = socket_path(directory)
    try:
        reply = _request(path, {"op": "stop"})
    except FileNotFoundError:
        return DaemonInfo(running=False, socket=str(path), message="no daemon was running")
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return DaemonInfo(running=False, socket=str(path), message=f"removed a stale socket ({exc})")
    pid = int(reply["pid"])
    if not _wait_gone(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return DaemonInfo(running=False, socket=str(path), message=f"daemon pid {pid} did not stop; killed it")
    return DaemonInfo(running=False, socket=str(path), message=f"daemon pid {pid} stopped")


def _wait_gone(pid: int, timeout: float) -> bool:
    """Block until ``pid`` exits: a pidfd becomes readable then (no polling)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


async def connect_daemon(
    config: PoolConfig | None = None,
    *,
    directory: Path | None = None,
    fingerprint: dict[str, str] | None = None,
) -> tuple[ZygoteLauncher | None, str]:
    """A launcher forking from the running daemon, or (None, why not): absent, stale, other user, other env.

    ``fingerprint`` replaces ours (tests use it to present an incompatible environment).
    """
    try:
        path = socket_path(directory)
    except PermissionError as exc:
        return None, str(exc)
    if not path.exists():
        return None, f"no daemon running (no socket at {path})"
    try:
        launcher = await ZygoteLauncher.connect(path, config, fingerprint=fingerprint)
    except WorkerStartupFailed as exc:  # refused (other user, other environment) or gone mid-handshake
        return None, exc.message
    except OSError as exc:
        return None, f"daemon at {path} unreachable: {exc}"
    return launcher, f"connected to daemon pid {launcher.zygote_pid}"
