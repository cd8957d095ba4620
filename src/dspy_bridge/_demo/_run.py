"""Run the demo: a work dir, the fake Gemini, the cassette proxy, one real pool; record, then the three ways.

Order, and what each row of the table counts:

    fake Gemini, proxy ─▶ real pool (zygote; its start is the integration row's "starting workers")
      ─▶ recording (once; not a row) ─▶ the seed's way ─▶ mock ─▶ integration (the same real pool)
      ─▶ compare every answer with the recording's ─▶ table ─▶ stop everything, remove the work dir

Everything started is stopped by one ``ExitStack``, on success, error or Ctrl-C alike.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspy_bridge._demo._display import DemoDisplay, results_table
from dspy_bridge._demo._ways import WayResult, integration_way, mock_way, record, seed_way
from dspy_bridge._demo.suite import SUITE

__all__ = ["SIZES", "DemoReport", "DemoSize", "run_demo", "work_dir"]

_FAKE_UPSTREAM_KEY = "fake-upstream-key"  # the bundled fake accepts any key; never a real one


@dataclass(frozen=True, slots=True)
class DemoSize:
    """How much of the suite each way runs."""

    tests: int  # recorded, and run by mock and integration
    seed_tests: int  # run the seed's way (each costs seconds of worker starts)
    seed_workers: int  # started one at a time, per test, the seed's way
    pool_workers: int  # in each shared pool


SIZES = {
    "full": DemoSize(tests=8, seed_tests=8, seed_workers=6, pool_workers=2),
    "quick": DemoSize(tests=8, seed_tests=2, seed_workers=6, pool_workers=2),
    "tiny": DemoSize(tests=2, seed_tests=1, seed_workers=2, pool_workers=1),  # the test suite's end-to-end run
}


@dataclass
class DemoReport:
    """What the demo found: the recording's answers and each way's run."""

    workdir: Path
    reference: dict[str, dict[str, Any]]
    ways: list[WayResult] = field(default_factory=list)

    @property
    def differing(self) -> dict[str, list[str]]:
        """way label → tests whose answers differ from the recording's (only ways with a difference)."""
        return {way.label: names for way in self.ways if (names := way.differing(self.reference))}

    @property
    def exit_code(self) -> int:
        return 1 if self.differing else 0


@contextlib.contextmanager
def work_dir(parent: Path | None, keep: bool) -> Iterator[Path]:
    """A fresh directory for the demo's cassettes, removed at the end unless ``keep``."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="dspy-bridge-demo-", dir=parent))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path)


def run_demo(size: DemoSize, display: DemoDisplay, *, parent: Path | None = None, keep: bool = False) -> DemoReport:
    """Record the suite, run it the three ways, show the table; the report's ``exit_code`` is the verdict."""
    from dspy_bridge.pool import PoolConfig, SyncPool
    from dspy_bridge.proxy import ProxyProcess
    from dspy_bridge.testing.fake_gemini import FakeGemini

    tests = SUITE[: size.tests]
    with work_dir(parent, keep) as workdir, contextlib.ExitStack() as stack:
        display.line(f"dspy-bridge demo: {len(tests)} question-answering tests, offline (work dir {workdir})")
        fake = stack.enter_context(FakeGemini())
        proxy = stack.enter_context(ProxyProcess(upstream=f"http://127.0.0.1:{fake.port}", api_key=_FAKE_UPSTREAM_KEY))
        began = time.perf_counter()
        with display.phase(f"starting {size.pool_workers} real worker(s) (zygote)", 0):
            real = SyncPool(
                PoolConfig(
                    mode="real",
                    size=size.pool_workers,
                    start_strategy="zygote",
                    allowed_hosts=[f"127.0.0.1:{proxy.port}"],  # the connect guard: workers reach the proxy only
                )
            )
            stack.callback(real.close)
            real.start()
        real_startup = time.perf_counter() - began

        with display.phase("recording against the fake Gemini", len(tests)) as phase:
            recording = record(real, proxy, fake, tests, workdir, phase)
        report = DemoReport(workdir, recording.answers)
        seed_tests = tests[: size.seed_tests]
        with display.phase(
            f"the seed's way ({size.seed_workers} workers per test, one at a time)", len(seed_tests)
        ) as phase:
            report.ways.append(seed_way(seed_tests, len(tests), size.seed_workers, fake, phase))
        with display.phase("mock (dspy-bridge, one shared pool, bridge cassettes)", len(tests)) as phase:
            report.ways.append(mock_way(tests, size.pool_workers, workdir, phase))
        with display.phase("integration (dspy-bridge, the real pool, HTTP replayed)", len(tests)) as phase:
            report.ways.append(integration_way(real, real_startup, proxy, tests, workdir, phase))
        stack.close()  # stop every process before the table, so nothing outlives the demo's output
        show_report(report, display, keep=keep)
    return report


def show_report(report: DemoReport, display: DemoDisplay, *, keep: bool) -> None:
    """The table, what it means in one or two lines, every difference, and where the kept cassettes are."""
    display.show(results_table(report.ways, report.reference))
    seed = next((way for way in report.ways if way.key == "seed"), None)
    others = [way for way in report.ways if way.key != "seed" and way.total_s]
    if seed is not None and seed.tests_run and others:
        per_test = seed.total_s / seed.tests_run
        whole = per_test * seed.tests_total
        ratios = ", ".join(f"{whole / way.total_s:.0f}× {way.label}'s" for way in others)
        display.line(
            f"The seed's way spent {seed.startup_s / seed.total_s:.0%} of its time starting workers. At "
            f"{per_test:.1f} s per test, all {seed.tests_total} tests would take it about {whole:.0f} s: {ratios} total."
        )
    for label, names in report.differing.items():
        for name in names:
            way = next(way for way in report.ways if way.label == label)
            display.line(f"DIFFERS: {label}, {name}: {way.answers[name]!r} — recorded: {report.reference.get(name)!r}")
    if keep:
        display.line(f"kept the work dir (cassettes): {report.workdir}")
