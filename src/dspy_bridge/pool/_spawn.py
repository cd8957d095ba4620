"""How a worker process comes to exist when nothing is pre-imported: the command line, the environment,
and ``SpawnLauncher``; also the two protocols every launcher and its processes follow.

The pool talks to a ``Launcher`` and gets back a ``WorkerProcess``; it never calls ``subprocess``
itself. ``SpawnLauncher`` starts a fresh interpreter per worker (asyncio subprocess, so starting
never blocks the event loop); the zygote launcher (``_zygote``) forks pre-imported children instead and
falls back to this one. Which launcher a pool gets is ``_launch.make_launcher``'s choice.

Workers die with the host: the worker arms ``PR_SET_PDEATHSIG`` and checks its parent against
``DSPY_BRIDGE_PARENT_PID``, and it exits on stdin EOF. PDEATHSIG fires when the *thread* that
spawned the worker exits, so whoever runs the pool's event loop (``SyncPool``'s loop thread) must
outlive its workers — ``aclose()`` reaps them all before that thread ends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Protocol, runtime_checkable

from dspy_bridge._secrets import child_environment
from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.protocol._constants import ALLOWED_MODULES_ENV

__all__ = [
    "WORKER_ENTRY",
    "Launcher",
    "SpawnLauncher",
    "SpawnedProcess",
    "WorkerProcess",
    "build_worker_command",
    "default_command_prefix",
    "worker_environment",
]

WORKER_ENTRY = "from dspy_bridge.worker._main import main; main()"


@runtime_checkable
class WorkerProcess(Protocol):
    """One running worker, however it was started."""

    @property
    def pid(self) -> int: ...

    @property
    def stdin(self) -> asyncio.StreamWriter: ...

    @property
    def stdout(self) -> asyncio.StreamReader: ...

    @property
    def stderr(self) -> asyncio.StreamReader | None: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int:
        """Wait for exit and reap; the return code (negative = killed by that signal)."""
        ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


class Launcher(Protocol):
    """Starts workers; ``env`` is the worker's *complete* environment (``worker_environment``'s), used as is."""

    async def launch(self, worker_id: str, mode: str, codec: str, env: dict[str, str]) -> WorkerProcess: ...

    async def aclose(self) -> None: ...


def default_command_prefix() -> list[str]:
    """``python -S -c <entry>``: -S skips site/.pth processing (tens of ms); PYTHONPATH restores sys.path."""
    return [sys.executable, "-S", "-c", WORKER_ENTRY]


def build_worker_command(config: PoolConfig, worker_id: str) -> list[str]:
    """The full argv of one worker: the prefix (default or ``worker_command``) plus the standard options."""
    prefix = list(config.worker_command) if config.worker_command else default_command_prefix()
    argv = [*prefix, "--mode", config.mode, "--codec", config.codec, "--worker-id", worker_id]
    if config.worker_concurrency > 1:
        argv += ["--max-concurrency", str(config.worker_concurrency)]
    return argv


def worker_environment(config: PoolConfig, *, daemon: bool = False) -> dict[str, str]:
    """The complete environment of a worker, a zygote or the daemon: the one place it is built.

    The host's environment without any key (``_secrets.child_environment``: every provider key name
    and ``config.secret_env``), plus what a worker needs from us — our sys.path (for -S), the host pid
    (die-with-parent), litellm offline — plus ``config.env``, which is explicit and so wins.
    ``daemon=True``: for the warm daemon, which outlives this process and serves other runs, so it
    gets neither our pid nor our sys.path (its own ``python -m`` start finds the packages).
    """
    ours = {"PYTHONUNBUFFERED": "1"}  # stderr lines reach the crash report's tail before the worker dies
    if not daemon:
        ours["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)
        ours["DSPY_BRIDGE_PARENT_PID"] = str(os.getpid())
    if daemon or config.mode == "real":
        ours["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    if not daemon:  # the config decides which user modules a worker may import, never the host's environment
        ours[ALLOWED_MODULES_ENV] = ",".join(config.allowed_modules)
    return child_environment(os.environ, secret_env=config.secret_env, ours=ours, explicit=config.env)


class SpawnedProcess:
    """An asyncio subprocess seen through the ``WorkerProcess`` protocol; signals go to its process group."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("a worker needs stdin and stdout pipes")
        self._process = process
        self._stdin = process.stdin
        self._stdout = process.stdout

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def stdin(self) -> asyncio.StreamWriter:
        return self._stdin

    @property
    def stdout(self) -> asyncio.StreamReader:
        return self._stdout

    @property
    def stderr(self) -> asyncio.StreamReader | None:
        return self._process.stderr

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait(self) -> int:
        return await self._process.wait()

    def send_signal(self, sig: int) -> None:
        """Signal the worker's whole process group; a no-op once the worker has been reaped."""
        if self._process.returncode is not None:
            return  # reaped: its pid (and group id) may already belong to someone else
        try:
            os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                self._process.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def pipe_transports(self) -> tuple[asyncio.WriteTransport, asyncio.ReadTransport] | None:
        """Its stdin and stdout transports, so the pool can read and write the pipes' fds itself."""
        transport = getattr(self._process, "_transport", None)
        if transport is None:
            return None
        return transport.get_pipe_transport(0), transport.get_pipe_transport(1)

    def close(self) -> None:
        """Close every pipe (call last, after the worker was reaped)."""
        transport = getattr(self._process, "_transport", None)
        if transport is not None:
            transport.close()

    def __repr__(self) -> str:
        code = self._process.returncode
        return f"<SpawnedProcess pid={self.pid} {'running' if code is None else f'exited {code}'}>"


class SpawnLauncher:
    """Starts each worker as a fresh interpreter in its own session (so signals reach its whole group)."""

    def __init__(self, config: PoolConfig) -> None:
        self._config = config

    async def launch(self, worker_id: str, mode: str, codec: str, env: dict[str, str]) -> WorkerProcess:
        config = self._config if (mode, codec) == (self._config.mode, self._config.codec) else None
        if config is None:
            config = self._config.model_copy(update={"mode": mode, "codec": codec})
        argv = build_worker_command(config, worker_id)
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,  # complete already: worker_environment's, never ours with additions
            start_new_session=True,
            close_fds=True,
        )
        return SpawnedProcess(process)

    async def aclose(self) -> None:
        """Nothing to release: every process belongs to its handle."""

    def __repr__(self) -> str:
        return f"<SpawnLauncher mode={self._config.mode} codec={self._config.codec}>"
