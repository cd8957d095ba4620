"""What the pool reports: structured events for listeners (and the pytest summary) and stats snapshots.

Plain frozen dataclasses: cheap to build on every event, safe to hand to another thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["EVENT_KINDS", "Counters", "PoolEvent", "PoolStats", "WorkerStats"]

EVENT_KINDS = (
    "pool_ready",  # start() returned; details: time_to_ready_ms, workers
    "pool_closed",  # aclose() finished; details: failed_in_flight
    "worker_spawned",  # a process exists (before its hello); details: overflow, reason
    "worker_started",  # its hello arrived and its default state is applied; details: start_ms
    "worker_start_failed",  # it never became ready; details: error
    "worker_crashed",  # it died on its own; details: exit, signal, in_flight, sessions, stderr_tail
    "worker_killed",  # the pool killed it (request timeout); details: reason
    "worker_exited",  # a planned exit (shutdown, recycle, idle overflow, goodbye)
    "worker_replaced",  # a replacement for a dead or recycled worker is ready; details: replaces
    "worker_recycled",  # it served max_requests_per_worker and is being drained
    "worker_retired",  # an idle overflow worker is being stopped
    "replacement_refused",  # a dead worker was not replaced; details: reason
    "session_repinned",  # a session moved to another worker and its state was replayed
    "request_retried",  # a retryable error; details: attempt, delay_s, error_type
    "request_timeout",  # a request outlived its deadline; details: request_id, command
    "heartbeat_failed",  # an idle worker did not answer its heartbeat ping; it was killed; details: error
    "breaker_opened",  # details: reason
    "breaker_half_open",  # details: reason
    "breaker_closed",  # details: reason
)


@dataclass(frozen=True)
class PoolEvent:
    """One thing that happened in the pool; ``kind`` is one of ``EVENT_KINDS``."""

    kind: str
    worker_id: str | None = None
    pid: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class WorkerStats:
    """A snapshot of one worker."""

    worker_id: str
    pid: int
    state: str
    overflow: bool
    start_ms: float | None
    requests_served: int
    failures: int
    in_flight: int
    sessions: int


@dataclass
class Counters:
    """Running totals kept by the pool (copied into ``PoolStats``)."""

    requests: int = 0
    failures: int = 0
    crashes: int = 0
    start_failures: int = 0
    restarts: int = 0
    timeouts: int = 0
    retries: int = 0
    recycled: int = 0
    repins: int = 0

    def plus(self, other: Counters) -> Counters:
        """Field-wise sum (the loop's totals plus the direct lane's)."""
        return Counters(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of the pool: workers by state, per-worker start times, totals, breaker state."""

    state: str
    size: int
    workers_by_state: dict[str, int]
    workers: tuple[WorkerStats, ...]
    requests: int
    failures: int
    crashes: int
    start_failures: int
    restarts: int
    timeouts: int
    retries: int
    recycled: int
    repins: int
    sessions: int
    breaker_state: str
    breaker_opened: int
    time_to_ready_ms: float | None
    start_strategy: str

    @property
    def start_ms(self) -> dict[str, float | None]:
        """Milliseconds from spawn to hello, per worker id."""
        return {worker.worker_id: worker.start_ms for worker in self.workers}
