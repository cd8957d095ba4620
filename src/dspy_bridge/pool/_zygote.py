"""Host side of the zygote: start (or reach) a zygote and turn its forks into ``WorkerProcess`` objects.

    ZygoteLauncher.launch(worker_id, mode, codec, env)
      ├─ first call only: connect to the warm daemon if one runs and accepts us, else start our own
      │    zygote (``python -S -c …zygote main --fd N``) and wait for its ``ready``
      ├─ pipe() ×3; spawn{…} + SCM_RIGHTS[stdin_r, stdout_w, stderr_w] ──▶ zygote forks
      ├─ ◀── spawned{pid} + SCM_RIGHTS[pidfd]
      └─ ForkedProcess(pid, stdin writer, stdout/stderr readers, exit future)

ZygoteControl (``_zygote_control``, a loop reader on the control socket) routes spawned / spawn_failed /
exit{pid, returncode}; EOF on it means the zygote is gone. The messages are
``dspy_bridge.protocol._zygote``'s; the zygote itself is ``dspy_bridge.worker.zygote``, reached only through
that protocol (as a subprocess or a daemon's socket), never imported.

A zygote never fails a run: if it cannot start, refuses us, or dies, this launcher logs one warning saying
why and hands every later launch to ``SpawnLauncher``. A forked worker's exit code comes from the zygote
(it is the parent and reaps); if the zygote vanished first, the worker was killed by its parent-death
signal and ``wait()`` reports ``-SIGKILL`` once the pidfd says it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Literal

from dspy_bridge._exceptions import PoolClosed, WorkerStartupFailed
from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.pool._forked import ForkedProcess
from dspy_bridge.pool._spawn import SpawnLauncher, WorkerProcess, worker_environment
from dspy_bridge.pool._zygote_control import SpawnFailed, ZygoteControl, ZygoteGone, connect_to_daemon
from dspy_bridge.protocol._rendezvous import socket_path
from dspy_bridge.protocol._zygote import DEFAULT_PRELOAD

__all__ = [
    "DAEMON_ENV",
    "PRELOAD_ENV",
    "ZYGOTE_ENTRY",
    "ZygoteLauncher",
    "fork_supported",
]


ZYGOTE_ENTRY = "from dspy_bridge.worker.zygote import main; main()"
PRELOAD_ENV = "DSPY_BRIDGE_ZYGOTE_PRELOAD"  # comma-separated modules, e.g. "dspy,dspy_bridge.worker._real,litellm"
DAEMON_ENV = "DSPY_BRIDGE_DAEMON"  # auto (use a running compatible daemon) | never | require
DaemonUse = Literal["auto", "never", "require"]

log = logging.getLogger("dspy_bridge.pool.zygote")


def fork_supported() -> bool:
    """Fork-without-exec is safe and SCM_RIGHTS over SOCK_SEQPACKET exists: Linux."""
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds") and hasattr(socket, "SOCK_SEQPACKET")


class ZygoteLauncher:
    """Forks workers from a zygote — the warm daemon's if one accepts us, else our own — or spawns them.

    ``make_launcher`` builds it as ``ZygoteLauncher(config)``. ``preload`` defaults to ``$DSPY_BRIDGE_ZYGOTE_PRELOAD``
    or ``DEFAULT_PRELOAD`` (add ``litellm`` when the LM goes through it); ``daemon`` defaults to
    ``$DSPY_BRIDGE_DAEMON`` or ``"auto"``.
    """

    def __init__(
        self,
        config: PoolConfig | None = None,
        *,
        preload: tuple[str, ...] | list[str] | None = None,
        daemon: DaemonUse | None = None,
        runtime_dir: Path | None = None,
        python: str | None = None,
    ) -> None:
        self._config = config or PoolConfig.model_validate({"mode": "real"})
        self._fallback = SpawnLauncher(self._config)
        if preload is None:
            env_preload = os.environ.get(PRELOAD_ENV)
            preload = tuple(env_preload.split(",")) if env_preload is not None else DEFAULT_PRELOAD
        self.preload = tuple(name.strip() for name in preload if name.strip())
        self.preload += tuple(name for name in self._config.preload_modules if name not in self.preload)
        daemon = daemon or os.environ.get(DAEMON_ENV, "auto")  # type: ignore[assignment]
        if daemon not in ("auto", "never", "require"):
            raise ValueError(f"daemon must be 'auto', 'never' or 'require', got {daemon!r} (check ${DAEMON_ENV})")
        self._daemon: DaemonUse = daemon
        self._runtime_dir = runtime_dir
        self._python = python or sys.executable
        self._control: ZygoteControl | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Future[ZygoteControl | None] | None = None
        self._closed = False
        self.source: Literal["pending", "own", "daemon", "spawn"] = "pending"
        self.fallback_reason: str | None = None
        self.zygote_pid: int | None = None
        self.zygote_info: dict[str, Any] = {}
        self.forked = 0
        self.spawned = 0

    @classmethod
    async def connect(
        cls,
        path: str | os.PathLike[str],
        config: PoolConfig | None = None,
        *,
        fingerprint: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> ZygoteLauncher:
        """A launcher bound to the daemon at ``path``; raises WorkerStartupFailed (refused) or OSError."""
        self = cls(config, daemon="require")
        control = await connect_to_daemon(os.fspath(path), fingerprint, timeout)
        self._adopt(control, "daemon")
        done: asyncio.Future[ZygoteControl | None] = asyncio.get_running_loop().create_future()
        done.set_result(control)
        self._starting = done
        return self

    # -- the Launcher protocol ---------------------------------------------------------------------
    async def launch(self, worker_id: str, mode: str, codec: str, env: dict[str, str]) -> WorkerProcess:
        if self._closed:
            raise PoolClosed("the zygote launcher was closed")
        control = await self.start()
        if control is not None:
            try:
                process = await self._fork(control, worker_id, mode, codec, env)
                self.forked += 1
                return process
            except ZygoteGone as exc:
                self._use_fallback(f"{control.description} is gone: {exc}")
            except TimeoutError:
                self._use_fallback(f"{control.description} did not answer a spawn request in time")
            except SpawnFailed as exc:
                log.warning(
                    "%s could not fork worker %s (%s); spawning it instead", control.description, worker_id, exc
                )
        self.spawned += 1
        return await self._fallback.launch(worker_id, mode, codec, env)

    async def aclose(self) -> None:
        """Hang up (the zygote kills what is left of our workers), then reap our own zygote."""
        self._closed = True
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starting
        if self._control is not None:
            self._control.close()
        if self._process is not None and self._process.returncode is None:
            try:
                await asyncio.wait_for(asyncio.shield(self._process.wait()), 5.0)
            except TimeoutError:
                log.warning("zygote pid %s did not exit after we hung up; killing it", self._process.pid)
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
                await self._process.wait()
        await self._fallback.aclose()

    # -- start-up ---------------------------------------------------------------------------------
    async def start(self) -> ZygoteControl | None:
        """Reach a zygote once (concurrent callers share the attempt); None means: spawn instead."""
        if self.fallback_reason is not None:
            return None
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        control = await asyncio.shield(self._starting)
        return None if self.fallback_reason is not None else control

    async def _start(self) -> ZygoteControl | None:
        strict = self._config.start_strategy == "zygote"
        if not fork_supported():
            self._use_fallback(f"forking workers needs Linux (this is {sys.platform})", warn=strict)
            return None
        if self._daemon != "never":
            control = await self._try_daemon()
            if control is not None:
                return control
            if self._daemon == "require":
                return None
        try:
            control = await self._start_own()
        except (ZygoteGone, WorkerStartupFailed, OSError, TimeoutError) as exc:
            self._use_fallback(f"could not start a zygote: {exc}")
            return None
        return control

    async def _try_daemon(self) -> ZygoteControl | None:
        try:
            path = socket_path(self._runtime_dir)
        except PermissionError as exc:
            log.info("not using the daemon: %s", exc)
            return None
        if not path.exists():
            if self._daemon == "require":
                self._use_fallback(f"no daemon running (no socket at {path})")
            return None
        try:
            control = await connect_to_daemon(os.fspath(path), None, 10.0)
        except (WorkerStartupFailed, ZygoteGone, OSError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, WorkerStartupFailed) else f"daemon at {path} unreachable: {exc}"
            if self._daemon == "require":
                self._use_fallback(reason)
            else:
                log.info("not using the daemon, starting our own zygote: %s", reason)
            return None
        self._adopt(control, "daemon")
        return control

    async def _start_own(self) -> ZygoteControl:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [self._python, "-S", "-c", ZYGOTE_ENTRY, "--fd", str(theirs.fileno())]
        argv += ["--parent-pid", str(os.getpid()), "--preload", ",".join(self.preload), "--log-level", "WARNING"]
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=None,  # the zygote's own complaints go to our stderr; its children get their own pipes
                pass_fds=(theirs.fileno(),),
                env=worker_environment(self._config),  # no key: the children's memory starts as a copy of ours
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        control = ZygoteControl(ours, f"zygote pid {self._process.pid}")
        try:
            info = await asyncio.wait_for(control.hello(None), self._config.start_timeout)
        except (ZygoteGone, TimeoutError) as exc:
            control.close()
            code = await _exit_code_soon(self._process)
            raise ZygoteGone(f"zygote pid {self._process.pid} never became ready ({exc}; exit code {code})") from exc
        except BaseException:  # cancelled (aclose during start): hang up; aclose reaps the process
            control.close()
            raise
        self._adopt(control, "own", info)
        return control

    def _adopt(
        self, control: ZygoteControl, source: Literal["own", "daemon"], info: dict[str, Any] | None = None
    ) -> None:
        self._control = control
        self.source = source
        self.zygote_info = info or control.ready_info
        self.zygote_pid = self.zygote_info.get("pid")
        control.description = f"{'daemon' if source == 'daemon' else 'zygote'} pid {self.zygote_pid}"
        control.on_lost.append(self._on_lost)
        failed = self.zygote_info.get("preload_failed") or {}
        if failed:
            log.warning("%s could not preload %s: workers import it themselves", control.description, failed)
        log.info("forking workers from %s (%s)", control.description, ",".join(self.zygote_info.get("preloaded", [])))

    def _on_lost(self, reason: str) -> None:
        if not self._closed:
            self._use_fallback(f"{self._control.description if self._control else 'the zygote'} is gone: {reason}")

    def _use_fallback(self, reason: str, *, warn: bool = True) -> None:
        if self.fallback_reason is None:
            self.fallback_reason = reason
            self.source = "spawn"
            (log.warning if warn else log.info)("%s; starting workers by spawning them instead", reason)

    # -- forking ----------------------------------------------------------------------------------
    async def _fork(
        self, control: ZygoteControl, worker_id: str, mode: str, codec: str, env: dict[str, str]
    ) -> ForkedProcess:
        loop = asyncio.get_running_loop()
        request = {
            "worker_id": worker_id,
            "mode": mode,
            "codec": codec,
            "env": env,  # the child's whole environment, keys already gone (worker_environment)
            "cwd": os.getcwd(),
            "max_concurrency": self._config.worker_concurrency,
        }
        with contextlib.ExitStack() as always, contextlib.ExitStack() as on_fail:
            # trio's two-stack idiom: the child's ends always close here; ours only if something fails.
            stdin_r, stdin_w = os.pipe()
            always.callback(os.close, stdin_r)
            stdin_file = open(stdin_w, "wb", buffering=0)  # noqa: SIM115 - owned by the transport below
            on_fail.callback(stdin_file.close)
            stdout_r, stdout_w = os.pipe()
            always.callback(os.close, stdout_w)
            stdout_file = open(stdout_r, "rb", buffering=0)  # noqa: SIM115
            on_fail.callback(stdout_file.close)
            stderr_r, stderr_w = os.pipe()
            always.callback(os.close, stderr_w)
            stderr_file = open(stderr_r, "rb", buffering=0)  # noqa: SIM115
            on_fail.callback(stderr_file.close)
            pid = await control.spawn(request, [stdin_r, stdout_w, stderr_w], self._config.start_timeout)
            on_fail.callback(control.signal, pid, signal.SIGKILL)
            exited = control.exit_future(pid)
            stdout = asyncio.StreamReader(loop=loop)
            stdout_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stdout, loop=loop), stdout_file
            )
            stderr = asyncio.StreamReader(loop=loop)
            stderr_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stderr, loop=loop), stderr_file
            )
            stdin_transport, stdin_protocol = await loop.connect_write_pipe(
                lambda: asyncio.streams.FlowControlMixin(loop=loop), stdin_file
            )
            stdin = asyncio.StreamWriter(stdin_transport, stdin_protocol, None, loop)
            on_fail.pop_all()
        return ForkedProcess(
            control, pid, stdin, stdout, stderr, exited, [stdin_transport, stdout_transport, stderr_transport]
        )

    def stats(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "zygote_pid": self.zygote_pid,
            "preloaded": self.zygote_info.get("preloaded", []),
            "forked": self.forked,
            "spawned": self.spawned,
            "fallback_reason": self.fallback_reason,
        }

    def __repr__(self) -> str:
        return f"<ZygoteLauncher source={self.source} zygote_pid={self.zygote_pid} forked={self.forked}>"


async def _exit_code_soon(process: asyncio.subprocess.Process) -> int | None:
    """The zygote's exit code if it is exiting anyway (to explain a failed start), else kill it."""
    try:
        return await asyncio.wait_for(asyncio.shield(process.wait()), 1.0)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return await process.wait()
