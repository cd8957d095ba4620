"""The warm daemon: a private socket, an environment fingerprint, per-client worker lifetimes, idle exit.

Every daemon here runs in its own short temporary runtime directory (``DSPY_BRIDGE_RUNTIME_DIR``), never
the user's real one, and preloads only the small probe module of ``test_zygote`` (not DSPy), so starting
one costs a fraction of a second. The other-user tests fork a child that drops to uid 65534 (``nobody``):
the suite runs as root, and the daemon must refuse even a client that the file modes would let in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.pool._daemon import connect_daemon, daemon_start, daemon_status, daemon_stop
from dspy_bridge.pool._spawn import worker_environment
from dspy_bridge.protocol._fingerprint import environment_fingerprint, fingerprint_mismatch
from dspy_bridge.protocol._rendezvous import RUNTIME_DIR_ENV, peer_refusal, runtime_dir, socket_path
from dspy_bridge.protocol._zygote import decode_message, encode_message
from test_zygote import PROBE, Conn, wait_gone

NOBODY = 65534  # the suite runs as root here, so a forked child can become another user


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short path: a Unix socket path must fit in 108 bytes, pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="dbd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def runtime(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (short_tmp / "probe").mkdir()
    (short_tmp / "probe" / "zygote_probe.py").write_text(PROBE)
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(short_tmp / "rt"))
    # The daemon inherits this: it preloads the probe from there.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(short_tmp / "probe"), *(p for p in sys.path if p)]))
    return short_tmp / "rt"


@pytest.fixture
def daemon(runtime: Path) -> Iterator[Path]:
    info = daemon_start(preload=["zygote_probe"], idle_timeout=300)
    assert info.running and info.compatible, str(info)
    yield runtime
    daemon_stop()


# -- who may connect ----------------------------------------------------------------------------------


def test_the_runtime_directory_is_private_and_squatters_are_refused(short_tmp: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(short_tmp / "rt"))
    path = runtime_dir()
    info = os.lstat(path)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
    path.chmod(0o755)
    with pytest.raises(PermissionError, match="0755"):
        runtime_dir()
    path.chmod(0o700)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(PermissionError, match=f"belongs to uid {NOBODY}"):
        runtime_dir()
    (short_tmp / "elsewhere").mkdir(mode=0o700)
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(short_tmp / "link"))
    (short_tmp / "link").symlink_to(short_tmp / "elsewhere")
    with pytest.raises(PermissionError, match="not a directory"):
        runtime_dir()


def test_peer_refusal_compares_the_kernel_reported_uid_with_ours() -> None:
    assert peer_refusal(1000, 1000) is None
    refusal = peer_refusal(0, 1000)  # root is refused too: it is not the daemon's user
    assert refusal is not None and "uid 1000" in refusal and "you are uid 0" in refusal


def test_the_fingerprint_names_every_difference() -> None:
    ours = environment_fingerprint()
    assert ours["python"] == os.path.realpath(sys.executable) and ours["prefix"] == sys.prefix
    assert ours["dspy"].startswith("3.4")
    assert set(ours) >= {"python", "prefix", "dspy_bridge", "dspy", "distributions", "dspy_bridge_source"}
    assert fingerprint_mismatch(ours, dict(ours)) is None
    theirs = {**ours, "dspy": "9.9.9", "distributions": "0" * 16}
    reason = fingerprint_mismatch(ours, theirs)
    assert reason is not None
    assert f"DSPy version: daemon {ours['dspy']!r}, client '9.9.9'" in reason
    assert "installed-distribution hash" in reason and "Python executable" not in reason
    assert fingerprint_mismatch(ours, None) == "the client sent no environment fingerprint"


def _as_nobody(action: Any) -> str:
    """Run ``action()`` in a forked child that switched to uid 65534; return what it reported."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on, only os._exit
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, str(action()).encode())
        except BaseException as exc:
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        report = reader.read().decode()
    os.waitpid(pid, 0)
    return report


def test_another_user_cannot_even_reach_the_socket(daemon: Path) -> None:
    path = socket_path()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(daemon).st_mode) == 0o700

    def connect() -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.connect(str(path))
        return "connected"

    assert _as_nobody(connect).startswith("PermissionError")


def test_another_user_who_gets_through_the_file_modes_is_refused_by_uid(short_tmp: Path) -> None:
    """Loosen the modes on purpose (a socket handed over by ``--listen-fd``) so only SO_PEERCRED stands."""
    short_tmp.chmod(0o777)
    path = short_tmp / "open.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    path.chmod(0o777)
    listener.listen(4)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    argv = [sys.executable, "-m", "dspy_bridge.worker.zygote", "--listen-fd", str(listener.fileno())]
    zygote = subprocess.Popen([*argv, "--preload", ""], pass_fds=(listener.fileno(),), env=env)
    listener.close()
    try:

        def hello() -> str:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
                sock.settimeout(60)
                sock.connect(str(path))
                with contextlib.suppress(OSError):
                    sock.send(encode_message({"op": "hello", "protocol": 1, "fingerprint": environment_fingerprint()}))
                return json.dumps(decode_message(sock.recv(65536)))

        reply = json.loads(_as_nobody(hello))
        assert reply["op"] == "refused"
        assert f"you are uid {NOBODY}" in reply["reason"] and f"uid {os.geteuid()}" in reply["reason"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:  # its own user is served
            sock.settimeout(60)
            sock.connect(str(path))
            sock.send(encode_message({"op": "hello", "protocol": 1, "fingerprint": environment_fingerprint()}))
            assert decode_message(sock.recv(65536))["op"] == "ready"
    finally:
        zygote.terminate()
        zygote.wait(60)


# -- which environment, and the workers' lifetimes ---------------------------------------------------------


async def test_compatible_clients_get_forked_workers_and_incompatible_ones_hear_why(daemon: Path) -> None:
    status = daemon_status()
    assert status.running and status.compatible and status.preloaded == ["zygote_probe"]
    launcher, reason = await connect_daemon()
    assert launcher is not None, reason
    try:
        env = {**worker_environment(PoolConfig(mode="mock")), "PROBE_VAR": "client-env"}  # the complete env
        process = await launcher.launch("w-d1", "mock", "msgpack", env)
        conn = Conn(process)
        assert (await conn.hello())["worker_id"] == "w-d1"
        probe = await conn.call("probe")
        assert probe["ppid"] == status.pid == launcher.zygote_pid  # forked by the daemon, not by us
        assert probe["probe_var"] == "client-env" and probe["cwd"] == os.getcwd()  # the client's env and cwd
        other = {**environment_fingerprint(), "dspy": "0.0.1"}
        refused, why = await connect_daemon(fingerprint=other)
        assert refused is None and "DSPy version" in why and "'0.0.1'" in why
        assert "clients: 1, live workers: 1" in str(daemon_status())
        process.stdin.close()
        assert await conn.wait() == 0
    finally:
        await launcher.aclose()


HOST_SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    from dspy_bridge.pool._config import PoolConfig
    from dspy_bridge.pool._daemon import connect_daemon
    from dspy_bridge.pool._spawn import worker_environment
    from dspy_bridge.protocol._async_streams import AsyncFrameReader, AsyncFrameWriter
    from dspy_bridge.protocol._codec import get_codec

    async def main():
        launcher, reason = await connect_daemon()
        assert launcher is not None, reason
        worker = await launcher.launch("w-busy", "mock", "msgpack", worker_environment(PoolConfig(mode="mock")))
        codec = get_codec("msgpack")
        await AsyncFrameReader(worker.stdout, codec).read()  # hello
        await AsyncFrameWriter(worker.stdin, codec).write(
            {"type": "request", "id": 1, "command": "probe_sleep", "args": {"seconds": 600}}
        )
        print(json.dumps({"worker": worker.pid}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def test_a_client_that_dies_takes_its_busy_workers_but_not_the_daemon(daemon: Path) -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        assert line, "the host script died before reporting"
        worker = json.loads(line)["worker"]
        assert not wait_gone(worker, timeout=0)
    finally:
        host.kill()
        host.wait(60)
    assert wait_gone(worker)  # the daemon saw the connection drop and killed the busy worker
    after = daemon_status()
    assert after.running and after.children == 0 and after.clients == 0


def test_start_is_idempotent_and_stop_removes_the_daemon(daemon: Path) -> None:
    again = daemon_start(preload=["zygote_probe"])
    assert again.running and "already running" in str(again)
    pid = again.pid
    assert pid is not None
    stopped = daemon_stop()
    assert f"daemon pid {pid} stopped" in str(stopped)
    assert wait_gone(pid, timeout=0) and not socket_path().exists()
    assert "not running" in str(daemon_status())
    assert "no daemon was running" in str(daemon_stop())


async def test_an_idle_daemon_exits_by_itself(runtime: Path) -> None:
    info = daemon_start(preload=[], idle_timeout=1.0)
    assert info.running and info.pid is not None
    assert wait_gone(info.pid)
    assert not socket_path().exists()
    launcher, reason = await connect_daemon()
    assert launcher is None and "no daemon running" in reason


def test_daemon_status_exit_codes_say_running_absent_or_incompatible(daemon: Path, capsys: Any) -> None:
    """``dspy-bridge daemon status``: 0 running and usable, 1 not running, 2 running but incompatible (--json too)."""
    from dspy_bridge.cli import main, status_exit_code
    from dspy_bridge.pool._daemon import DaemonInfo

    assert main(["daemon", "status", "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)
    assert reported["running"] is True and reported["compatible"] is True
    daemon_stop()
    assert main(["daemon", "status"]) == 1
    assert "not running" in capsys.readouterr().out
    incompatible = DaemonInfo(running=True, socket="s", compatible=False, incompatibility="DSPy version differs")
    assert status_exit_code(incompatible) == 2


def test_version_names_dspy_bridge_dspy_and_python(capsys: Any) -> None:
    from importlib.metadata import version

    from dspy_bridge import __version__
    from dspy_bridge.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f"dspy-bridge {__version__} (DSPy {version('dspy')}, Python {sys.version.split()[0]})"
    )
