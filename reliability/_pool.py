"""Pool probes: chaos (random SIGKILL/SIGSTOP under load), the start/close race in both APIs, host death."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

from dspy_bridge._exceptions import BridgeError
from dspy_bridge.pool import Pool, PoolConfig, SyncPool
from reliability._common import ProbeResult, descendants, environ_holds_key, wait_gone

CHAOS_ERRORS = ("WorkerCrashed", "RequestTimeout", "CircuitOpen")


async def _chaos(requests: int, workers: int, seed: int, env_leaks: list[int]) -> tuple[int, int, list[str]]:
    rng = random.Random(seed)
    config = PoolConfig(
        size=workers,
        mode="mock",
        start_strategy="spawn",
        request_timeout=2.0,
        retries=0,
        breaker_threshold=10_000,
    )
    failed, notes, done = 0, [], 0
    signals = {"SIGKILL": 0, "SIGSTOP": 0}
    stop = asyncio.Event()
    async with Pool(config) as pool:

        async def attacker() -> None:
            while not stop.is_set():
                await asyncio.sleep(rng.uniform(0.005, 0.05))
                handles = [w for w in pool.workers() if w.alive]
                if not handles:
                    continue
                victim = rng.choice(handles)
                leaked = environ_holds_key(victim.pid)
                if leaked:
                    env_leaks.append(victim.pid)
                with_signal = signal.SIGKILL if rng.random() < 0.7 else signal.SIGSTOP
                try:
                    os.kill(victim.pid, with_signal)
                    signals[with_signal.name] += 1
                except ProcessLookupError:
                    pass

        async def client(index: int) -> None:
            nonlocal failed, done
            session = f"s{index % 16}" if index % 3 == 0 else None
            try:
                async with asyncio.timeout(30):
                    result = await pool.request("ping", session_id=session)
                if result.get("status") != "ok":
                    failed += 1
            except BridgeError as exc:
                if type(exc).__name__ not in CHAOS_ERRORS:
                    failed += 1
                    notes.append(f"{type(exc).__name__}: {exc}"[:200])
            except TimeoutError:
                failed += 1
                notes.append("a request hung for 30 s")
            done += 1

        chaos = asyncio.create_task(attacker())
        batch = 64
        for start in range(0, requests, batch):
            await asyncio.gather(*(client(i) for i in range(start, min(start + batch, requests))))
        stop.set()
        await chaos
        pids = [w.pid for w in pool.workers()]
    left = wait_gone(pids, 10)
    if left:
        failed += len(left)
        notes.append(f"{len(left)} worker(s) outlived the pool")
    notes.insert(0, f"signals sent: {signals['SIGKILL']} SIGKILL, {signals['SIGSTOP']} SIGSTOP")
    return done, failed, notes


def chaos(requests: int, workers: int = 8, seed: int = 3) -> ProbeResult:
    env_leaks: list[int] = []
    done, failed, notes = asyncio.run(_chaos(requests, workers, seed, env_leaks))
    if env_leaks:
        failed += len(env_leaks)
        notes.append(f"{len(env_leaks)} worker environment(s) held the planted key")
    return ProbeResult(
        "chaos",
        f"{requests} requests across {workers} mock workers while a task SIGKILLs (70%) or SIGSTOPs (30%) a random "
        f"worker every 5-50 ms ({notes[0]}); each request must succeed or fail with WorkerCrashed/RequestTimeout within 30 s, "
        "no worker may outlive the pool, no worker environment may hold the host's key",
        done,
        failed,
        notes[1:4],
    )


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def close_race(cycles: int, seed: int = 5) -> ProbeResult:
    """SyncPool.close() from another thread during start(); Pool.aclose() racing start(); both with requests."""
    rng = random.Random(seed)
    failed, notes = 0, []
    fds_before, threads_before = _fds(), threading.active_count()
    for cycle in range(cycles):
        pool = SyncPool(PoolConfig(size=2, mode="mock", start_strategy="spawn"))
        finished = threading.Event()

        def starter(pool: SyncPool = pool, finished: threading.Event = finished) -> None:
            try:
                pool.start()
                while True:
                    pool.ping()
            except Exception:  # PoolClosed / UsageError once closed: both return
                pass
            finished.set()

        thread = threading.Thread(target=starter, daemon=True)
        thread.start()
        time.sleep(rng.choice([0.0, rng.uniform(0, 0.01), rng.uniform(0.01, 0.3)]))
        pool.close(timeout=15)
        if not finished.wait(10):
            failed += 1
            notes.append(f"cycle {cycle}: a SyncPool caller stayed blocked after close()")

    async def async_cycle(delay: float) -> bool:
        pool = Pool(PoolConfig(size=2, mode="mock", start_strategy="spawn"))
        starting = asyncio.create_task(pool.start())
        await asyncio.sleep(delay)
        await pool.aclose()
        try:
            async with asyncio.timeout(10):
                await starting
        except TimeoutError:
            return False
        except BaseException:
            pass
        return True

    for cycle in range(cycles):
        if not asyncio.run(async_cycle(rng.choice([0.0, rng.uniform(0, 0.05)]))):
            failed += 1
            notes.append(f"async cycle {cycle}: start() never returned after aclose()")
    signal_run = subprocess.run(
        [sys.executable, "-c", _SIGNAL_SCRIPT, str(seed), str(max(cycles // 2, 1))],
        capture_output=True,
        text=True,
        timeout=60 + cycles * 5,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    if signal_run.returncode != 0 or signal_run.stdout.split() != ["threads", "0", "fds", "0"]:
        failed += 1
        notes.append(f"close() from a signal handler: {signal_run.stdout.strip()} {signal_run.stderr[-300:]}")
    leaked_fds = _fds() - fds_before
    leaked_threads = threading.active_count() - threads_before
    if leaked_fds > 2 or leaked_threads > 0:
        failed += 1
        notes.append(f"leaked {leaked_fds} fds and {leaked_threads} threads")
    return ProbeResult(
        "start/close race",
        "SyncPool.close() from another thread at a random moment of start() or of a stream of requests; "
        "Pool.aclose() racing Pool.start(); SyncPool.close() from a SIGALRM handler during start() (half as "
        "many cycles, in a child process); every caller must return, no fd or thread may leak",
        cycles * 2 + max(cycles // 2, 1),
        failed,
        notes[:3],
    )


_SIGNAL_SCRIPT = textwrap.dedent(
    """
    import os, random, signal, sys, threading
    from dspy_bridge import PoolClosed
    from dspy_bridge.pool import PoolConfig, SyncPool
    rng = random.Random(int(sys.argv[1]))
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(int(sys.argv[2])):
        pool = SyncPool(PoolConfig(size=1, start_strategy="spawn", mode="mock"))
        signal.signal(signal.SIGALRM, lambda *_: pool.close(timeout=10))
        signal.setitimer(signal.ITIMER_REAL, rng.choice([rng.uniform(0.0001, 0.004), rng.uniform(0.004, 0.08)]))
        try:
            pool.start()
        except PoolClosed:
            pass
        signal.setitimer(signal.ITIMER_REAL, 0)
        pool.close(timeout=10)
    threads = [t for t in threading.enumerate() if t.name == "dspy-bridge-pool"]
    print("threads", len(threads), "fds", len(os.listdir("/proc/self/fd")) - fds)
    """
)

_HOST_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from dspy_bridge.pool import PoolConfig, SyncPool
    strategy, when = sys.argv[1], sys.argv[2]
    pool = SyncPool(PoolConfig(size=2, mode="mock", start_strategy=strategy))
    if when == "mid-start":
        import threading
        threading.Thread(target=pool.start, daemon=True).start()
        time.sleep(0.05)
    else:
        pool.start()
        pool.ping()
    print("ready", flush=True)
    time.sleep(600)
    """
)


def host_death(rounds: int) -> ProbeResult:
    """A host process SIGKILLed with a running pool (or mid-start): every worker it had must exit."""
    failed, notes, count = 0, [], 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for _ in range(rounds):
        for strategy, when in [(s, w) for s in ("spawn", "zygote") for w in ("running", "mid-start")]:
            host = subprocess.Popen(
                [sys.executable, "-c", _HOST_SCRIPT, strategy, when],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                text=True,
            )
            assert host.stdout is not None
            host.stdout.readline()
            time.sleep(0.05 if when == "mid-start" else 0.0)
            if strategy == "zygote" and when == "mid-start":
                time.sleep(0.5)  # the zygote imports first: kill the host while it forks
            children = descendants(host.pid)
            host.kill()
            host.wait(10)
            host.stdout.close()
            count += 1
            left = wait_gone(children, 10)
            if left:
                failed += 1
                notes.append(f"{strategy}/{when}: {len(left)} process(es) outlived a SIGKILLed host")
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
    return ProbeResult(
        "host death",
        "a host process with a SyncPool of the spawn or the zygote strategy (running, or killed early in start()) "
        "is SIGKILLed; every process it started (workers, zygote) must be gone within 10 s (the warm daemon, "
        "which outlives hosts by design, is not probed)",
        count,
        failed,
        notes[:3],
    )
