"""Progress lines in the pytest terminal: pools starting, tests waiting for them, recordings waiting upstream.

    dspy-bridge: warming 4 real DSPy workers in the background (strategy zygote) while other tests run
    dspy-bridge: 2 mock workers ready in 0.08 s
    dspy-bridge: 4 real DSPy workers ready in 1.9 s (warmed in the background; tests waited 0.6 s)
    dspy-bridge: recording tests/test_qa.py::test_capital: waiting on upstream (1 call in flight, 5 s)

Written through pytest's terminal reporter, with output capture suspended (a line written during a test's
set-up would otherwise land in that test's captured output). ``-q`` silences them all. On a terminal, a
test blocked on a pool shows one line redrawn in place (the reporter's ``rewrite``); anywhere else, plain
lines only, never a redraw.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dspy_bridge._exceptions import BridgeError

if TYPE_CHECKING:
    import pytest

__all__ = ["PREFIX", "PluginProgress", "UpstreamWatch"]

PREFIX = "dspy-bridge: "
REDRAW_EVERY = 0.2  # seconds between redraws of a live line on a terminal


class PluginProgress:
    """Where the plugin's progress lines go; silent under ``-q`` or without a terminal reporter."""

    def __init__(self, config: pytest.Config, reporter: Any = None) -> None:
        self.config = config
        self.enabled = config.get_verbosity() >= 0
        self._given_reporter = reporter  # default: the run's terminal reporter, looked up when writing
        self._lock = threading.Lock()  # the upstream watch writes from its own thread

    @property
    def _reporter(self) -> Any:
        if not self.enabled:
            return None
        return self._given_reporter or self.config.pluginmanager.get_plugin("terminalreporter")

    @contextlib.contextmanager
    def _uncaptured(self) -> Iterator[Any]:
        reporter = self._reporter
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with self._lock, capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            yield reporter

    @property
    def live(self) -> bool:
        """A terminal: a wait may redraw one line in place."""
        reporter = self._reporter
        return reporter is not None and bool(getattr(reporter, "isatty", False))

    def line(self, text: str) -> None:
        """One ``dspy-bridge: …`` line (nothing under ``-q``)."""
        if self._reporter is None:
            return
        with self._uncaptured() as reporter:
            reporter.write_line(PREFIX + text)

    def waiting(self, text: str) -> Callable[[float], None] | None:
        """On a terminal, a callback redrawing ``text (N.N s)`` in place with the seconds waited; else None."""
        if not self.live:
            return None
        with self._uncaptured() as reporter:
            reporter.ensure_newline()

        def redraw(waited: float) -> None:
            with self._uncaptured() as reporter:
                reporter.rewrite(f"{PREFIX}{text} ({waited:.1f} s)", erase=True)

        return redraw

    def end_wait(self, text: str) -> None:
        """Replace a redrawn wait line with its outcome (or just write the line)."""
        if not self.live:
            self.line(text)
            return
        with self._uncaptured() as reporter:
            reporter.rewrite(PREFIX + text, erase=True)
            reporter.write("\n")


class UpstreamWatch:
    """While a recording test runs: after ``first_after`` s, and every ``every`` s after that, one line saying
    how many of its LM calls the cassette proxy is still waiting on (nothing while none is in flight)."""

    def __init__(
        self, progress: PluginProgress, proxy: Any, label: str, *, first_after: float = 3.0, every: float = 5.0
    ) -> None:
        self.progress = progress
        self.proxy = proxy
        self.label = label
        self.first_after = first_after
        self.every = every
        self.lines = 0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> UpstreamWatch:
        if self.progress.enabled:
            self._thread = threading.Thread(target=self._watch, name="bridge-upstream-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        began = time.perf_counter()
        wait = self.first_after
        while not self._done.wait(wait):  # woken at once when the test ends
            wait = self.every
            try:
                in_flight = self.proxy.stats().in_flight
            except (BridgeError, RuntimeError):  # the proxy is going away with the run: no more progress
                return
            if in_flight and not self._done.is_set():
                calls = "call" if in_flight == 1 else "calls"
                waited = time.perf_counter() - began
                self.progress.line(
                    f"recording {self.label}: waiting on upstream ({in_flight} {calls} in flight, {waited:.0f} s)"
                )
                self.lines += 1
