"""The circuit breaker: its state machine (fake clock) and its place on the pool's request path."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from dspy_bridge import CircuitOpen, WorkerCrashed, WorkerStartupFailed
from dspy_bridge.pool import BreakerState, CircuitBreaker, Pool, PoolConfig
from poolkit import EventLog, loop_errors, poolkit_command


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def crash(number: int = 1) -> WorkerCrashed:
    return WorkerCrashed(f"crash {number}", exit_code=-9, signal_name="SIGKILL")


def test_consecutive_failures_within_the_window_open_it() -> None:
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(3, 10.0, 5.0, clock=clock, on_change=lambda old, new, why: changes.append((old, new)))
    breaker.record_failure(crash(1))
    clock.advance(11)  # the first one falls out of the window
    breaker.record_failure(crash(2))
    breaker.record_failure(crash(3))
    assert breaker.state is BreakerState.CLOSED and breaker.admit() is False
    breaker.record_success(probe=False)  # an answered request ends the streak
    breaker.record_failure(crash(4))
    breaker.record_failure(crash(5))
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(crash(6))
    assert breaker.state is BreakerState.OPEN and changes == [("closed", "open")]
    assert not breaker.allows_restart()
    with pytest.raises(CircuitOpen, match="crash 6") as caught:
        breaker.admit()
    assert caught.value.__cause__ is breaker.last_failure
    assert "retrying in 5.0 s" in str(caught.value)


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, 5.0, clock=clock)
    breaker.record_failure(crash())
    clock.advance(4.9)
    with pytest.raises(CircuitOpen):
        breaker.admit()
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit() is True
    with pytest.raises(CircuitOpen, match="probe"):
        breaker.admit()
    breaker.release_probe()  # the probe was cancelled: no verdict, the next request probes
    assert breaker.admit() is True
    breaker.record_failure(crash(2))  # the probe failed: open again, timer restarted
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen, match="crash 2"):
        breaker.admit()
    clock.advance(5)
    assert breaker.admit() is True
    breaker.record_success(probe=True)
    assert breaker.state is BreakerState.CLOSED and breaker.allows_restart()
    assert breaker.times_opened == 2


@pytest.mark.usefixtures(loop_errors.__name__)
async def test_the_breaker_is_on_the_request_path(tmp_path: Path) -> None:
    fail = tmp_path / "fail"
    clock = FakeClock()
    log = EventLog()
    config = PoolConfig(
        size=1,
        start_strategy="spawn",
        worker_command=poolkit_command(),
        env={"POOLKIT_FAIL_FILE": str(fail)},
        breaker_threshold=3,
        breaker_window=60,
        breaker_reset=30,
        backoff=0.001,
        backoff_max=0.004,
    )
    pool = Pool(config, clock=clock)
    pool.add_listener(log)
    async with pool:
        worker = pool.workers()[0]
        fail.touch()  # from now on every new worker dies before its hello
        os.kill(worker.pid, signal.SIGKILL)  # crash 1; two failed replacements make 3
        opened = await log.wait_for("breaker_opened")
        assert "3 worker failures" in opened.details["reason"]
        assert pool.breaker.state is BreakerState.OPEN and pool.stats().breaker_state == "open"

        spawned = log.count("worker_spawned")
        with pytest.raises(CircuitOpen, match="WorkerStartupFailed") as caught:
            await pool.request("whoami")
        assert isinstance(caught.value.__cause__, WorkerStartupFailed)
        assert "refusing to start on purpose" in str(caught.value.__cause__)
        assert log.count("worker_spawned") == spawned  # failed fast: nothing was started for it

        clock.advance(30)  # half-open; the cause persists, so the probe's worker fails and it re-opens
        with pytest.raises(CircuitOpen):
            await pool.request("whoami")
        assert log.count("breaker_half_open") == 1 and log.count("breaker_opened") == 2
        assert log.count("worker_spawned") == spawned + 1  # exactly one worker, for the probe

        fail.unlink()
        with pytest.raises(CircuitOpen):
            await pool.request("whoami")  # still open: the timer restarted when the probe failed
        clock.advance(30)
        answer = await pool.request("whoami")  # the probe: a worker starts on demand and answers
        assert pool.breaker.state is BreakerState.CLOSED
        closed = await log.wait_for("breaker_closed")
        assert "probe" in closed.details["reason"]
        assert (await pool.request("whoami"))["pid"] == answer["pid"]
        stats = pool.stats()
        assert stats.breaker_opened == 2 and stats.crashes == 1 and stats.start_failures >= 3
        assert stats.workers_by_state["ready"] == 1
