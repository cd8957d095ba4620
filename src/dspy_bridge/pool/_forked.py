"""A worker forked by a zygote, as the pool sees it; and what such a worker costs in memory.

``ForkedProcess`` follows the ``WorkerProcess`` protocol (``_spawn``): its pipes are ours, its exit code
comes from the zygote (the zygote is the parent and reaps), and signals go through the control
connection, which checks the child's pidfd first so that a reused pid is never hit. ``process_memory``
reads ``/proc/<pid>/smaps_rollup``: a forked worker's real cost is its PSS, not its RSS.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

from dspy_bridge.pool._zygote_control import ZygoteControl

__all__ = ["ForkedProcess", "ProcessMemory", "process_memory"]


@dataclass(frozen=True)
class ProcessMemory:
    """One process's memory in MiB. ``pss`` splits each shared page among its sharers: it is what a forked
    worker really costs; ``uss`` (private pages) is what killing it would free."""

    pid: int
    rss: float
    pss: float
    uss: float


def process_memory(pid: int) -> ProcessMemory:
    """RSS, PSS and USS of ``pid`` from ``/proc/<pid>/smaps_rollup`` (Linux 4.14+)."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[name] = int(parts[0])
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return ProcessMemory(pid, fields.get("Rss", 0) / 1024, fields.get("Pss", 0) / 1024, private / 1024)


class ForkedProcess:
    """A worker forked by a zygote, seen through the ``WorkerProcess`` protocol."""

    def __init__(
        self,
        control: ZygoteControl,
        pid: int,
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        exited: asyncio.Future[int],
        transports: list[asyncio.BaseTransport],
    ) -> None:
        self._control = control
        self._pid = pid
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        self._exited = exited
        self._transports = transports

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def stdin(self) -> asyncio.StreamWriter:
        return self._stdin

    @property
    def stdout(self) -> asyncio.StreamReader:
        return self._stdout

    @property
    def stderr(self) -> asyncio.StreamReader | None:
        return self._stderr

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        """Signal the worker's group; a no-op once the zygote reported its exit (the pid may be reused)."""
        if self.returncode is None:
            self._control.signal(self._pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def pipe_transports(self) -> tuple[asyncio.WriteTransport, asyncio.ReadTransport]:
        """Its stdin and stdout transports, so the pool can read and write the pipes' fds itself."""
        stdin, stdout = self._transports[0], self._transports[1]
        assert isinstance(stdin, asyncio.WriteTransport) and isinstance(stdout, asyncio.ReadTransport)
        return stdin, stdout

    def close(self) -> None:
        """Close the pipes (call last, after the worker was reaped)."""
        for transport in self._transports:
            transport.close()

    def __repr__(self) -> str:
        code = self.returncode
        return f"<ForkedProcess pid={self._pid} {'running' if code is None else f'exited {code}'}>"
