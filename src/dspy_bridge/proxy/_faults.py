"""Faults the host can ask the proxy to serve instead of the next N answers.

A ``Fault`` optionally waits (``delay``), then either drops the connection (``drop``), answers
with an HTTP error in Gemini's shape (``status``), or, with neither, lets the request through
as usual. Faults are served before any cassette is consulted and are never recorded; the error
bodies are Gemini's (``dspy_bridge._gemini``).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Fault", "FaultQueue"]


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do instead of the next ``times`` answers.

    ``Fault(status=429, times=2)`` answers two calls with Gemini's 429;
    ``Fault(drop=True)`` closes the next connection unanswered;
    ``Fault(delay=2.0)`` holds the next call two seconds, then answers it normally;
    ``retry_after`` adds Gemini's RetryInfo detail; on a 429 also the ``Retry-After`` header the proxy itself
    adds when it passes an upstream 429 on (Gemini sends none), so ``retry_after=0`` keeps DSPy's back-off short.
    """

    status: int | None = None
    delay: float = 0.0
    drop: bool = False
    times: int = 1
    message: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"Fault status must be an HTTP error (400-599), not {self.status}")
        if self.drop and self.status is not None:
            raise ValueError("a Fault either drops the connection or answers with a status, not both")
        if self.delay < 0:
            raise ValueError("Fault delay must be >= 0 seconds")
        if self.times < 1:
            raise ValueError("Fault times must be >= 1")
        if self.status is None and not self.drop and self.delay == 0:
            raise ValueError("an empty Fault does nothing: give status=, drop=True or delay=")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        known = {"status", "delay", "drop", "times", "message", "retry_after"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Fault field(s) {unknown}; expected some of {sorted(known)}")
        return cls(**data)


class FaultQueue:
    """Thread-safe queue of single-shot faults (a ``times=N`` fault fills N slots)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()

    def extend(self, faults: list[Fault]) -> int:
        with self._lock:
            for fault in faults:
                self._queue.extend([fault] * fault.times)
            return len(self._queue)

    def pop(self) -> Fault | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def clear(self) -> int:
        with self._lock:
            dropped = len(self._queue)
            self._queue.clear()
            return dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)
