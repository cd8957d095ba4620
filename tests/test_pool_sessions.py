"""Session affinity, state replay after a worker dies, pool-wide (anonymous) state."""

from __future__ import annotations

import asyncio
import os
import random
import signal

import pytest

from dspy_bridge import HandlerError, WorkerCrashed
from dspy_bridge.pool import Pool, PoolConfig
from dspy_bridge.pool._sessions import History
from dspy_bridge.protocol import program_id_for
from poolkit import EventLog, ProcessRecord, loop_errors, poolkit_command

pytestmark = pytest.mark.usefixtures(loop_errors.__name__)

SIGNATURE = "question -> answer"


def config(**options: object) -> PoolConfig:
    return PoolConfig.model_validate(
        {"mode": "mock", "start_strategy": "spawn", "worker_command": poolkit_command(), **options}
    )


async def test_sessions_stick_to_one_worker_under_concurrent_load() -> None:
    async with Pool(config(size=3, max_in_flight=4)) as pool:
        sessions = [f"s{i}" for i in range(12)]

        async def whoami(session_id: str) -> tuple[str, int]:
            if random.random() < 0.3:
                await pool.request("sleep", {"seconds": 0.002}, session_id=session_id)
            return session_id, (await pool.request("whoami", session_id=session_id))["pid"]

        calls = [whoami(session_id) for session_id in sessions for _ in range(15)]
        random.shuffle(calls)
        seen: dict[str, set[int]] = {}
        for session_id, pid in await asyncio.gather(*calls):
            seen.setdefault(session_id, set()).add(pid)
        assert all(len(pids) == 1 for pids in seen.values()), seen
        used = {next(iter(pids)) for pids in seen.values()}
        assert len(used) == 3  # sessions were spread over every worker
        for session_id in sessions:
            worker = pool.session_worker(session_id)
            assert worker is not None and {worker.pid} == seen[session_id]
        assert pool.stats().sessions == 12


async def test_a_session_survives_the_sigkill_of_its_worker_with_its_programs_intact() -> None:
    log = EventLog()
    async with Pool(config(size=2)) as pool:
        pool.add_listener(log)
        session = "survivor"
        fake_key = "AIza" + "x" * 35
        await pool.configure_lm("gemini/gemini-2.5-flash", api_key=fake_key, session_id=session)
        first = await pool.create_program(SIGNATURE, session_id=session)
        second = await pool.create_program("text -> summary", program_type="chain_of_thought", session_id=session)
        await pool.stub(first, {"answer": "4"}, session_id=session)
        await pool.stub(second, {"summary": "short"}, inputs={"text": "long"}, session_id=session)
        before = await pool.execute(first, {"question": "2+2?"}, session_id=session)
        old = pool.session_worker(session)
        assert old is not None
        record = ProcessRecord(old.pid)

        os.kill(old.pid, signal.SIGKILL)
        await log.wait_for("worker_crashed")
        assert not record.exists()  # reaped: no zombie

        after = await pool.execute(first, {"question": "2+2?"}, session_id=session)
        assert after["outputs"] == before["outputs"] == {"answer": "4"}
        moved = pool.session_worker(session)
        assert moved is not None and moved.pid != old.pid
        listed = await pool.request("list_programs", session_id=session)
        assert listed["programs"] == sorted([first, second])
        assert (await pool.execute(second, {"text": "long"}, session_id=session))["outputs"] == {"summary": "short"}
        repinned = await log.wait_for("session_repinned")
        assert repinned.details["session_id"] == session and repinned.details["previous"] == old.worker_id
        assert pool.stats().repins == 1
        assert fake_key not in repr(pool._sessions[session])


async def test_the_request_in_flight_when_the_worker_dies_fails_but_the_session_lives_on() -> None:
    async with Pool(config(size=2)) as pool:
        program = await pool.create_program(SIGNATURE, session_id="s")
        await pool.configure_lm("gemini/gemini-2.5-flash", session_id="s")
        await pool.stub(program, {"answer": "ok"}, session_id="s")
        with pytest.raises(WorkerCrashed) as caught:
            await pool.request("exit", {"code": 9, "stderr": "dying on purpose"}, session_id="s")
        assert caught.value.exit_code == 9 and caught.value.session_id == "s"
        result = await pool.execute(program, {"question": "q"}, session_id="s")
        assert result["outputs"] == {"answer": "ok"}


async def test_deleted_programs_stay_deleted_after_a_replay() -> None:
    log = EventLog()
    async with Pool(config(size=1)) as pool:
        pool.add_listener(log)
        keep = await pool.create_program(SIGNATURE, session_id="s")
        drop = await pool.create_program("a -> b", session_id="s")
        await pool.delete_program(drop, session_id="s")
        worker = pool.session_worker("s")
        assert worker is not None
        os.kill(worker.pid, signal.SIGKILL)
        await log.wait_for("worker_crashed")
        with pytest.raises(HandlerError) as missing:
            await pool.request("get_program_info", {"program_id": drop}, session_id="s")
        assert missing.value.type == "program_not_found"
        assert (await pool.request("list_programs", session_id="s"))["programs"] == [keep]


async def test_sessions_are_isolated_and_close_session_drops_the_state() -> None:
    async with Pool(config(size=1)) as pool:
        program = await pool.create_program(SIGNATURE, session_id="a")
        with pytest.raises(HandlerError) as other:
            await pool.request("get_program_info", {"program_id": program}, session_id="b")
        assert other.value.type == "program_not_found"
        assert await pool.close_session("a") is True
        assert await pool.close_session("a") is False
        assert (await pool.request("list_programs", session_id="a"))["programs"] == []
        assert pool.stats().sessions == 2  # "b", and "a" again (fresh)
        assert pool.session_worker("a") is not None


async def test_anonymous_state_is_pool_wide_and_reaches_replacement_workers() -> None:
    log = EventLog()
    lm = {"model": "gemini/gemini-2.5-flash"}
    async with Pool(config(size=3, lm=lm)) as pool:
        pool.add_listener(log)
        program = await pool.create_program(SIGNATURE)
        await pool.stub(program, {"answer": "everywhere"})
        pids = set()
        for handle in pool.workers():
            info = await pool.request("get_program_info", {"program_id": program})
            assert info["program_id"] == program
            pids.add(handle.pid)
        # every worker, including a replacement, can run it (needs the default LM and the stub too)
        victim = pool.workers()[0]
        os.kill(victim.pid, signal.SIGKILL)
        await log.wait_for("worker_replaced")
        for _ in range(12):
            result = await pool.execute(program, {"question": "q"})
            assert result["outputs"] == {"answer": "everywhere"}
        served = {w.pid for w in pool.workers() if w.requests_served > 0}
        assert len(served) == 3
        assert victim.pid not in served


def test_history_compaction_reproduces_the_worker_state() -> None:
    history = History()
    history.remember("configure_lm", {"model": "gemini/a"})
    history.remember("create_program", {"signature": "q -> a"})
    history.remember("stub_program", {"program_id": "p", "outputs": {"a": "1"}})
    history.remember("configure_lm", {"model": "gemini/b"})
    history.remember("create_program", {"signature": "q  ->   a"})  # same program, same id
    history.remember("create_program", {"signature": "x -> y"})
    history.remember("delete_program", {"program_id": program_id_for({"signature": "x -> y"})})
    history.remember("execute_program", {"program_id": "p", "inputs": {}})  # not state
    assert [command for command, _ in history.entries()] == ["stub_program", "configure_lm", "create_program"]
    assert history.entries()[1][1]["model"] == "gemini/b"
