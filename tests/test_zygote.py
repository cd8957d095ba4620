"""The zygote with real processes: forked workers speak the protocol, own their state, and die on time.

These use mock-mode children and a zygote that preloads only a small probe module (written per test,
see PROBE), so each zygote costs a fraction of a second; ``test_zygote_real.py`` covers DSPy itself.
The probe adds two commands to every handler set, as preloaded user code might: ``probe`` reports the
child's random state, descriptors, parentage and environment; ``probe_sleep`` keeps a worker busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.pool._forked import ForkedProcess
from dspy_bridge.pool._spawn import Launcher, SpawnedProcess, SpawnLauncher, WorkerProcess, worker_environment
from dspy_bridge.pool._zygote import ZygoteLauncher
from dspy_bridge.protocol._async_streams import AsyncFrameReader, AsyncFrameWriter
from dspy_bridge.protocol._codec import get_codec
from dspy_bridge.protocol._programs import program_id_for
from dspy_bridge.protocol._zygote import decode_message, encode_message

HANG_GUARD = 60.0  # seconds: reached only when something is broken; nothing here measures time

PROBE = '''
"""Preloaded by a test zygote: probe commands for every handler set."""
import gc, os, random, time
import numpy

random.random(); numpy.random.random()  # advance the zygote's own state: children must not share it
from dspy_bridge.worker._base import BaseHandlers


def cmd_probe(self, args, session_id, context):
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    with open("/proc/self/comm") as comm:
        name = comm.read().strip()
    return {
        "random": random.random(), "numpy": float(numpy.random.random()),
        "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
        "fds": fds, "tasks": len(os.listdir("/proc/self/task")), "cwd": os.getcwd(),
        "probe_var": os.environ.get("PROBE_VAR"), "comm": name, "gc_enabled": gc.isenabled(),
    }


def cmd_probe_sleep(self, args, session_id, context):
    time.sleep(float(args.get("seconds", 600)))
    return {}


BaseHandlers.cmd_probe = cmd_probe
BaseHandlers.cmd_probe_sleep = cmd_probe_sleep
'''


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    (tmp_path / "zygote_probe.py").write_text(PROBE)
    (tmp_path / "threaded_preload.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
    )
    return tmp_path


def probe_config(probe_dir: Path, **extra: Any) -> PoolConfig:
    pythonpath = os.pathsep.join([str(probe_dir), *(p for p in sys.path if p)])
    settings: dict[str, Any] = {"mode": "mock", "start_strategy": "zygote", "env": {"PYTHONPATH": pythonpath}}
    return PoolConfig.model_validate({**settings, **extra})


@pytest.fixture
async def zygote(probe_dir: Path) -> AsyncIterator[ZygoteLauncher]:
    launcher = ZygoteLauncher(probe_config(probe_dir), preload=("zygote_probe",), daemon="never")
    yield launcher
    await launcher.aclose()


class Conn:
    """Frames to and from one worker process, every wait bounded by the hang guard."""

    def __init__(self, process: WorkerProcess) -> None:
        self.process = process
        codec = get_codec("msgpack")
        self.reader = AsyncFrameReader(process.stdout, codec)
        self.writer = AsyncFrameWriter(process.stdin, codec)
        self.next_id = 1

    async def read(self) -> dict[str, Any] | None:
        return await asyncio.wait_for(self.reader.read(), HANG_GUARD)

    async def hello(self) -> dict[str, Any]:
        frame = await self.read()
        assert frame is not None and frame["type"] == "hello", frame
        return frame

    async def send(self, command: str, args: dict[str, Any] | None = None, session_id: str | None = None) -> int:
        request_id, self.next_id = self.next_id, self.next_id + 1
        message = {"type": "request", "id": request_id, "command": command, "args": args or {}}
        if session_id is not None:
            message["session_id"] = session_id
        await self.writer.write(message)
        return request_id

    async def request(self, command: str, args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        request_id = await self.send(command, args, **kw)
        frame = await self.read()
        assert frame is not None and frame["type"] == "response" and frame["id"] == request_id, frame
        return frame

    async def call(self, command: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
        frame = await self.request(command, args, **kw)
        assert frame["ok"], frame
        return frame["result"]

    async def wait(self) -> int:
        return await asyncio.wait_for(self.process.wait(), HANG_GUARD)


async def start_worker(launcher: Launcher, worker_id: str, env: dict[str, str] | None = None) -> Conn:
    process = await launcher.launch(worker_id, "mock", "msgpack", {**worker_environment(probe_cfg()), **(env or {})})
    conn = Conn(process)
    conn.hello_frame = await conn.hello()  # type: ignore[attr-defined]
    return conn


def probe_cfg() -> PoolConfig:
    return PoolConfig.model_validate({"mode": "mock"})


def wait_gone(pid: int, timeout: float = HANG_GUARD) -> bool:
    """True once process ``pid`` has terminated (its pidfd turns readable); it need not be our child."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


# -- the same protocol checks for both start strategies -----------------------------------------------


@pytest.fixture(params=["spawn", "zygote"])
async def any_launcher(request: pytest.FixtureRequest, probe_dir: Path) -> AsyncIterator[Launcher]:
    config = probe_config(probe_dir, start_strategy=request.param)
    launcher: Launcher
    if request.param == "spawn":
        launcher = SpawnLauncher(config)
    else:
        launcher = ZygoteLauncher(config, preload=("zygote_probe",), daemon="never")
    yield launcher
    await launcher.aclose()


async def test_workers_from_either_strategy_pass_the_same_protocol_checks(any_launcher: Launcher) -> None:
    conn = await start_worker(any_launcher, "w-proto")
    hello = conn.hello_frame  # type: ignore[attr-defined]
    assert (hello["mode"], hello["worker_id"], hello["pid"]) == ("mock", "w-proto", conn.process.pid)
    assert (await conn.call("ping"))["status"] == "ok"
    program_id = (await conn.call("create_program", {"signature": "question -> answer"}, session_id="s1"))["program_id"]
    assert program_id == program_id_for({"signature": "question -> answer"})
    await conn.call("configure_lm", {"model": "gemini/gemini-2.5-flash"}, session_id="s1")
    await conn.call("stub_program", {"program_id": program_id, "outputs": {"answer": "4"}}, session_id="s1")
    result = await conn.call(
        "execute_program", {"program_id": program_id, "inputs": {"question": "2+2"}}, session_id="s1"
    )
    assert result["outputs"] == {"answer": "4"}
    unknown = await conn.request("no_such_command")
    assert not unknown["ok"] and unknown["error"]["type"] == "unknown_command"
    conn.process.stdin.close()
    goodbye = await conn.read()
    assert goodbye is not None and goodbye["type"] == "goodbye" and goodbye["reason"] == "eof"
    assert await conn.wait() == 0
    assert conn.process.returncode == 0


# -- fork hygiene ------------------------------------------------------------------------------------


async def test_children_reseed_random_state_and_hold_only_their_own_descriptors(zygote: ZygoteLauncher) -> None:
    first = await start_worker(zygote, "w-a", {"PROBE_VAR": "from-the-host"})
    second = await start_worker(zygote, "w-b")
    a, b = await first.call("probe"), await second.call("probe")
    assert isinstance(first.process, ForkedProcess) and zygote.source == "own"
    assert a["random"] != b["random"] and a["numpy"] != b["numpy"]
    for probe, conn in ((a, first), (b, second)):
        assert probe["pid"] == conn.process.pid
        assert probe["ppid"] == zygote.zygote_pid  # the zygote is the parent (and reaps)
        assert probe["sid"] == probe["pid"] == probe["pgid"]  # own session: the pool may signal the group
        assert probe["tasks"] == 1
        assert probe["gc_enabled"] is True
        assert probe["cwd"] == os.getcwd()
        assert probe["comm"] == f"dspyb-{conn.hello_frame['worker_id']}"  # type: ignore[attr-defined]
        fds = probe["fds"]
        extra = [target for fd, target in fds.items() if int(fd) > 2]
        # fd 0 is its stdin pipe, fd 2 its stderr pipe, fd 1 points at stderr (stray prints), and the only
        # other descriptor is the private frames fd (the stdout pipe): no zygote socket, no other pipe.
        assert fds["1"] == fds["2"] and fds["0"] != fds["2"], fds
        assert len(extra) == 1 and extra[0].startswith("pipe:") and extra[0] not in (fds["0"], fds["2"]), fds
    assert a["probe_var"] == "from-the-host" and b["probe_var"] is None
    assert set(a["fds"].values()).isdisjoint(b["fds"].values())  # no worker holds another's pipes


async def test_exit_codes_and_signals_are_reported_by_the_zygote(zygote: ZygoteLauncher) -> None:
    polite, killed = await start_worker(zygote, "w-term"), await start_worker(zygote, "w-kill")
    polite.process.send_signal(signal.SIGTERM)
    goodbye = await polite.read()
    assert goodbye is not None and goodbye["reason"] == "sigterm"
    assert await polite.wait() == 0
    killed.process.kill()
    assert await killed.wait() == -signal.SIGKILL
    killed.process.kill()  # after the exit was reported: a no-op, never a signal to a reused pid
    assert zygote.stats()["forked"] == 2


async def test_a_zygote_crash_falls_back_to_spawning_with_a_warning(
    zygote: ZygoteLauncher, caplog: pytest.LogCaptureFixture
) -> None:
    busy = await start_worker(zygote, "w-busy")
    await busy.send("probe_sleep", {"seconds": 600})
    assert zygote.zygote_pid is not None
    with caplog.at_level(logging.WARNING, logger="dspy_bridge.pool.zygote"):
        os.kill(zygote.zygote_pid, signal.SIGKILL)
        # The zygote's children die with it (parent-death signal), even a busy one.
        assert await busy.wait() == -signal.SIGKILL
        assert wait_gone(busy.process.pid) and wait_gone(zygote.zygote_pid)
        replacement = await start_worker(zygote, "w-after")
    assert isinstance(replacement.process, SpawnedProcess)
    assert (await replacement.call("ping"))["status"] == "ok"
    stats = zygote.stats()
    assert stats["source"] == "spawn" and stats["spawned"] == 1 and "is gone" in stats["fallback_reason"]
    assert any("spawning them instead" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    replacement.process.stdin.close()
    assert await replacement.wait() == 0


async def test_a_preload_that_starts_a_thread_makes_the_zygote_refuse_to_fork(
    probe_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    launcher = ZygoteLauncher(probe_config(probe_dir), preload=("threaded_preload",), daemon="never")
    try:
        with caplog.at_level(logging.WARNING, logger="dspy_bridge.pool.zygote"):
            conn = await start_worker(launcher, "w-threads")
        assert isinstance(conn.process, SpawnedProcess)  # spawned instead: the run goes on
        refusals = [r.getMessage() for r in caplog.records if "could not fork" in r.getMessage()]
        assert refusals and "threads" in refusals[0] and "refusing to fork" in refusals[0]
        conn.process.stdin.close()
        assert await conn.wait() == 0
    finally:
        await launcher.aclose()


# -- the control protocol, spoken by hand ------------------------------------------------------------


@contextlib.contextmanager
def raw_zygote() -> Any:
    """A zygote on a socketpair with nothing preloaded, driven with blocking calls."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    code = "from dspy_bridge.worker.zygote import main; main()"
    argv = [sys.executable, "-S", "-c", code, "--fd", str(theirs.fileno()), "--preload", "", "--log-level", "ERROR"]
    process = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
    theirs.close()
    ours.settimeout(HANG_GUARD)
    try:
        yield ours, process
    finally:
        ours.close()  # EOF: the zygote kills what is left and exits
        process.wait(HANG_GUARD)


def roundtrip(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
    socket.send_fds(sock, [encode_message(message)], fds or [])
    data, received, _, _ = socket.recv_fds(sock, 65536, 2)
    for fd in received:
        os.close(fd)
    return decode_message(data)


def test_the_zygote_refuses_bad_requests_and_keeps_serving() -> None:
    with raw_zygote() as (sock, process):
        assert roundtrip(sock, {"op": "spawn", "req": 0})["op"] == "error"  # before hello
        assert roundtrip(sock, {"op": "hello", "protocol": 999})["op"] == "refused"
        ready = roundtrip(sock, {"op": "hello", "protocol": 1})
        assert ready["op"] == "ready" and ready["pid"] == process.pid and ready["stray_fds"] == []
        r, w = os.pipe()
        try:
            reply = roundtrip(
                sock, {"op": "spawn", "req": 1, "worker_id": "x", "mode": "mock", "codec": "msgpack"}, [r]
            )
            assert reply == {"op": "spawn_failed", "req": 1, "error": reply["error"]}
            assert "exactly 3 descriptors" in reply["error"]
            reply = roundtrip(
                sock,
                {"op": "spawn", "req": 2, "worker_id": "x", "mode": "nope", "codec": "msgpack", "env": {}},
                [r, w, w],
            )
            assert reply["op"] == "spawn_failed" and "'mode'" in reply["error"]
        finally:
            os.close(r)
            os.close(w)
        sock.send(b"not json")
        assert "op" in decode_message(sock.recv(65536))  # an error reply, and the zygote lives on
        status = roundtrip(sock, {"op": "status"})
        assert status["op"] == "status" and status["forks"] == 0 and status["clients"] == 1
    assert process.returncode == 0


# -- the host dies --------------------------------------------------------------------------------------

HOST_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from dspy_bridge.pool._config import PoolConfig
    from dspy_bridge.pool._spawn import worker_environment
    from dspy_bridge.pool._zygote import ZygoteLauncher
    from dspy_bridge.protocol._async_streams import AsyncFrameReader, AsyncFrameWriter
    from dspy_bridge.protocol._codec import get_codec

    async def main():
        config = PoolConfig.model_validate(json.loads(sys.argv[1]))
        launcher = ZygoteLauncher(config, preload=("zygote_probe",), daemon="never")
        env = worker_environment(config)
        workers = [await launcher.launch(f"w{i}", "mock", "msgpack", env) for i in range(2)]
        codec = get_codec("msgpack")
        for worker in workers:
            await AsyncFrameReader(worker.stdout, codec).read()  # hello
        busy = AsyncFrameWriter(workers[0].stdin, codec)
        await busy.write({"type": "request", "id": 1, "command": "probe_sleep", "args": {"seconds": 600}})
        print(json.dumps({"zygote": launcher.zygote_pid, "workers": [w.pid for w in workers]}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def test_sigkill_of_the_host_takes_the_zygote_and_its_workers_down(probe_dir: Path) -> None:
    config = probe_config(probe_dir)
    host = subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT, config.model_dump_json()],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": config.env["PYTHONPATH"]},
        text=True,
    )
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        assert line, "the host script died before reporting its pids"
        pids = json.loads(line)
        everyone = [pids["zygote"], *pids["workers"]]
        assert all(not wait_gone(pid, timeout=0) for pid in everyone)  # all alive before the kill
    finally:
        host.kill()
        host.wait(HANG_GUARD)
    assert [pid for pid in everyone if not wait_gone(pid)] == []
