"""The warm daemon: one zygote kept alive between runs, so a second pytest run has real workers at once.

    dspy-bridge daemon start ──▶ python -m dspy_bridge.worker.zygote --listen <dir>/zygote.sock --daemonize
                                   (imports dspy once; forks workers for every compatible client)
    pytest run 1 ─┐  connect, SO_PEERCRED uid check, hello{fingerprint} → ready | refused{why}
    pytest run 2 ─┴▶ spawn … (as with an owned zygote; see dspy_bridge.worker.zygote)

Who may connect: the socket lives in a per-user runtime directory (``$XDG_RUNTIME_DIR/dspy-bridge``, else
``/tmp/dspy-bridge-<uid>``; ``DSPY_BRIDGE_RUNTIME_DIR`` overrides) created with mode 0700, and the socket
itself has mode 0600; the daemon also compares each peer's uid (``SO_PEERCRED``) with its own, which
refuses even root. Which environment: a client must present the same *fingerprint* — Python executable
and version, dspy-bridge version and source stamp, DSPy version, and a hash of the installed distributions
(their ``name-version.dist-info`` directory names, what ``importlib.metadata`` reads) — otherwise it is told
which fields differ and starts its own zygote. The daemon exits after an idle timeout (no clients, no
workers), on ``daemon stop`` or on SIGTERM.

The CLI wraps ``daemon_start``, ``daemon_stop`` and ``daemon_status`` (each returns a printable
``DaemonInfo``); the pool uses ``connect_daemon``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspy_bridge.pool._config import PoolConfig
    from dspy_bridge.pool._zygote import ZygoteLauncher

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "RUNTIME_DIR_ENV",
    "DaemonInfo",
    "check_peer",
    "connect_daemon",
    "daemon_start",
    "daemon_status",
    "daemon_stop",
    "environment_fingerprint",
    "fingerprint_mismatch",
    "listen",
    "peer_refusal",
    "runtime_dir",
    "socket_path",
]

RUNTIME_DIR_ENV = "DSPY_BRIDGE_RUNTIME_DIR"
DEFAULT_IDLE_TIMEOUT = 3600.0
SOCKET_NAME = "zygote.sock"
_FIELDS = {
    "python": "Python executable",
    "prefix": "Python environment (sys.prefix)",
    "python_version": "Python version",
    "dspy_bridge": "dspy-bridge version",
    "dspy_bridge_source": "dspy-bridge source stamp (edited files since the daemon started?)",
    "dspy": "DSPy version",
    "distributions": "installed-distribution hash (packages installed, removed or upgraded?)",
}


# -- where: a private per-user directory ---------------------------------------------------------------


def runtime_dir(create: bool = True) -> Path:
    """The per-user directory holding the socket, lock and log; refused if anyone else could enter it."""
    explicit = os.environ.get(RUNTIME_DIR_ENV)
    if explicit:
        path = Path(explicit)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "dspy-bridge"
    else:
        path = Path("/tmp") / f"dspy-bridge-{os.geteuid()}"
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=False)
    if create or os.path.lexists(path):
        _check_private_dir(path)
    return path


def _check_private_dir(path: Path) -> None:
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory (a symlink or file squats the daemon's runtime dir)")
    if info.st_uid != os.geteuid():
        raise PermissionError(f"{path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}); refusing it")
    if info.st_mode & 0o077:
        raise PermissionError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; the daemon's directory must be 0700 "
            f"(fix with: chmod 700 {path})"
        )


def socket_path(directory: Path | None = None) -> Path:
    """Where the daemon listens; looking it up never creates the runtime directory (starting does)."""
    return (directory or runtime_dir(create=False)) / SOCKET_NAME


def listen(path: str | os.PathLike[str]) -> socket.socket:
    """A listening SOCK_SEQPACKET socket at ``path`` with mode 0600, replacing a stale socket file."""
    path = os.fspath(path)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old_umask = os.umask(0o177)  # never visible to others, not even between bind and chmod
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


# -- who: same user only ---------------------------------------------------------------------------------


def peer_refusal(peer_uid: int, own_uid: int) -> str | None:
    """Why a peer of uid ``peer_uid`` may not use a daemon run by ``own_uid`` (None: it may)."""
    if peer_uid == own_uid:
        return None
    return (
        f"permission denied: the dspy-bridge daemon belongs to uid {own_uid} and serves no other user "
        f"(you are uid {peer_uid}); start your own with `dspy-bridge daemon start`"
    )


def check_peer(sock: socket.socket) -> tuple[str | None, int | None]:
    """(refusal or None, peer pid) from the kernel's record of who connected (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return peer_refusal(uid, os.geteuid()), pid


# -- which environment ---------------------------------------------------------------------------------


@functools.cache
def environment_fingerprint() -> dict[str, str]:
    """What must match between a daemon and a client for forked workers to behave like spawned ones."""
    from importlib.metadata import PackageNotFoundError, version

    def dist_version(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "python": os.path.realpath(sys.executable),  # python, python3, python3.11: one interpreter
        "prefix": sys.prefix,  # which environment: venvs share the real interpreter but not their packages
        "python_version": sys.version.split()[0],
        "dspy_bridge": dist_version("dspy-bridge"),
        "dspy_bridge_source": _source_stamp(),
        "dspy": dist_version("dspy"),
        "distributions": _distributions_hash(sys.path),
    }


def _distributions_hash(entries: Iterable[str]) -> str:
    """Hash of the ``name-version.dist-info`` names in the site directories (~1 ms, no metadata parsing)."""
    names: set[str] = set()
    for entry in entries:
        if os.path.basename(entry.rstrip(os.sep)) not in ("site-packages", "dist-packages"):
            continue
        with contextlib.suppress(OSError), os.scandir(entry) as scan:
            names.update(e.name for e in scan if e.name.endswith((".dist-info", ".egg-info")))
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def _source_stamp() -> str:
    """Sizes and mtimes of our own modules: an editable install changes code without changing version."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        info = path.stat()
        digest.update(f"{path.relative_to(root)}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def fingerprint_mismatch(ours: dict[str, str], theirs: object) -> str | None:
    """None when compatible, else a sentence naming every field that differs, with both values."""
    if not isinstance(theirs, dict):
        return "the client sent no environment fingerprint"
    differences = [
        f"{_FIELDS.get(key, key)}: daemon {ours.get(key)!r}, client {theirs.get(key)!r}"
        for key in sorted(set(ours) | set(theirs))
        if ours.get(key) != theirs.get(key)
    ]
    if not differences:
        return None
    return (
        "incompatible environment: "
        + "; ".join(differences)
        + " — restart the daemon from this environment (`dspy-bridge daemon stop && dspy-bridge daemon start`)"
    )


# -- the CLI's view ---------------------------------------------------------------------------------


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
) -> DaemonInfo:
    """Start the daemon unless a compatible one runs; wait until it has imported its preload and listens.

    ``preload`` replaces the default module list (``DEFAULT_PRELOAD``); ``extra_preload`` adds to it
    (e.g. ``["litellm"]`` when the LMs go through LiteLLM).

    An incompatible daemon is left alone and reported: stop it first (it may serve another checkout).
    """
    from filelock import FileLock

    from dspy_bridge.worker.zygote import DEFAULT_PRELOAD

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
                    env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
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
    from dspy_bridge._exceptions import WorkerStartupFailed
    from dspy_bridge.pool._zygote import ZygoteLauncher

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
