"""Test helpers for the pool tests: the misbehaving worker's command, OS-level process checks, events.

Process checks ask the OS (``/proc``, ``pidfd_open``), never the pool's own bookkeeping. A pid is
identified with its start time, so a recycled pid is never mistaken for a worker that survived.
Waiting for a process to die uses a pidfd with ``select`` and a deadline: no sleep-polling.
"""

from __future__ import annotations

import asyncio
import gc
import os
import select
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge.pool import PoolEvent

__all__ = [
    "HANG_GUARD",
    "POOLKIT_WORKER",
    "EventLog",
    "ProcessRecord",
    "children_of",
    "fifo_written",
    "loop_errors",
    "poolkit_command",
    "wait_gone",
]

HANG_GUARD = 30.0  # seconds: only reached when something is broken; no test measures time with it
POOLKIT_WORKER = str(Path(__file__).with_name("poolkit_worker.py"))


def poolkit_command() -> list[str]:
    """Command prefix for the misbehaving test worker (``-S`` as the pool's own; PYTHONPATH is set by the pool)."""
    return [sys.executable, "-S", POOLKIT_WORKER]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) from /proc/<pid>/stat, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


class ProcessRecord:
    """A process seen once; ``exists()`` says whether that same process (not a pid reuse) is still there."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        stat = _stat(pid)
        self.starttime = stat[2] if stat else None

    def state(self) -> str | None:
        """The /proc state letter (R, S, Z, ...) of this very process, or None once it is gone."""
        stat = _stat(self.pid)
        if stat is None or (self.starttime is not None and stat[2] != self.starttime):
            return None
        return stat[0]

    def exists(self) -> bool:
        """Present in the process table at all, zombie included (a zombie means nobody reaped it)."""
        return self.state() is not None

    def alive(self) -> bool:
        """Running (not a zombie)."""
        return self.state() not in (None, "Z", "X")

    def __repr__(self) -> str:
        return f"<ProcessRecord pid={self.pid} state={self.state()}>"


def children_of(pid: int) -> list[int]:
    """Every process whose parent is ``pid``, zombies included (a scan of /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pid:
                found.append(int(entry))
    return found


def wait_gone(records: list[ProcessRecord], timeout: float) -> list[ProcessRecord]:
    """Wait (pidfd + select, with a deadline) until none is running; return those still running."""
    fds = []
    for record in records:
        if record.alive():
            try:
                fds.append(os.pidfd_open(record.pid))
            except ProcessLookupError:
                pass
    try:
        end = time.monotonic() + timeout
        pending = list(fds)
        while pending:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select(pending, [], [], remaining)
            pending = [fd for fd in pending if fd not in ready]
    finally:
        for fd in fds:
            os.close(fd)
    return [record for record in records if record.alive()]


class EventLog:
    """A pool listener that keeps every event and lets a test await the n-th event of a kind."""

    def __init__(self) -> None:
        self.events: list[PoolEvent] = []
        self._waiters: dict[str, list[tuple[int, asyncio.Future[PoolEvent]]]] = defaultdict(list)

    def __call__(self, event: PoolEvent) -> None:
        self.events.append(event)
        count = self.count(event.kind)
        for number, future in list(self._waiters[event.kind]):
            if number <= count and not future.done():
                future.set_result(event)

    def count(self, kind: str) -> int:
        return sum(1 for event in self.events if event.kind == kind)

    def of(self, kind: str) -> list[PoolEvent]:
        return [event for event in self.events if event.kind == kind]

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]

    async def wait_for(self, kind: str, number: int = 1, timeout: float = HANG_GUARD) -> PoolEvent:
        """The ``number``-th event of ``kind`` (counting from the start), awaited with a hang guard."""
        seen = self.of(kind)
        if len(seen) >= number:
            return seen[number - 1]
        future: asyncio.Future[PoolEvent] = asyncio.get_running_loop().create_future()
        self._waiters[kind].append((number, future))
        async with asyncio.timeout(timeout):
            await future
        return self.of(kind)[number - 1]


async def fifo_written(path: str | os.PathLike[str], timeout: float = HANG_GUARD) -> None:
    """Return once some process wrote to the FIFO at ``path`` (event-driven, with a hang guard)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    loop = asyncio.get_running_loop()
    written: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if os.read(fd, 64) and not written.done():
            written.set_result(None)

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(timeout):
            await written
    finally:
        loop.remove_reader(fd)
        os.close(fd)


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fail the test if anything reached the event loop's exception handler (unretrieved task errors...)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    gc.collect()
    await asyncio.sleep(0)  # one loop turn, so callbacks scheduled by finalizers run (not a timing wait)
    loop.set_exception_handler(previous)
    assert not seen, [context.get("message") for context in seen]
