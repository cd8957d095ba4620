"""``SyncPool.close()`` racing ``start()`` and requests: from another thread, from a signal handler.

Every caller returns, no thread or fd is left behind, and asyncio never reports a destroyed pending task.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from dspy_bridge import PoolClosed
from dspy_bridge.pool import PoolConfig, SyncPool

CONFIG = PoolConfig(size=1, start_strategy="spawn", mode="mock")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _pool_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "dspy-bridge-pool")


def test_close_from_another_thread_while_starting_never_strands_the_starter(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    rng = random.Random(7)
    fds_before = _fds()
    stranded = 0
    for _ in range(25):
        pool = SyncPool(CONFIG)
        done = threading.Event()
        outcome: list[BaseException | None] = []

        def starter(pool: SyncPool = pool, done: threading.Event = done, outcome: list = outcome) -> None:
            try:
                pool.start()
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)
            done.set()

        thread = threading.Thread(target=starter, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while pool._loop is None and time.monotonic() < deadline:  # close in the window start() just opened
            pass
        time.sleep(rng.uniform(0, 0.003))
        pool.close(timeout=10)
        if not done.wait(10):
            stranded += 1
            continue
        assert outcome[0] is None or isinstance(outcome[0], PoolClosed), outcome
        thread.join(5)
    assert stranded == 0
    assert _pool_threads() == 0
    assert _fds() <= fds_before + 2
    assert "Task was destroyed but it is pending" not in caplog.text


SIGNAL_SCRIPT = """
import os, random, signal, sys, threading, time
from dspy_bridge import PoolClosed
from dspy_bridge.pool import PoolConfig, SyncPool
rng = random.Random(int(sys.argv[1]))
fds = len(os.listdir("/proc/self/fd"))
for _ in range(int(sys.argv[2])):
    pool = SyncPool(PoolConfig(size=1, start_strategy="spawn", mode="mock"))
    signal.signal(signal.SIGALRM, lambda *_: pool.close(timeout=10))
    signal.setitimer(signal.ITIMER_REAL, rng.choice([rng.uniform(0.0001, 0.004), rng.uniform(0.004, 0.06)]))
    try:
        pool.start()
    except PoolClosed:
        pass
    signal.setitimer(signal.ITIMER_REAL, 0)
    pool.close(timeout=10)
threads = [t.name for t in threading.enumerate() if t.name == "dspy-bridge-pool"]
print("threads", len(threads), "fds", len(os.listdir("/proc/self/fd")) - fds)
"""


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_close_from_a_signal_handler_while_starting() -> None:
    """The handler interrupts start() on the same thread; run in a child so a hang is a failure, not a hang."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", SIGNAL_SCRIPT, "11", "20"], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("start() never returned after close() from a signal handler")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["threads", "0", "fds", "0"], done.stdout + done.stderr
    assert "Task was destroyed" not in done.stderr


def test_close_with_requests_in_flight_releases_every_caller() -> None:
    blocked = 0
    for _ in range(8):
        pool = SyncPool(PoolConfig(size=2, start_strategy="spawn", mode="mock")).start()
        finished: list[threading.Event] = []
        stop = threading.Event()

        def caller(done: threading.Event, pool: SyncPool = pool, stop: threading.Event = stop) -> None:
            try:
                while not stop.is_set():
                    pool.ping()
            except Exception:
                pass
            done.set()

        threads = []
        for _ in range(16):
            done = threading.Event()
            finished.append(done)
            threads.append(threading.Thread(target=caller, args=(done,), daemon=True))
        for thread in threads:
            thread.start()
        time.sleep(0.02)
        pool.close(timeout=10)
        deadline = time.monotonic() + 5
        blocked += sum(1 for done in finished if not done.wait(max(0.0, deadline - time.monotonic())))
        stop.set()
    assert blocked == 0
    assert _pool_threads() == 0
