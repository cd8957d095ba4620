"""Issue 7: how long until N real (DSPy) workers have said hello, per start strategy; and what they cost in memory.

Run: python benchmarks/bench_startup.py [--sizes 1,2,4,8] [--runs 1] [--engines dspy,litellm] [--out FILE]

Strategies, each timed from "start" to the last worker's Hello frame:
  seed-style   spawn one worker, wait for its hello, sleep 500 ms, next (what the seed did)
  sequential   the same without the sleeps
  parallel     spawn all at once (SpawnLauncher, the pool's spawn strategy)
  zygote cold  start our own zygote (imports once) and fork all workers from it (ZygoteLauncher)
  daemon warm  a warm daemon already runs: connect (fingerprint, handshake) and fork — a second pytest run
Engines: ``dspy`` (workers import DSPy) and ``litellm`` (DSPy plus LiteLLM, the issue's reference figures).
Memory: RSS/PSS/USS per worker after hello and after one ``execute_program`` against the fake Gemini,
forked versus spawned, from /proc/<pid>/smaps_rollup.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_line

import dspy_bridge.pool._daemon as warm
from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.pool._forked import ProcessMemory, process_memory
from dspy_bridge.pool._pool import Pool
from dspy_bridge.pool._spawn import WORKER_ENTRY, Launcher, SpawnLauncher, WorkerProcess, worker_environment
from dspy_bridge.pool._zygote import ZygoteLauncher
from dspy_bridge.protocol._async_streams import AsyncFrameReader, AsyncFrameWriter
from dspy_bridge.protocol._codec import get_codec
from dspy_bridge.protocol._rendezvous import RUNTIME_DIR_ENV
from dspy_bridge.protocol._zygote import DEFAULT_PRELOAD
from dspy_bridge.testing import FakeGemini

CODEC = get_codec("msgpack")
KEY = "bench-" + "k" * 12
MEMORY_WORKERS = (4, 8)  # PSS divides shared pages among the sharers, so it depends on how many are alive
PRELOAD = {"dspy": DEFAULT_PRELOAD, "litellm": (*DEFAULT_PRELOAD, "litellm")}


def config_for(engine: str) -> PoolConfig:
    """Spawned workers of the ``litellm`` engine import LiteLLM before serving, as the zygote preloads it."""
    settings: dict[str, Any] = {"mode": "real", "size": 1}
    if engine == "litellm":
        settings["worker_command"] = [sys.executable, "-S", "-c", f"import litellm\n{WORKER_ENTRY}"]
    return PoolConfig.model_validate(settings)


class Worker:
    def __init__(self, process: WorkerProcess) -> None:
        self.process = process
        self.reader = AsyncFrameReader(process.stdout, CODEC)
        self.writer = AsyncFrameWriter(process.stdin, CODEC)

    async def hello(self) -> None:
        frame = await asyncio.wait_for(self.reader.read(), 120)
        assert frame is not None and frame["type"] == "hello", frame

    async def call(self, request_id: int, command: str, args: dict[str, Any]) -> Any:
        await self.writer.write({"type": "request", "id": request_id, "command": command, "args": args})
        frame = await asyncio.wait_for(self.reader.read(), 120)
        assert frame is not None and frame.get("ok"), frame
        return frame["result"]

    async def close(self) -> None:
        self.process.stdin.close()
        await asyncio.wait_for(self.process.wait(), 60)


async def launch(launcher: Launcher, config: PoolConfig, index: int) -> Worker:
    worker = Worker(await launcher.launch(f"b{index}", "real", "msgpack", worker_environment(config)))
    await worker.hello()
    return worker


async def close_all(workers: list[Worker], launcher: Launcher) -> None:
    await asyncio.gather(*(w.close() for w in workers))
    await launcher.aclose()


# -- strategies: each returns seconds to N hellos ----------------------------------------------------------


async def seed_style(n: int, engine: str) -> float:
    return await _sequential(n, engine, sleep=0.5)


async def sequential(n: int, engine: str) -> float:
    return await _sequential(n, engine, sleep=0.0)


async def _sequential(n: int, engine: str, sleep: float) -> float:
    config = config_for(engine)
    launcher = SpawnLauncher(config)
    started = time.perf_counter()
    workers = []
    for i in range(n):
        workers.append(await launch(launcher, config, i))
        if sleep:
            await asyncio.sleep(sleep)
    elapsed = time.perf_counter() - started
    await close_all(workers, launcher)
    return elapsed


async def parallel(n: int, engine: str) -> float:
    config = config_for(engine)
    launcher = SpawnLauncher(config)
    started = time.perf_counter()
    workers = await asyncio.gather(*(launch(launcher, config, i) for i in range(n)))
    elapsed = time.perf_counter() - started
    await close_all(list(workers), launcher)
    return elapsed


async def zygote_cold(n: int, engine: str) -> float:
    config = config_for(engine).model_copy(update={"worker_command": None})
    launcher = ZygoteLauncher(config, preload=PRELOAD[engine], daemon="never")
    started = time.perf_counter()
    workers = await asyncio.gather(*(launch(launcher, config, i) for i in range(n)))
    elapsed = time.perf_counter() - started
    assert launcher.source == "own", launcher.stats()
    await close_all(list(workers), launcher)
    return elapsed


async def daemon_warm(n: int, engine: str) -> float:
    """Connect to the running daemon as a fresh run would (fingerprint recomputed) and fork N workers."""
    config = config_for(engine).model_copy(update={"worker_command": None})
    warm.environment_fingerprint.cache_clear()
    started = time.perf_counter()
    launcher, reason = await warm.connect_daemon(config)
    assert launcher is not None, reason
    workers = await asyncio.gather(*(launch(launcher, config, i) for i in range(n)))
    elapsed = time.perf_counter() - started
    await close_all(list(workers), launcher)
    return elapsed


async def daemon_pool(n: int, engine: str) -> float:
    """The same through the whole pool (``Pool.start()`` with the default launcher finding the daemon)."""
    config = PoolConfig.model_validate({"mode": "real", "size": n, "start_strategy": "zygote"})
    warm.environment_fingerprint.cache_clear()
    started = time.perf_counter()
    pool = Pool(config, launcher=ZygoteLauncher(config, preload=PRELOAD[engine], daemon="require"))
    await pool.start()
    elapsed = time.perf_counter() - started
    assert pool.stats().workers_by_state["ready"] == n
    await pool.aclose()
    return elapsed


async def add_one(engine: str, runs: int) -> tuple[list[float], float]:
    """Fork-to-hello for one more worker on a warm zygote (ms), and for 8 more at once (ms)."""
    config = config_for(engine).model_copy(update={"worker_command": None})
    launcher = ZygoteLauncher(config, preload=PRELOAD[engine], daemon="never")
    workers = [await launch(launcher, config, 0)]
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        workers.append(await launch(launcher, config, 100 + i))
        samples.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    workers += await asyncio.gather(*(launch(launcher, config, 200 + i) for i in range(8)))
    eight = (time.perf_counter() - started) * 1000
    await close_all(workers, launcher)
    return samples, eight


# -- memory -------------------------------------------------------------------------------------------


async def memory(engine: str, n: int, fake: FakeGemini) -> dict[str, tuple[ProcessMemory, ProcessMemory]]:
    """Mean memory per worker (after hello, after one LM call), n forked vs n spawned, all alive at once."""
    results = {}
    for name in ("forked", "spawned"):
        config = config_for(engine)
        launcher: Launcher
        if name == "forked":
            config = config.model_copy(update={"worker_command": None})
            launcher = ZygoteLauncher(config, preload=PRELOAD[engine], daemon="never")
        else:
            launcher = SpawnLauncher(config)
        workers = list(await asyncio.gather(*(launch(launcher, config, i) for i in range(n))))
        after_hello = _mean([process_memory(w.process.pid) for w in workers])
        for w in workers:
            lm = {"model": "gemini/gemini-2.5-flash", "api_key": KEY, "api_base": fake.base_url, "cache": False}
            await w.call(1, "configure_lm", lm)
            program = await w.call(2, "create_program", {"signature": "question -> answer"})
            await w.call(3, "execute_program", {"program_id": program["program_id"], "inputs": {"question": "2+2?"}})
        after_call = _mean([process_memory(w.process.pid) for w in workers])
        results[name] = (after_hello, after_call)
        await close_all(workers, launcher)
    return results


def _mean(samples: list[ProcessMemory]) -> ProcessMemory:
    return ProcessMemory(
        0,
        statistics.mean(s.rss for s in samples),
        statistics.mean(s.pss for s in samples),
        statistics.mean(s.uss for s in samples),
    )


# -- driver -------------------------------------------------------------------------------------------


async def timed(label: str, run: Callable[[int, str], Awaitable[float]], n: int, engine: str, runs: int) -> float:
    samples = [await run(n, engine) for _ in range(runs)]
    value = statistics.median(samples)
    print(f"  {engine:8} {label:12} n={n}: {value:6.3f} s", flush=True)
    return value


async def bench_engine(engine: str, sizes: list[int], runs: int, add_runs: int) -> dict[str, Any]:
    table: dict[str, dict[int, float]] = {}
    for label, run in (
        ("seed-style", seed_style),
        ("sequential", sequential),
        ("parallel", parallel),
        ("zygote cold", zygote_cold),
    ):
        table[label] = {n: await timed(label, run, n, engine, runs) for n in sizes}
    runtime = Path(tempfile.mkdtemp(prefix="dbb-"))
    os.environ[RUNTIME_DIR_ENV] = str(runtime / "rt")
    try:
        info = warm.daemon_start(preload=list(PRELOAD[engine]), idle_timeout=600)
        assert info.running, str(info)
        table["daemon warm"] = {n: await timed("daemon warm", daemon_warm, n, engine, runs) for n in sizes}
        table["daemon pool"] = {n: await timed("daemon pool", daemon_pool, n, engine, runs) for n in sizes}
    finally:
        warm.daemon_stop()
        del os.environ[RUNTIME_DIR_ENV]
        shutil.rmtree(runtime, ignore_errors=True)
    samples, eight = await add_one(engine, add_runs)
    print(f"  {engine:8} +1 worker: median {statistics.median(samples):.1f} ms; +8 at once: {eight:.1f} ms")
    mem = {}
    with FakeGemini(expected_key=KEY) as fake:
        for n in MEMORY_WORKERS:
            mem[n] = await memory(engine, n, fake)
            for name, (hello, call) in mem[n].items():
                print(f"  {engine:8} {n} {name}: PSS after hello {hello.pss:.1f} MiB, after a call {call.pss:.1f} MiB")
    return {"table": table, "add_one": samples, "add_eight": eight, "memory": mem}


def markdown(results: dict[str, dict[str, Any]], sizes: list[int], runs: int) -> str:
    lines = [
        "## Start-up: spawn versus zygote versus warm daemon (issue 7)",
        "",
        machine_line() + f"; median of {runs} run(s) per cell. `python benchmarks/bench_startup.py`.",
        "",
    ]
    for engine, result in results.items():
        table = result["table"]
        title = "DSPy only" if engine == "dspy" else "DSPy + LiteLLM preloaded (the issue's reference figures)"
        lines += [f"### Ready time, {title}", "", "| strategy | " + " | ".join(f"{n} workers" for n in sizes) + " |"]
        lines.append("|---|" + "---:|" * len(sizes))
        for label, row in table.items():
            lines.append(f"| {label} | " + " | ".join(f"{row[n]:.3f} s" for n in sizes) + " |")
        one_cold = table["sequential"][1]
        add = statistics.median(result["add_one"])
        lines += [
            "",
            f"Adding a worker to a warm zygote (fork to hello): median {add:.1f} ms over {len(result['add_one'])}"
            f" (min {min(result['add_one']):.1f}, max {max(result['add_one']):.1f}); 8 more at once:"
            f" {result['add_eight']:.1f} ms.",
            "",
            "| memory per worker (MiB) | RSS | PSS | USS |",
            "|---|---:|---:|---:|",
        ]
        for n, measured in result["memory"].items():
            for name, (hello, call) in measured.items():
                lines.append(
                    f"| {name}, {n} alive, after hello | {hello.rss:.1f} | {hello.pss:.1f} | {hello.uss:.1f} |"
                )
                lines.append(
                    f"| {name}, {n} alive, after one LM call | {call.rss:.1f} | {call.pss:.1f} | {call.uss:.1f} |"
                )
        largest = max(sizes)
        pss = {n: (m["forked"][1].pss, m["spawned"][1].pss) for n, m in result["memory"].items()}
        daemon_n = max(s for s in sizes if s <= 2)
        daemon = table["daemon pool"][daemon_n]
        checks = [
            (
                f"{largest} workers ready (zygote cold) ≤ 1.2 × one cold start",
                f"{table['zygote cold'][largest]:.2f} s vs 1.2 × {one_cold:.2f} = {1.2 * one_cold:.2f} s "
                f"({table['zygote cold'][largest] / one_cold:.2f}×)",
                table["zygote cold"][largest] <= 1.2 * one_cold,
            ),
            ("+1 worker ≤ 25 ms", f"{add:.1f} ms", add <= 25),
            *(
                (
                    f"forked PSS ≤ 1/3 of spawned ({n} alive, after one LM call)",
                    f"{forked:.1f} vs {spawned:.1f} MiB ({forked / spawned:.2f})",
                    forked <= spawned / 3,
                )
                for n, (forked, spawned) in pss.items()
            ),
            (
                f"second run's real pool ready ≤ 200 ms (daemon, {daemon_n} workers via Pool)",
                f"{daemon * 1000:.0f} ms",
                daemon <= 0.2,
            ),
        ]
        lines += ["", "| goal | measured | met |", "|---|---|---|"]
        lines += [f"| {goal} | {value} | {'yes' if ok else '**no**'} |" for goal, value, ok in checks]
        lines.append("")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    print(machine_line())
    results = {}
    for engine in args.engines.split(","):
        results[engine] = await bench_engine(engine, sizes, args.runs, args.add_runs)
    text = markdown(results, sizes, args.runs)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,2,4,8")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--add-runs", type=int, default=15)
    parser.add_argument("--engines", default="dspy,litellm")
    parser.add_argument("--out")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
