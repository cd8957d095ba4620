"""Real DSPy workers in the pool, talking to the fake Gemini over real sockets (slow: seconds per worker)."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator

import pytest

from dspy_bridge.pool import Pool, PoolConfig
from dspy_bridge.testing import FakeGemini
from poolkit import EventLog, ProcessRecord, loop_errors

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures(loop_errors.__name__)]

KEY = "pool-test-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY) as fake:
        yield fake


async def test_two_real_workers_answer_through_the_fake_gemini_and_a_session_survives_a_kill(
    gemini: FakeGemini,
) -> None:
    log = EventLog()
    config = PoolConfig(size=2, mode="real", start_strategy="spawn", start_timeout=120, request_timeout=120)
    async with Pool(config) as pool:
        pool.add_listener(log)
        hellos = [handle.hello for handle in pool.workers()]
        assert all(hello is not None and hello.mode == "real" and hello.dspy_version for hello in hellos)
        session = "real-session"
        await pool.configure_lm(
            "gemini/gemini-2.5-flash",
            api_key=KEY,
            api_base=gemini.base_url,
            cache=False,
            num_retries=0,
            session_id=session,
        )
        program = await pool.create_program("question -> answer", session_id=session)
        first = await pool.execute(program, {"question": "What is 2+2?"}, session_id=session)
        assert isinstance(first["outputs"]["answer"], str) and first["outputs"]["answer"]
        assert gemini.requests and gemini.requests[-1].api_key == KEY

        worker = pool.session_worker(session)
        assert worker is not None
        record = ProcessRecord(worker.pid)
        os.kill(worker.pid, signal.SIGKILL)
        await log.wait_for("worker_crashed")
        again = await pool.execute(program, {"question": "What is 2+2?"}, session_id=session)
        assert again["outputs"] == first["outputs"]  # same program id, same LM settings, replayed
        assert not record.exists()
        assert pool.stats().repins == 1
        records = [ProcessRecord(handle.pid) for handle in pool.workers()]
    assert not any(record.exists() for record in records)
