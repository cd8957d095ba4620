"""A crash budget in time, on the request path: closed → open → half-open → closed.

    CLOSED ──(threshold consecutive crashes/start failures within window s)──▶ OPEN
    OPEN ──(reset s later, on the next request)──▶ HALF_OPEN: exactly one probe request goes through
    HALF_OPEN ──probe answered──▶ CLOSED        HALF_OPEN ──probe failed──▶ OPEN (timer restarts)

While OPEN every request fails fast with ``CircuitOpen`` chained to the last failure, and the
pool stops replacing workers (as xdist stops after ``--max-worker-restart``). Any answered request
resets the consecutive count. The clock is injectable so tests need not wait for real time.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable

from dspy_bridge._exceptions import CircuitOpen

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # requests flow; failures are being counted
    OPEN = "open"  # requests fail fast; no worker is (re)started
    HALF_OPEN = "half_open"  # one probe request is let through to decide


class CircuitBreaker:
    """Counts worker failures; ``admit()`` is called for every request before it is dispatched."""

    def __init__(
        self,
        threshold: int,
        window: float,
        reset: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState, str], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.reset = reset
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._probe_out = False
        self.last_failure: BaseException | None = None
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        """The state as the next request would see it (OPEN turns HALF_OPEN once ``reset`` has passed)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset:
            return BreakerState.HALF_OPEN
        return self._state

    def _move(self, new: BreakerState, reason: str) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_change is not None:
            self._on_change(old, new, reason)

    def admit(self) -> bool:
        """Let a request through (True if it is the half-open probe) or raise ``CircuitOpen``."""
        if self._state is BreakerState.CLOSED:
            return False
        if self._state is BreakerState.OPEN:
            remaining = self.reset - (self._clock() - self._opened_at)
            if remaining > 0:
                raise self.open_error(f"retrying in {remaining:.1f} s")
            self._move(BreakerState.HALF_OPEN, f"{self.reset} s passed since it opened; letting one probe through")
        if self._probe_out:
            raise self.open_error("a probe request is deciding whether to close it")
        self._probe_out = True
        return True

    def allows_restart(self) -> bool:
        """Whether the pool may replace workers in the background (not while open or probing)."""
        return self._state is BreakerState.CLOSED

    def record_failure(self, error: BaseException) -> None:
        """A worker crashed or failed to start (planned stops and timeouts are not counted)."""
        now = self._clock()
        self.last_failure = error
        if self._state is BreakerState.HALF_OPEN:
            self._probe_out = False
            self._open(now, f"the probe failed: {error}")
            return
        if self._state is BreakerState.OPEN:
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window:
            self._failures.popleft()
        if len(self._failures) >= self.threshold:
            self._open(now, f"{len(self._failures)} worker failures within {self.window} s; last: {error}")

    def record_success(self, probe: bool) -> None:
        """A worker answered a request: the failure streak is over; a successful probe closes the breaker."""
        self._failures.clear()
        if probe and self._state is BreakerState.HALF_OPEN:
            self._probe_out = False
            self._move(BreakerState.CLOSED, "the probe request was answered")

    def release_probe(self, error: BaseException | None = None) -> None:
        """The probe ended without a verdict on the workers (cancelled); the next request probes."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_out = False
            if error is not None:
                self.record_failure(error)

    def _open(self, now: float, reason: str) -> None:
        self._opened_at = now
        self._failures.clear()
        self.times_opened += 1
        self._move(BreakerState.OPEN, reason)

    def open_error(self, when: str) -> CircuitOpen:
        """``CircuitOpen`` naming the last failure, chained to it (``__cause__``)."""
        last = self.last_failure
        cause = f"{type(last).__name__}: {_first_line(last)}" if last is not None else "unknown"
        error = CircuitOpen(
            f"circuit breaker is {self.state.value} after repeated worker failures (last: {cause}); {when}",
            breaker_state=self.state.value,
        )
        error.__cause__ = last
        return error

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state.value} failures={len(self._failures)}/{self.threshold}>"


def _first_line(error: BaseException | None) -> str:
    text = str(error) if error is not None else ""
    return text.splitlines()[0] if text else ""
