"""Crashes, timeouts, retries, protocol violations, recycling: what fails, what survives, what is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from dspy_bridge import HandlerError, PoolClosed, PoolError, RequestTimeout, WorkerCrashed
from dspy_bridge._exceptions import ProtocolError, RemoteTraceback
from dspy_bridge.pool import Pool, PoolConfig
from poolkit import EventLog, ProcessRecord, fifo_written, loop_errors, poolkit_command

pytestmark = pytest.mark.usefixtures(loop_errors.__name__)


def config(**options: object) -> PoolConfig:
    return PoolConfig.model_validate(
        {"mode": "mock", "start_strategy": "spawn", "worker_command": poolkit_command(), **options}
    )


async def test_a_crash_fails_exactly_the_requests_its_worker_held(tmp_path: Path) -> None:
    log = EventLog()
    async with Pool(config(size=2, max_in_flight=4, request_timeout=None)) as pool:
        pool.add_listener(log)
        doomed = (await pool.request("whoami", session_id="a"))["pid"]
        healthy = (await pool.request("whoami", session_id="b"))["pid"]
        assert doomed != healthy
        in_handler = tmp_path / "in-handler"
        os.mkfifo(in_handler)
        held = [
            asyncio.create_task(pool.request("sleep", {"seconds": 60, "notify": str(in_handler)}, session_id="a")),
            asyncio.create_task(pool.request("sleep", {"seconds": 60}, session_id="a")),
            asyncio.create_task(pool.request("whoami", session_id="a")),
        ]
        await fifo_written(in_handler)  # the first is running; the other two wait in the worker's pipe
        others = [asyncio.create_task(pool.request("sleep", {"seconds": 0.01}, session_id="b")) for _ in range(3)]
        others += [asyncio.create_task(pool.request("whoami", session_id="b")) for _ in range(3)]
        os.kill(doomed, signal.SIGKILL)
        held_results = await asyncio.gather(*held, return_exceptions=True)
        other_results = await asyncio.gather(*others)

        request_ids = set()
        for error in held_results:
            assert isinstance(error, WorkerCrashed), error
            assert error.worker_pid == doomed and error.signal_name == "SIGKILL" and error.exit_code == -9
            assert error.session_id == "a" and error.request_id is not None
            assert f"request {error.request_id}" in str(error)
            request_ids.add(error.request_id)
        assert len(request_ids) == 3
        assert all(result["pid"] == healthy for result in other_results)

        await log.wait_for("worker_replaced")
        assert not ProcessRecord(doomed).exists()
        stats = pool.stats()
        assert stats.workers_by_state["ready"] == 2 and stats.crashes == 1 and stats.restarts == 1
        crashed = log.of("worker_crashed")[0]
        assert crashed.pid == doomed and crashed.details["signal"] == "SIGKILL" and crashed.details["sessions"] == ["a"]
        assert (await pool.request("whoami", session_id="a"))["pid"] not in (doomed, healthy)


async def test_a_crash_report_carries_the_exit_code_and_the_stderr_tail() -> None:
    async with Pool(config(size=1)) as pool:
        with pytest.raises(WorkerCrashed) as caught:
            await pool.request("exit", {"code": 7, "stderr": "Traceback: something broke\nlast words"})
    error = caught.value
    assert error.exit_code == 7 and error.signal_name is None
    assert "last words" in error.stderr_tail and "last words" in str(error)
    assert "exited with code 7" in str(error)
    assert error.worker_pid is not None and error.request_id is not None


async def test_a_request_past_its_deadline_times_out_and_its_worker_is_killed_and_replaced() -> None:
    log = EventLog()
    async with Pool(config(size=1, request_timeout=30)) as pool:
        pool.add_listener(log)
        stuck = pool.workers()[0]
        record = ProcessRecord(stuck.pid)
        with pytest.raises(RequestTimeout, match="was killed and will be replaced") as caught:
            await pool.request("sleep", {"seconds": 60}, timeout=0.3)
        assert caught.value.worker_pid == stuck.pid and caught.value.request_id is not None
        killed = await log.wait_for("worker_killed")
        assert killed.pid == stuck.pid and "timeout" in killed.details["reason"]
        assert not record.exists()
        await log.wait_for("worker_replaced")
        assert (await pool.request("whoami"))["pid"] != stuck.pid
        stats = pool.stats()
        assert stats.timeouts == 1 and stats.crashes == 0  # a kill by the pool is not a crash
        assert pool.breaker.state.value == "closed"


async def test_other_requests_on_a_worker_killed_for_a_timeout_say_why(tmp_path: Path) -> None:
    async with Pool(config(size=1, max_in_flight=2)) as pool:
        in_handler = tmp_path / "in-handler"
        os.mkfifo(in_handler)
        slow = asyncio.create_task(pool.request("sleep", {"seconds": 60, "notify": str(in_handler)}, timeout=None))
        await fifo_written(in_handler)
        with pytest.raises(RequestTimeout):
            await pool.request("whoami", timeout=0.2)
        with pytest.raises(WorkerCrashed, match="killed by the pool") as caught:
            await slow
        assert caught.value.signal_name == "SIGKILL"


async def test_retryable_errors_are_retried_with_backoff_until_they_pass() -> None:
    log = EventLog()
    async with Pool(config(size=1, retries=3, backoff=0.01, backoff_max=0.02)) as pool:
        pool.add_listener(log)
        result = await pool.request("flaky", {"key": "a", "fail_times": 2})
        assert result["attempts"] == 3
        retried = log.of("request_retried")
        assert [event.details["attempt"] for event in retried] == [1, 2]
        assert all(0 < event.details["delay_s"] <= 0.02 for event in retried)
        assert all(event.details["error_type"] == "lm_rate_limited" for event in retried)
        assert pool.stats().retries == 2


async def test_retries_are_bounded_and_non_retryable_errors_are_not_retried() -> None:
    async with Pool(config(size=1, retries=2, backoff=0.001)) as pool:
        with pytest.raises(HandlerError) as exhausted:
            await pool.request("flaky", {"key": "b", "fail_times": 10})
        assert exhausted.value.retryable and exhausted.value.type == "lm_rate_limited"
        assert "attempt 3 fails" in str(exhausted.value)  # 1 try + 2 retries
        with pytest.raises(HandlerError) as final:
            await pool.request("flaky", {"key": "c", "fail_times": 1, "type": "lm_auth", "retryable": False})
        assert "attempt 1 fails" in str(final.value) and final.value.type == "lm_auth"
        assert pool.stats().retries == 2


async def test_handler_errors_keep_their_type_context_and_remote_traceback() -> None:
    async with Pool(config(size=1)) as pool:
        with pytest.raises(HandlerError) as unknown:
            await pool.request("no_such_command", session_id="s1")
        assert unknown.value.type == "unknown_command" and unknown.value.session_id == "s1"
        with pytest.raises(HandlerError) as bug:
            await pool.request("raise")
        assert bug.value.type == "internal"
        assert isinstance(bug.value.__cause__, RemoteTraceback)
        assert "ValueError: a handler bug on purpose" in bug.value.__cause__.tb
        assert (await pool.request("whoami"))["pid"] == pool.workers()[0].pid  # the worker lives on


async def test_a_worker_that_breaks_the_protocol_is_killed_and_replaced() -> None:
    log = EventLog()
    async with Pool(config(size=1)) as pool:
        pool.add_listener(log)
        liar = pool.workers()[0]
        with pytest.raises(WorkerCrashed, match="invalid frame") as caught:
            await pool.request("garbage")
        assert isinstance(caught.value.__cause__, ProtocolError)
        await log.wait_for("worker_replaced")
        assert not ProcessRecord(liar.pid).exists()
        assert (await pool.request("whoami"))["pid"] != liar.pid


async def test_a_response_with_an_unknown_id_breaks_that_worker_loudly() -> None:
    """Regression: the host silently dropped it, and the real request waited out its timeout."""
    log = EventLog()
    async with Pool(config(size=1, request_timeout=30.0)) as pool:
        pool.add_listener(log)
        liar = pool.workers()[0]
        with pytest.raises(WorkerCrashed, match="not in flight") as caught:
            async with asyncio.timeout(10):
                await pool.request("stray")
        assert isinstance(caught.value.__cause__, ProtocolError)
        await log.wait_for("worker_replaced")
        assert (await pool.request("whoami"))["pid"] != liar.pid


async def test_an_idle_worker_that_stops_answering_is_replaced_before_a_request_lands_on_it() -> None:
    """Regression: a SIGSTOPped idle worker stayed "ready" until requests timed out on it."""
    log = EventLog()
    async with Pool(config(size=2, heartbeat_interval=0.2, heartbeat_timeout=0.5, request_timeout=30.0)) as pool:
        pool.add_listener(log)
        stopped = pool.workers()[0]
        os.kill(stopped.pid, signal.SIGSTOP)
        failed = await log.wait_for("heartbeat_failed")
        assert failed.pid == stopped.pid
        await log.wait_for("worker_replaced")
        assert stopped.pid not in [w.pid for w in pool.workers()]
        async with asyncio.timeout(5):  # every request lands on an answering worker
            for _ in range(20):
                await pool.request("whoami")
        assert pool.stats().workers_by_state["ready"] == 2


async def test_a_worker_terminated_from_outside_says_goodbye_and_is_replaced_without_counting_a_crash() -> None:
    log = EventLog()
    async with Pool(config(size=1)) as pool:
        pool.add_listener(log)
        worker = pool.workers()[0]
        os.kill(worker.pid, signal.SIGTERM)
        exited = await log.wait_for("worker_exited")
        assert exited.pid == worker.pid
        await log.wait_for("worker_replaced")
        assert pool.stats().crashes == 0 and log.count("worker_crashed") == 0
        assert worker.goodbye is not None and worker.goodbye.reason == "sigterm"


async def test_workers_are_recycled_after_max_requests_and_sessions_follow() -> None:
    log = EventLog()
    async with Pool(config(size=1, max_requests_per_worker=5)) as pool:
        pool.add_listener(log)
        program = await pool.create_program("question -> answer", session_id="s")
        first = pool.workers()[0].pid
        pids = [(await pool.request("whoami", session_id="s"))["pid"] for _ in range(8)]
        assert pids[0] == first and pids[-1] != first
        assert log.count("worker_recycled") >= 1
        info = await pool.request("get_program_info", {"program_id": program}, session_id="s")
        assert info["program_id"] == program
        await log.wait_for("worker_exited")
        assert not ProcessRecord(first).exists()


async def test_when_every_slot_is_taken_checkout_waits_then_says_so(tmp_path: Path) -> None:
    async with Pool(config(size=1, max_in_flight=1, checkout_timeout=0.2, shutdown_grace=0.1)) as pool:
        in_handler = tmp_path / "in-handler"
        os.mkfifo(in_handler)
        busy = asyncio.create_task(pool.request("sleep", {"seconds": 60, "notify": str(in_handler)}))
        await fifo_written(in_handler)
        with pytest.raises(PoolError, match=r"checkout_timeout=0\.2"):
            await pool.request("whoami")
    with pytest.raises(PoolClosed):
        await busy


async def test_overflow_workers_start_when_every_worker_is_full(tmp_path: Path) -> None:
    log = EventLog()
    async with Pool(
        config(size=1, max_in_flight=1, max_overflow=1, overflow_idle_timeout=0.2, shutdown_grace=0.1)
    ) as pool:
        pool.add_listener(log)
        in_handler = tmp_path / "in-handler"
        os.mkfifo(in_handler)
        busy = asyncio.create_task(pool.request("sleep", {"seconds": 60, "notify": str(in_handler)}, timeout=None))
        await fifo_written(in_handler)
        extra = await pool.request("whoami")
        spawned = log.of("worker_spawned")
        assert spawned[-1].details["overflow"] is True and spawned[-1].pid == extra["pid"]
        await log.wait_for("worker_retired")
        await log.wait_for("worker_exited")
        assert not ProcessRecord(extra["pid"]).exists()
        busy.cancel()


async def test_with_restart_never_a_dead_pool_says_so() -> None:
    log = EventLog()
    async with Pool(config(size=1, restart="never")) as pool:
        pool.add_listener(log)
        worker = pool.workers()[0]
        os.kill(worker.pid, signal.SIGKILL)
        await log.wait_for("replacement_refused")
        with pytest.raises(PoolError, match="restart='never'") as caught:
            await pool.request("whoami")
        assert isinstance(caught.value.__cause__, WorkerCrashed)
        with pytest.raises(ValueError, match="timeout must be a positive"):
            await pool.request("whoami", timeout=0)
