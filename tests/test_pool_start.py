"""Pool start-up: parallel spawn, ready-when-first/all, start failures, configuration, command line."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from pydantic import ValidationError

from dspy_bridge import PoolClosed, UsageError, VersionMismatch, WorkerStartupFailed
from dspy_bridge.pool import Pool, PoolConfig, PoolState, build_worker_command, worker_environment
from poolkit import EventLog, ProcessRecord, children_of, poolkit_command


def mock_config(**options: object) -> PoolConfig:
    return PoolConfig.model_validate({"mode": "mock", "start_strategy": "spawn", **options})


async def test_every_worker_is_spawned_while_none_has_said_hello(tmp_path: os.PathLike[str]) -> None:
    # Workers that never say hello: a sequential start would stop at the first one.
    hang = os.path.join(tmp_path, "hang")
    open(hang, "w").close()
    log = EventLog()
    pool = Pool(
        mock_config(size=3, worker_command=poolkit_command(), env={"POOLKIT_HANG_FILE": hang}, shutdown_grace=0.1)
    )
    pool.add_listener(log)
    starting = asyncio.create_task(pool.start())
    await log.wait_for("worker_spawned", 3)
    pids = [event.pid for event in log.of("worker_spawned")]
    assert log.count("worker_started") == 0
    records = [ProcessRecord(pid) for pid in pids if pid is not None]
    assert len(records) == 3 and all(record.alive() for record in records)
    assert set(pids) <= set(children_of(os.getpid()))
    await pool.aclose()
    with pytest.raises(PoolClosed):
        await starting
    assert not any(record.exists() for record in records), records


async def test_parallel_start_spawns_all_before_the_first_hello_and_records_start_times() -> None:
    log = EventLog()
    pool = Pool(mock_config(size=4))
    pool.add_listener(log)
    async with pool:
        kinds = log.kinds()
        assert kinds[:4] == ["worker_spawned"] * 4
        assert kinds.index("worker_started") == 4
        spawned = log.of("worker_spawned")
        started = log.of("worker_started")
        assert max(event.time for event in spawned) <= min(event.time for event in started)
        workers = pool.workers()
        assert {event.pid for event in spawned} == {handle.pid for handle in workers}
        assert all(handle.hello is not None and handle.hello.pid == handle.pid for handle in workers)
        stats = pool.stats()
        assert stats.workers_by_state["ready"] == 4
        assert stats.time_to_ready_ms is not None and stats.time_to_ready_ms > 0
        assert all(ms is not None and ms > 0 for ms in stats.start_ms.values())
        assert log.count("pool_ready") == 1
        pids = {(await pool.ping())["pid"] for _ in range(8)}
        assert pids <= {handle.pid for handle in workers}


async def test_ready_when_first_returns_while_a_slow_worker_is_still_spawning() -> None:
    config = mock_config(size=2, ready_when="first", worker_command=poolkit_command(), env={"POOLKIT_HANG_IDS": "w2"})
    async with Pool(config) as pool:
        stats = pool.stats()
        assert stats.workers_by_state["ready"] == 1
        assert stats.workers_by_state["spawning"] == 1
        answer = await pool.request("whoami")
        assert answer["worker_id"].endswith("w1")
        hung = [handle for handle in pool.workers() if handle.hello is None]
        records = [ProcessRecord(handle.pid) for handle in hung]
    assert records and not any(record.exists() for record in records)


async def test_ready_when_all_fails_with_the_exit_code_and_stderr_of_the_failed_worker() -> None:
    log = EventLog()
    pool = Pool(mock_config(size=2, worker_command=poolkit_command(), env={"POOLKIT_FAIL_IDS": "w2"}))
    pool.add_listener(log)
    with pytest.raises(WorkerStartupFailed) as caught:
        await pool.start()
    assert "refusing to start on purpose" in str(caught.value)
    assert "exited with code 3" in str(caught.value)
    assert pool.state is PoolState.BROKEN
    assert log.count("worker_start_failed") == 1
    records = [ProcessRecord(event.pid) for event in log.of("worker_spawned") if event.pid is not None]
    assert len(records) == 2 and not any(record.exists() for record in records)
    with pytest.raises(PoolClosed) as closed:
        await pool.request("ping")
    assert closed.value.__cause__ is caught.value
    await pool.aclose()  # closing a broken pool is fine


async def test_ready_when_first_fails_only_when_every_worker_fails(tmp_path: os.PathLike[str]) -> None:
    fail = os.path.join(tmp_path, "fail")
    open(fail, "w").close()
    pool = Pool(
        mock_config(size=2, ready_when="first", worker_command=poolkit_command(), env={"POOLKIT_FAIL_FILE": fail})
    )
    with pytest.raises(WorkerStartupFailed):
        await pool.start()
    await pool.aclose()


async def test_a_worker_that_never_says_hello_is_killed_after_start_timeout() -> None:
    log = EventLog()
    pool = Pool(
        mock_config(size=1, start_timeout=0.5, worker_command=poolkit_command(), env={"POOLKIT_HANG_IDS": "w1"})
    )
    pool.add_listener(log)
    with pytest.raises(WorkerStartupFailed, match=r"no hello within start_timeout=0\.5"):
        await pool.start()
    record = ProcessRecord(log.of("worker_spawned")[0].pid or 0)
    assert not record.exists()


async def test_a_worker_speaking_another_protocol_version_is_refused() -> None:
    pool = Pool(mock_config(size=1, worker_command=poolkit_command(), env={"POOLKIT_PROTOCOL": "0.9"}))
    with pytest.raises(VersionMismatch, match=r"protocol 0\.9"):
        await pool.start()


async def test_a_command_that_cannot_be_executed_is_a_startup_failure() -> None:
    pool = Pool(mock_config(size=1, worker_command=["/nonexistent/python3"]))
    with pytest.raises(WorkerStartupFailed, match="could not launch") as caught:
        await pool.start()
    assert isinstance(caught.value.__cause__, FileNotFoundError)


async def test_lifecycle_misuse_is_explained() -> None:
    pool = Pool(mock_config(size=1))
    with pytest.raises(UsageError, match="not started"):
        await pool.request("ping")
    async with pool:
        with pytest.raises(UsageError, match="already called"):
            await pool.start()
    with pytest.raises(UsageError, match="closed"):
        await pool.start()
    with pytest.raises(PoolClosed):
        await pool.request("ping")
    unstarted = Pool(mock_config(size=1))
    await unstarted.aclose()
    await unstarted.aclose()


async def test_lazy_pool_starts_a_worker_on_the_first_request_and_retires_it_when_idle() -> None:
    log = EventLog()
    pool = Pool(mock_config(size=0, max_overflow=1, overflow_idle_timeout=0.2))
    pool.add_listener(log)
    async with pool:
        assert pool.workers() == []
        answer = await pool.ping()
        record = ProcessRecord(answer["pid"])
        assert record.alive()
        await log.wait_for("worker_retired")
        await log.wait_for("worker_exited")
        assert not record.exists()
        assert (await pool.ping())["pid"] != answer["pid"]


def test_options_are_validated_and_errors_name_the_option() -> None:
    with pytest.raises(ValidationError, match="size"):
        PoolConfig(size=-1)
    with pytest.raises(ValidationError, match="size \\+ max_overflow"):
        PoolConfig(size=0, max_overflow=0)
    with pytest.raises(ValidationError, match="ready_when"):
        PoolConfig.model_validate({"ready_when": "some"})
    with pytest.raises(ValidationError, match="lm needs a 'model'"):
        PoolConfig(lm={"temperature": 0.0})
    with pytest.raises(ValidationError, match="no_such_option"):
        PoolConfig.model_validate({"no_such_option": 1})
    assert PoolConfig(mode="real").effective_max_in_flight == 1
    assert PoolConfig(mode="mock").effective_max_in_flight == 16
    assert PoolConfig(mode="mock", max_in_flight=3).effective_max_in_flight == 3
    assert "api_key" not in repr(PoolConfig(lm={"model": "gemini/x", "api_key": "secret-value"}))


def test_worker_command_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = PoolConfig(mode="mock", codec="json")
    argv = build_worker_command(config, "w7")
    assert argv[:3] == [sys.executable, "-S", "-c"]
    assert argv[3] == "from dspy_bridge.worker._main import main; main()"
    assert argv[4:] == ["--mode", "mock", "--codec", "json", "--worker-id", "w7"]
    custom = PoolConfig(worker_command=["my-worker", "--flag"], worker_concurrency=4)
    assert build_worker_command(custom, "w1") == [
        "my-worker",
        "--flag",
        "--mode",
        "mock",
        "--codec",
        "msgpack",
        "--worker-id",
        "w1",
        "--max-concurrency",
        "4",
    ]
    env = worker_environment(PoolConfig(mode="real", env={"EXTRA": "1"}))
    assert env["DSPY_BRIDGE_PARENT_PID"] == str(os.getpid())
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert env["EXTRA"] == "1"
    assert all(entry in env["PYTHONPATH"].split(os.pathsep) for entry in sys.path if entry)
    monkeypatch.delenv("LITELLM_LOCAL_MODEL_COST_MAP", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "host-key")
    monkeypatch.setenv("HOST_ONLY", "kept")
    monkeypatch.setenv("MY_SECRET", "dropped")
    mock = worker_environment(PoolConfig(mode="mock", secret_env=["my_secret"]))
    assert "LITELLM_LOCAL_MODEL_COST_MAP" not in mock
    assert mock["HOST_ONLY"] == "kept" and "GEMINI_API_KEY" not in mock and "MY_SECRET" not in mock
    explicit = worker_environment(PoolConfig(mode="mock", env={"GEMINI_API_KEY": "chosen"}))
    assert explicit["GEMINI_API_KEY"] == "chosen"  # PoolConfig.env is explicit: it wins
