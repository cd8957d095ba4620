"""The demo's recording step and its three ways of running the suite, each timed the same way.

Every way returns a ``WayResult``: the outputs of each test it ran (a failed test's answer is its error,
so it differs from the recording), the wall time, the part of it spent starting workers, and how many
answers came from cassettes. A test body is always ``suite.run_test``; only the pool and the LM route differ.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dspy_bridge._client import Bridge
from dspy_bridge._demo.suite import DemoTest, run_test
from dspy_bridge._exceptions import BridgeError
from dspy_bridge.pool import PoolConfig, SyncPool

if TYPE_CHECKING:
    from dspy_bridge.proxy import ProxyProcess
    from dspy_bridge.testing.fake_gemini import FakeGemini

__all__ = [
    "SEED_PAUSE",
    "Phase",
    "WayResult",
    "bridge_cassette",
    "http_cassette",
    "integration_way",
    "mock_way",
    "record",
    "seed_way",
]

SEED_PAUSE = 0.5  # the seed slept this long between one worker's start and the next


class Phase(Protocol):
    """Where a way reports progress (the display's live task, or plain lines)."""

    def status(self, text: str) -> None: ...

    def test_done(self, test: DemoTest, seconds: float) -> None: ...


@dataclass
class WayResult:
    """One way's run of the suite."""

    key: str  # "seed" | "mock" | "integration" | "recording"
    label: str
    tests_total: int  # the suite's size; the seed's way may run fewer (--quick)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    total_s: float = 0.0
    startup_s: float = 0.0
    hits: int | None = None  # answers served from cassettes; None: this way has none
    hit_kind: str = ""

    @property
    def tests_run(self) -> int:
        return len(self.answers)

    def differing(self, reference: dict[str, dict[str, Any]]) -> list[str]:
        """Names of the tests whose outputs are not exactly the recording's."""
        return [name for name, answer in self.answers.items() if answer != reference.get(name)]


def bridge_cassette(workdir: Path, test: DemoTest) -> Path:
    return workdir / "cassettes" / f"{test.name}.bridge.yaml"


def http_cassette(workdir: Path, test: DemoTest) -> Path:
    return workdir / "cassettes" / "http" / f"{test.name}.http.yaml"


def _answer(bridge: Bridge, test: DemoTest) -> dict[str, Any]:
    """The test's outputs; a bridge error (a cassette miss, a crash) is kept as the answer, so it differs."""
    try:
        return run_test(bridge, test)
    except BridgeError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        bridge.close()


@contextmanager
def _timed(phase: Phase, test: DemoTest) -> Iterator[None]:
    began = time.perf_counter()
    yield
    phase.test_done(test, time.perf_counter() - began)


def record(
    pool: SyncPool, proxy: ProxyProcess, fake: FakeGemini, tests: tuple[DemoTest, ...], workdir: Path, phase: Phase
) -> WayResult:
    """Run each test once on real workers, through the proxy to the fake Gemini, writing both cassettes."""
    from dspy_bridge.cassettes import Recorder

    result = WayResult("recording", "recording", len(tests))
    began = time.perf_counter()
    for test in tests:
        with _timed(phase, test):
            fake.script({"answer": test.expected})
            proxy.use_cassette(http_cassette(workdir, test), record_mode="all", record_empty=True)
            recorder = Recorder(bridge_cassette(workdir, test), "all", meta={"recorded_against": "fake-gemini"})
            lm = {**proxy.lm_kwargs(), "cache": False, "num_retries": 0}
            answer = _answer(Bridge(pool, context={"test_id": test.name}, recorder=recorder, lm_defaults=lm), test)
            report = proxy.eject()
            if "error" in answer or not report.saved:
                raise BridgeError(f"recording {test.name} failed: {answer.get('error') or report}")
            recorder.save()
            result.answers[test.name] = answer
    result.total_s = time.perf_counter() - began
    return result


def seed_way(tests: tuple[DemoTest, ...], suite_size: int, workers: int, fake: FakeGemini, phase: Phase) -> WayResult:
    """The failure this project answers: per test, a fresh pool of real DSPy workers started one at a time
    with a pause between them, the test run on one of them against the LM, then all of them stopped."""
    result = WayResult("seed", "seed's way", suite_size, hit_kind="none")
    lm = {"api_base": fake.base_url, "api_key": "demo-placeholder-key", "cache": False, "num_retries": 0}
    began = time.perf_counter()
    for n, test in enumerate(tests, 1):
        with _timed(phase, test):
            pools: list[SyncPool] = []
            try:
                starting = time.perf_counter()
                for i in range(workers):
                    phase.status(f"test {n}/{len(tests)}: starting worker {i + 1}/{workers}")
                    pool = SyncPool(PoolConfig(mode="real", size=1, start_strategy="spawn"))
                    pools.append(pool)  # listed before start(), so a failed start is still closed
                    pool.start()
                    if i < workers - 1:
                        time.sleep(SEED_PAUSE)  # what the seed did; reproduced here on purpose, never by the pool
                result.startup_s += time.perf_counter() - starting
                phase.status(f"test {n}/{len(tests)}: running")
                fake.script({"answer": test.expected})
                result.answers[test.name] = _answer(Bridge(pools[0], lm_defaults=lm), test)
            finally:
                for pool in pools:
                    pool.close()
    result.total_s = time.perf_counter() - began
    return result


def mock_way(tests: tuple[DemoTest, ...], workers: int, workdir: Path, phase: Phase) -> WayResult:
    """One shared pool of mock workers; each test's answers come from its bridge cassette."""
    result = WayResult("mock", "mock", len(tests), hits=0, hit_kind="bridge")
    began = time.perf_counter()
    phase.status(f"starting {workers} mock worker(s)")
    with SyncPool(PoolConfig(mode="mock", size=workers, retries=0)) as pool:
        result.startup_s = time.perf_counter() - began
        for test in tests:
            with _timed(phase, test):
                context = {"test_id": test.name, "cassette": {"path": str(bridge_cassette(workdir, test))}}
                bridge = Bridge(pool, context=context)
                result.answers[test.name] = _answer(bridge, test)
                result.hits = (result.hits or 0) + bridge.outcomes["cassette"]
    result.total_s = time.perf_counter() - began
    return result


def integration_way(
    pool: SyncPool,
    startup_s: float,
    proxy: ProxyProcess,
    tests: tuple[DemoTest, ...],
    workdir: Path,
    phase: Phase,
) -> WayResult:
    """The shared pool of zygote-forked real workers (its start counted once, as ``startup_s``); each
    test's LM calls are answered by the proxy from its HTTP cassette (replay only: a miss is an error)."""
    result = WayResult("integration", "integration", len(tests), startup_s=startup_s, hits=0, hit_kind="HTTP")
    began = time.perf_counter()
    lm = {**proxy.lm_kwargs(), "cache": False, "num_retries": 0}
    for test in tests:
        with _timed(phase, test):
            proxy.use_cassette(http_cassette(workdir, test), record_mode="none")
            result.answers[test.name] = _answer(Bridge(pool, context={"test_id": test.name}, lm_defaults=lm), test)
            report = proxy.eject(save=False)
            result.hits = (result.hits or 0) + report.replayed
    result.total_s = startup_s + time.perf_counter() - began
    return result
