"""SyncPool: the blocking facade over the asyncio pool, on its own loop thread."""

from __future__ import annotations

import threading

import pytest

from dspy_bridge import HandlerError, PoolClosed, UsageError
from dspy_bridge.pool import PoolConfig, PoolEvent, SyncPool
from poolkit import ProcessRecord


def test_sync_pool_runs_the_whole_api_and_reaps_on_exit() -> None:
    events: list[tuple[str, str]] = []
    with SyncPool(PoolConfig(size=2, start_strategy="spawn")) as pool:
        pool.add_listener(lambda event: events.append((event.kind, threading.current_thread().name)))
        records = [ProcessRecord(pid) for pid in pool.worker_pids()]
        assert len(records) == 2 and all(record.alive() for record in records)
        program = pool.create_program("question -> answer", session_id="t1")
        pool.configure_lm("gemini/gemini-2.5-flash", session_id="t1")
        pool.stub(program, {"answer": "4"}, session_id="t1")
        assert pool.execute(program, {"question": "2+2?"}, session_id="t1")["outputs"] == {"answer": "4"}
        with pytest.raises(HandlerError) as missing:
            pool.execute(program, {"question": "2+2?"}, session_id="t2")
        assert missing.value.type == "program_not_found"
        assert pool.ping()["status"] == "ok"
        assert pool.request("list_programs", session_id="t1")["programs"] == [program]
        pool.delete_program(program, session_id="t1")
        assert pool.close_session("t1") is True
        stats = pool.stats()
        assert stats.workers_by_state["ready"] == 2 and stats.requests >= 8 and stats.state == "running"
        assert [event.kind for event in pool.events][:2] == ["worker_spawned", "worker_spawned"]
    assert ("pool_closed", "dspy-bridge-pool") in events  # listeners run on the loop thread
    assert not any(record.exists() for record in records)
    with pytest.raises(PoolClosed):
        pool.ping()
    pool.close()


def test_misuse_is_explained_instead_of_deadlocking() -> None:
    never_started = SyncPool(size=1, start_strategy="spawn")
    with pytest.raises(UsageError, match="not started"):
        never_started.ping()
    never_started.close()  # closing a pool that never started is fine, and final
    with pytest.raises(UsageError, match="closed"):
        never_started.start()
    pool = SyncPool(size=1, start_strategy="spawn")
    seen: list[BaseException] = []

    def blocking_listener(event: PoolEvent) -> None:
        if event.kind != "pool_closed":
            return
        try:
            pool.ping()
        except UsageError as exc:
            seen.append(exc)

    with pool:
        pool.add_listener(blocking_listener)
        pool.close_session("nobody")
        remove = pool.add_listener(lambda event: None)
        remove()
    assert seen and "deadlock" in str(seen[0])
    with pytest.raises(UsageError, match="closed"):
        pool.start()


def test_submit_pipelines_from_one_thread() -> None:
    with SyncPool(size=2, start_strategy="spawn") as pool:
        futures = [pool.submit("ping") for _ in range(50)]
        assert {future.result()["status"] for future in futures} == {"ok"}
        assert pool.stats().start_strategy == "spawn"
    with pytest.raises(PoolClosed):
        pool.submit("ping")
