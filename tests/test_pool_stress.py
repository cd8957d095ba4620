"""200 start/close cycles with workers SIGKILLed (and the pool closed) at random moments.

Nothing may escape but the pool's own errors (WorkerCrashed, WorkerStartupFailed, PoolClosed...),
``aclose`` never raises, nothing reaches the loop's exception handler, and — asked of the OS — no
process any cycle launched is left, zombie or alive. Cycles run four at a time to keep it quick.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter

import pytest

from dspy_bridge import BridgeError
from dspy_bridge.pool import Pool, PoolConfig, PoolEvent
from poolkit import ProcessRecord, children_of, loop_errors

pytestmark = pytest.mark.usefixtures(loop_errors.__name__)

CYCLES = 200
CONCURRENT = 4


async def one_cycle(rng: random.Random, launched: list[ProcessRecord], outcomes: Counter[str]) -> None:
    loop = asyncio.get_running_loop()
    config = PoolConfig(
        size=2,
        mode="mock",
        start_strategy="spawn",
        ready_when=rng.choice(["first", "all"]),
        request_timeout=10,
        shutdown_grace=1.0,
        terminate_grace=1.0,
        backoff=0.001,
        backoff_max=0.01,
    )
    pool = Pool(config)

    def record(event: PoolEvent) -> None:
        if event.kind == "worker_spawned" and event.pid is not None:
            launched.append(ProcessRecord(event.pid))

    pool.add_listener(record)

    def kill_one() -> None:
        victims = [handle for handle in pool.workers() if handle.process.returncode is None]
        if victims:
            rng.choice(victims).process.kill()  # SIGKILL; a no-op once reaped, so never a recycled pid

    for _ in range(rng.randint(0, 2)):
        loop.call_later(rng.uniform(0, 0.25), kill_one)
    early_close = rng.random() < 0.25
    closer = loop.call_later(rng.uniform(0, 0.2), lambda: loop.create_task(pool.aclose())) if early_close else None

    try:
        await pool.start()
        outcomes["started"] += 1
    except BridgeError as exc:
        outcomes[type(exc).__name__] += 1
    if pool.state.value == "running":
        results = await asyncio.gather(*(pool.ping() for _ in range(rng.randint(1, 20))), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                assert isinstance(result, BridgeError), repr(result)
                outcomes[type(result).__name__] += 1
            else:
                assert result["status"] == "ok"
                outcomes["answered"] += 1
    await pool.aclose()
    if closer is not None:
        closer.cancel()
    await pool.aclose()


async def test_start_close_cycles_with_random_kills_leave_nothing_behind() -> None:
    seed = int(os.environ.get("POOL_STRESS_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    launched: list[ProcessRecord] = []
    outcomes: Counter[str] = Counter()
    began = time.monotonic()
    for first in range(0, CYCLES, CONCURRENT):
        await asyncio.gather(
            *(
                one_cycle(random.Random(rng.random()), launched, outcomes)
                for _ in range(min(CONCURRENT, CYCLES - first))
            )
        )
    elapsed = time.monotonic() - began
    left = [record for record in launched if record.exists()]
    assert not left, f"seed {seed}: processes left behind: {left}"
    assert not {record.pid for record in launched} & set(children_of(os.getpid())), f"seed {seed}"
    assert outcomes["started"] > 0 and outcomes["answered"] > 0, outcomes
    print(f"\n{CYCLES} cycles, {len(launched)} workers launched, {elapsed:.1f} s, seed {seed}: {dict(outcomes)}")
