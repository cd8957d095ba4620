"""Streaming on mock workers: chunk frames before the Response, and every pool rule holding mid-stream.

The misbehaving poolkit worker streams by hand (``inputs.drip``), so a test decides when chunks leave,
when the worker stops to wait, and what fails after; the rest are ordinary mock workers with stubs.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge import HandlerError, PoolClosed, RequestTimeout, UsageError, WorkerCrashed
from dspy_bridge.pool import Pool, PoolConfig, StreamChunk, StreamEnd, StreamEvent, SyncPool
from poolkit import HANG_GUARD, fifo_written, loop_errors, poolkit_command

pytestmark = pytest.mark.usefixtures(loop_errors.__name__)


def config(**options: object) -> PoolConfig:
    return PoolConfig.model_validate(
        {"mode": "mock", "start_strategy": "spawn", "worker_command": poolkit_command(), **options}
    )


def drip(**spec: Any) -> dict[str, Any]:
    return {"drip": spec}


async def collect(stream: Any, into: list[StreamEvent] | None = None) -> list[StreamEvent]:
    items = [] if into is None else into
    async for item in stream:
        items.append(item)
    return items


async def test_a_stubbed_program_streams_one_chunk_per_field_then_its_result() -> None:
    async with Pool(PoolConfig(size=1, mode="mock")) as pool:
        worker = pool.workers()[0]
        assert worker.hello is not None and "stream" in worker.hello.capabilities
        await pool.configure_lm("gemini/gemini-2.5-flash", session_id="s")
        program = await pool.create_program("question -> answer, score: float", session_id="s")
        await pool.stub(program, {"answer": "four", "score": 0.5}, session_id="s")
        items = await collect(pool.stream(program, {"question": "2+2?"}, session_id="s"))
        assert items[:2] == [StreamChunk("answer", "four"), StreamChunk("score", "0.5")]
        end = items[2]
        assert isinstance(end, StreamEnd) and len(items) == 3
        assert end.outputs == {"answer": "four", "score": 0.5} and end.result["source"] == "stub"
        # the same program without streaming: the ordinary result, and the worker is healthy
        plain = await pool.execute(program, {"question": "2+2?"}, session_id="s")
        assert plain["outputs"] == end.outputs
        assert pool.stats().crashes == 0


async def test_interleaved_streams_on_one_worker_each_keep_their_own_order() -> None:
    async with Pool(config(size=1, max_in_flight=8, worker_concurrency=4)) as pool:
        streams = {
            n: pool.stream("prog_any", drip(chunks=[f"{n}-{i} " for i in range(20)], key=f"k{n}")) for n in range(6)
        }
        results = await asyncio.gather(*(collect(stream) for stream in streams.values()))
        pids = set()
        for n, items in zip(streams, results, strict=True):
            chunks, end = items[:-1], items[-1]
            assert [chunk.text for chunk in chunks if isinstance(chunk, StreamChunk)] == [
                f"{n}-{i} " for i in range(20)
            ]
            assert isinstance(end, StreamEnd) and end.outputs == {"answer": "".join(f"{n}-{i} " for i in range(20))}
            pids.add(end.result["pid"])
        assert len(pids) == 1  # all on the one worker, its handler threads interleaving their frames


async def test_a_worker_killed_mid_stream_fails_the_stream_with_worker_crashed(tmp_path: Path) -> None:
    notify = tmp_path / "chunks-sent"
    os.mkfifo(notify)
    async with Pool(config(size=1, request_timeout=None)) as pool:
        pid = pool.workers()[0].pid
        seen: list[StreamEvent] = []
        consumer = asyncio.ensure_future(
            collect(pool.stream("prog_any", drip(chunks=["a", "b"], notify=str(notify), sleep=60)), seen)
        )
        await fifo_written(notify)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashed) as caught:
            await asyncio.wait_for(consumer, HANG_GUARD)
        assert caught.value.worker_pid == pid and caught.value.signal_name == "SIGKILL"
        assert seen == [StreamChunk("answer", "a"), StreamChunk("answer", "b")]  # delivered before the crash


async def test_a_stream_that_outlives_its_timeout_raises_request_timeout_after_its_chunks(tmp_path: Path) -> None:
    notify = tmp_path / "chunks-sent"
    os.mkfifo(notify)
    async with Pool(config(size=1)) as pool:
        seen: list[StreamEvent] = []
        stream = pool.stream("prog_any", drip(chunks=["x"], notify=str(notify), sleep=60), timeout=1.0)
        consumer = asyncio.ensure_future(collect(stream, seen))
        await fifo_written(notify)
        with pytest.raises(RequestTimeout):
            await asyncio.wait_for(consumer, HANG_GUARD)
        assert seen == [StreamChunk("answer", "x")]
        assert pool.stats().timeouts == 1


async def test_closing_the_pool_mid_stream_ends_it_with_pool_closed(tmp_path: Path) -> None:
    notify = tmp_path / "chunks-sent"
    os.mkfifo(notify)
    pool = Pool(config(size=1, request_timeout=None, shutdown_grace=0.5))
    await pool.start()
    seen: list[StreamEvent] = []
    consumer = asyncio.ensure_future(
        collect(pool.stream("prog_any", drip(chunks=["1", "2"], notify=str(notify), sleep=60)), seen)
    )
    await fifo_written(notify)
    await pool.aclose()
    with pytest.raises(PoolClosed):
        await asyncio.wait_for(consumer, HANG_GUARD)
    assert seen == [StreamChunk("answer", "1"), StreamChunk("answer", "2")]


async def test_a_retryable_failure_is_retried_before_the_first_chunk_never_after() -> None:
    async with Pool(config(size=1, retries=3, backoff=0.001, backoff_max=0.01)) as pool:
        items = await collect(pool.stream("prog_any", drip(chunks=["ok"], key="before", fail_times=2)))
        end = items[-1]
        assert items[:-1] == [StreamChunk("answer", "ok")]
        assert isinstance(end, StreamEnd) and end.result["attempts"] == 3  # two failures retried, no chunk lost
        seen: list[StreamEvent] = []
        with pytest.raises(HandlerError) as caught:
            await collect(pool.stream("prog_any", drip(chunks=["once"], key="after", fail="lm_rate_limited")), seen)
        assert caught.value.type == "lm_rate_limited" and caught.value.retryable
        assert seen == [StreamChunk("answer", "once")]  # not re-emitted by a retry
        assert pool.stats().retries == 2


async def test_a_worker_without_the_stream_capability_is_refused_and_keeps_serving() -> None:
    async with Pool(config(size=1, env={"POOLKIT_NO_STREAM": "1"})) as pool:
        hello = pool.workers()[0].hello
        assert hello is not None and "stream" not in hello.capabilities
        with pytest.raises(UsageError, match=r"cannot stream.*'stream' capability"):
            await collect(pool.stream("prog_any", drip(chunks=["never"])))
        # its slot was given back; ordinary requests still work, and it never sent a chunk frame
        result = await pool.execute("prog_any", drip(chunks=["quiet"]))
        assert result["outputs"] == {"answer": "quiet"}
        assert pool.stats().crashes == 0 and pool.stats().workers[0].in_flight == 0


async def test_leaving_a_stream_early_abandons_it_and_frees_the_slot() -> None:
    async with Pool(config(size=1, max_in_flight=1)) as pool:
        stream = pool.stream("prog_any", drip(chunks=["a", "b", "c"], sleep=0.2))
        async for item in stream:
            assert item == StreamChunk("answer", "a")
            break
        await stream.aclose()  # type: ignore[attr-defined]
        result = await pool.execute("prog_any", drip(chunks=["next"]))  # waits for the slot, then runs
        assert result["outputs"] == {"answer": "next"}


def test_sync_pool_stream_is_an_ordinary_iterator() -> None:
    with SyncPool(config(size=1)) as pool:
        items = list(pool.stream("prog_any", drip(chunks=["x", "y"], field="text")))
        assert items == [StreamChunk("text", "x"), StreamChunk("text", "y"), StreamEnd(items[-1].result)]  # type: ignore[union-attr]
        assert isinstance(items[-1], StreamEnd) and items[-1].outputs == {"text": "xy"}
        for item in pool.stream("prog_any", drip(chunks=["p", "q"], sleep=0.2)):
            assert item == StreamChunk("answer", "p")
            break  # cancels the request; the pool stays usable
        assert pool.execute("prog_any", drip(chunks=["z"]))["outputs"] == {"answer": "z"}
        with pytest.raises(UsageError):
            list(pool.stream("prog_any", "not a map"))  # type: ignore[arg-type]
