"""Teardown without races: close twice, close mid-request, close a dead or wedged worker, cancelled close,
close from a signal handler, close at interpreter exit, and workers dying with a SIGKILLed host.

Every check asks the OS (``/proc``, pidfds, ``waitpid``), not the pool's bookkeeping.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dspy_bridge import PoolClosed
from dspy_bridge.pool import Pool, PoolConfig, PoolState, SyncPool
from poolkit import (
    HANG_GUARD,
    EventLog,
    ProcessRecord,
    children_of,
    fifo_written,
    loop_errors,
    poolkit_command,
    wait_gone,
)

pytestmark = pytest.mark.usefixtures(loop_errors.__name__)


def config(**options: object) -> PoolConfig:
    return PoolConfig.model_validate(
        {"mode": "mock", "start_strategy": "spawn", "worker_command": poolkit_command(), **options}
    )


def records_of(pool: Pool) -> list[ProcessRecord]:
    return [ProcessRecord(handle.pid) for handle in pool.workers()]


async def test_closing_twice_and_concurrently_is_fine_and_reaps_everything() -> None:
    pool = Pool(config(size=3))
    await pool.start()
    records = records_of(pool)
    assert all(record.alive() for record in records)
    await asyncio.gather(pool.aclose(), pool.aclose())
    await pool.aclose()
    assert pool.state is PoolState.CLOSED
    assert not any(record.exists() for record in records)
    assert not {record.pid for record in records} & set(children_of(os.getpid()))


async def test_workers_leave_through_shutdown_not_signals() -> None:
    log = EventLog()
    pool = Pool(config(size=2))
    pool.add_listener(log)
    async with pool:
        workers = pool.workers()
    assert [event.details["exit"] for event in log.of("worker_exited")] == ["exited with code 0"] * 2
    assert all(worker.goodbye is not None and worker.goodbye.reason == "shutdown" for worker in workers)


async def test_closing_with_requests_in_flight_and_queued_fails_them_with_pool_closed(tmp_path: Path) -> None:
    pool = Pool(config(size=1, max_in_flight=2, request_timeout=None, shutdown_grace=0.1))
    await pool.start()
    records = records_of(pool)
    in_handler = tmp_path / "in-handler"
    os.mkfifo(in_handler)
    running = asyncio.create_task(pool.request("sleep", {"seconds": 60, "notify": str(in_handler)}))
    await fifo_written(in_handler)
    piped = asyncio.create_task(pool.request("whoami"))  # second slot: waits in the worker's pipe
    queued = asyncio.create_task(pool.request("whoami"))  # no slot: waits in the pool
    await asyncio.sleep(0)  # let both reach their wait (a loop turn, not a timed wait)
    await pool.aclose()
    for task in (running, piped, queued):
        with pytest.raises(PoolClosed):
            await task
    assert "in flight" in str(running.exception())
    assert not any(record.exists() for record in records)


async def test_closing_when_a_worker_just_died_does_not_race() -> None:
    pool = Pool(config(size=2))
    await pool.start()
    records = records_of(pool)
    os.kill(records[0].pid, signal.SIGKILL)  # the pool has not noticed yet
    await pool.aclose()
    assert not any(record.exists() for record in records)


async def test_a_wedged_worker_gets_sigterm_then_sigkill() -> None:
    log = EventLog()
    pool = Pool(config(size=1, env={"POOLKIT_IGNORE_TERM": "1"}, shutdown_grace=0.2, terminate_grace=0.2))
    pool.add_listener(log)
    await pool.start()
    records = records_of(pool)
    await pool.aclose()
    assert not any(record.exists() for record in records)
    assert log.of("worker_exited")[0].details["exit"].startswith("SIGKILL")


async def test_a_cancelled_close_still_reaps_every_worker() -> None:
    pool = Pool(config(size=2))
    await pool.start()
    records = records_of(pool)
    closing = asyncio.create_task(pool.aclose())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await pool.aclose()  # waits for the teardown the cancelled call started
    assert pool.state is PoolState.CLOSED
    assert not any(record.exists() for record in records)


def test_sync_pool_close_from_a_signal_handler_while_a_request_is_in_flight(tmp_path: Path) -> None:
    in_handler = tmp_path / "in-handler"
    os.mkfifo(in_handler)
    pool = SyncPool(config(size=1, request_timeout=None, shutdown_grace=0.1)).start()
    records = [ProcessRecord(pid) for pid in pool.worker_pids()]

    def signal_when_in_handler() -> None:
        with open(in_handler) as fifo:  # blocks until the worker is inside the request
            fifo.read()
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: pool.close())
    helper = threading.Thread(target=signal_when_in_handler, daemon=True)
    helper.start()
    try:
        with pytest.raises(PoolClosed, match="in flight"):
            pool.request("sleep", {"seconds": 60, "notify": str(in_handler)})
    finally:
        signal.signal(signal.SIGUSR1, previous)
        helper.join(HANG_GUARD)
    pool.close()  # again: a no-op
    assert not any(record.exists() for record in records)


_AT_EXIT_SCRIPT = """
import json, sys
from dspy_bridge.pool import SyncPool, PoolConfig
pool = SyncPool(PoolConfig(size=2, start_strategy="spawn")).start()
pool.add_listener(lambda event: print("event", event.kind, flush=True))
print(json.dumps(pool.worker_pids()), flush=True)
pool.ping()
# no close(): the interpreter exits and atexit must close the pool
"""


def test_sync_pool_is_closed_at_interpreter_exit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _AT_EXIT_SCRIPT], capture_output=True, text=True, timeout=HANG_GUARD, check=True
    )
    lines = done.stdout.splitlines()
    pids = json.loads(next(line for line in lines if line.startswith("[")))
    assert "event pool_closed" in lines
    assert lines.count("event worker_exited") == 2
    assert not any(ProcessRecord(pid).exists() for pid in pids)  # reaped by the child before it exited


_OWNER_SCRIPT = """
import json, sys
from dspy_bridge.pool import SyncPool, PoolConfig
pool = SyncPool(PoolConfig(size=2, start_strategy="spawn")).start()
print(json.dumps(pool.worker_pids()), flush=True)
sys.stdin.read()  # wait to be killed
"""

_PR_SET_CHILD_SUBREAPER = 36


def test_workers_die_within_a_second_of_their_host_being_sigkilled() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    # As a subreaper we inherit the orphaned workers, so we can reap them and read how they died.
    assert libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        owner = subprocess.Popen(
            [sys.executable, "-c", _OWNER_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        records = [ProcessRecord(pid) for pid in pids]
        assert len(records) == 2 and all(record.alive() for record in records)
        owner.kill()
        owner.wait()
        survivors = wait_gone(records, 1.0)
        assert not survivors, f"workers outlived their SIGKILLed host by 1 s: {survivors}"
        for pid in pids:
            try:
                reaped, status = os.waitpid(pid, 0)
            except ChildProcessError:
                continue  # reaped by the dying host's own child-watcher thread before it was orphaned
            assert reaped == pid
            # PDEATHSIG (SIGKILL) or, if the worker saw stdin EOF first, a clean exit
            assert (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL) or (
                os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            ), status
        assert not any(record.exists() for record in records)
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    if owner.stdin is not None:
        owner.stdin.close()
