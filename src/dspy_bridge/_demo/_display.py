"""What the demo shows: rich's live progress on a terminal, plain lines otherwise, and one final table.

Not a terminal (a pipe, CI, a test): no redraw and no colour codes, one line per step, so a log reads
top to bottom. The table is drawn by rich either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Self

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from dspy_bridge._demo.suite import DemoTest

if TYPE_CHECKING:
    from dspy_bridge._demo._ways import WayResult

__all__ = ["DemoDisplay", "results_table"]

PLAIN_WIDTH = 120  # rich's default for a pipe is 80 columns, too narrow for the table


class DemoDisplay:
    """Progress for each phase of the demo; ``with DemoDisplay() as display:`` around the whole run."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self.live = self.console.is_terminal
        if not self.live and console is None:
            self.console.width = PLAIN_WIDTH
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the live display (before the table, so the table is not redrawn with it). Idempotent."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    @property
    def progress(self) -> Progress | None:
        """rich's live progress while it runs (on a terminal); None off a terminal or once stopped."""
        return self._progress

    def line(self, text: str) -> None:
        """A line above the live display (or just a line)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def phase(self, label: str, total: int) -> Iterator[_Phase]:
        """One step of the demo with ``total`` tests: a progress bar, or a start line and one line per test."""
        phase = _Phase(self, label, total)
        if not self.live:
            self.line(f"{label}: {total} test(s)…" if total else f"{label}…")
        try:
            yield phase
        finally:
            phase.finish()

    def show(self, table: Table) -> None:
        self.stop()
        self.console.print()
        self.console.print(table)


class _Phase:
    def __init__(self, display: DemoDisplay, label: str, total: int) -> None:
        self.display = display
        self.label = label
        self.began = time.perf_counter()
        self.progress = display.progress
        self.task: TaskID | None = None
        self.counted = total > 0
        if self.progress is not None:
            self.task = self.progress.add_task(label, total=total or None)  # None: no count, a pulsing bar

    def status(self, text: str) -> None:
        """What is happening now (live only: plain output says it per test)."""
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=f"{self.label} · {text}")

    def test_done(self, test: DemoTest, seconds: float) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1, description=f"{self.label} · {test.name} {seconds:.2f} s")
        else:
            self.display.line(f"  {self.label}: {test.name} done in {seconds:.2f} s")

    def finish(self) -> None:
        done = f"{self.label}: done in {time.perf_counter() - self.began:.1f} s"
        if self.progress is not None and self.task is not None:
            if not self.counted:
                self.progress.update(self.task, total=1, completed=1)
            self.progress.update(self.task, description=done)
        else:
            self.display.line(done)


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def results_table(ways: list[WayResult], reference: dict[str, dict[str, object]]) -> Table:
    """way · tests · total · per test · starting workers (share) · cassette hits · answers equal?"""
    table = Table(
        title="One suite, three ways (mock and integration are dspy-bridge's)",
        title_justify="left",
        caption="startup: time spent starting workers (its share of the total)",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("way", no_wrap=True)
    for name in ("tests", "total", "per test", "startup"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("cassette hits", justify="right")
    table.add_column("answers equal?")
    for way in ways:
        tests = f"{way.tests_run}" if way.tests_run == way.tests_total else f"{way.tests_run} of {way.tests_total}"
        share = way.startup_s / way.total_s if way.total_s else 0.0
        per_test = way.total_s / way.tests_run if way.tests_run else 0.0
        hits = "—" if way.hits is None else f"{way.hits} {way.hit_kind}"
        differing = way.differing(reference)
        equal = "[green]yes[/green]" if not differing else f"[bold red]NO: {len(differing)} differ[/bold red]"
        table.add_row(
            way.label,
            tests,
            _seconds(way.total_s),
            _seconds(per_test),
            f"{_seconds(way.startup_s)} ({share:.0%})",
            hits,
            equal,
        )
    return table
