"""One shared pool per mode per pytest process, started lazily or warmed in the background.

The seed started 6–8 workers per test, one at a time. Here a process owns at most one mock pool and one
real pool for the whole run; a real pool starts in a background thread right after collection when any
selected test needs it, so it warms while mock tests run. Every start is timed so the terminal summary
can say how much wall time went to starting workers and how much tests actually waited for it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspy_bridge.pool import SyncPool

__all__ = ["BridgePools", "PoolRecord", "env_names"]

log = logging.getLogger("dspy_bridge.pytest")

_POOL_MODE = {"mock": "mock", "integration": "real"}


def env_names(setting: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """The ``secret_env`` setting (``"A, B"`` or ``A B`` from ini/env/CLI) as a tuple of names."""
    if setting is None:
        return ()
    parts = setting.replace(",", " ").split() if isinstance(setting, str) else setting
    return tuple(name.strip() for name in parts if name.strip())


@dataclass
class PoolRecord:
    """What the summary reports about one pool."""

    kind: str  # "mock" | "integration"
    workers: int
    strategy: str
    started_at: float = 0.0
    ready_s: float | None = None
    waited_s: float = 0.0  # time tests were blocked waiting for this pool to be ready
    background: bool = False
    error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class BridgePools:
    def __init__(
        self,
        workers: int,
        strategy: str,
        env: dict[str, str] | None = None,
        *,
        worker_id_prefix: str = "",
        secret_env: str | tuple[str, ...] | list[str] | None = None,
        allowed_modules: str | tuple[str, ...] | list[str] | None = None,
    ) -> None:
        self.workers = workers
        self.strategy = strategy
        self.env = dict(env or {})
        self.secret_env = env_names(secret_env)  # ini bridge_secret_env: more names workers never inherit
        self.allowed_modules = env_names(allowed_modules)  # ini bridge_allowed_modules: user modules workers import
        self.worker_id_prefix = worker_id_prefix  # "gw0-" under xdist: worker ids unique across processes
        self.records: dict[str, PoolRecord] = {}
        self._pools: dict[str, SyncPool] = {}
        self._ready: dict[str, threading.Event] = {}
        self._errors: dict[str, BaseException] = {}
        self._lock = threading.Lock()

    def _config(self, kind: str) -> Any:
        from dspy_bridge.pool import PoolConfig

        options: dict[str, Any] = {
            "size": self.workers,
            "mode": _POOL_MODE[kind],
            "env": self.env,
            "secret_env": self.secret_env,
            "allowed_modules": self.allowed_modules,
        }
        if self.worker_id_prefix:
            options["worker_id_prefix"] = self.worker_id_prefix
        if kind == "integration":
            options["start_strategy"] = self.strategy
        else:
            # A replayed retryable error must fail the test as recorded, not consume the next recording.
            options["retries"] = 0
        return PoolConfig(**options)

    def _start(self, kind: str) -> None:
        from dspy_bridge.pool import SyncPool

        record = self.records[kind]
        try:
            pool = SyncPool(self._config(kind))
            pool.start()
            self._pools[kind] = pool
            record.ready_s = time.perf_counter() - record.started_at
            log.info("%s pool ready: %d workers in %.3f s", kind, self.workers, record.ready_s)
        except BaseException as exc:  # the waiting test re-raises it with context
            record.error = f"{type(exc).__name__}: {exc}"
            self._errors[kind] = exc
        finally:
            self._ready[kind].set()

    def warm(self, kind: str) -> None:
        """Start the ``kind`` pool in a background thread (no-op if already started)."""
        self._begin(kind, background=True)

    def _begin(self, kind: str, *, background: bool) -> bool:
        with self._lock:
            if kind in self._ready:
                return False
            self._ready[kind] = threading.Event()
            strategy = self.strategy if kind == "integration" else "spawn"
            self.records[kind] = PoolRecord(
                kind=kind,
                workers=self.workers,
                strategy=strategy,
                started_at=time.perf_counter(),
                background=background,
            )
        if background:
            threading.Thread(target=self._start, args=(kind,), name=f"bridge-warm-{kind}", daemon=True).start()
        return True

    def get(self, kind: str) -> SyncPool:
        """The ``kind`` pool, starting it (or waiting for its warm-up) if needed."""
        started_here = self._begin(kind, background=False)
        waited_from = time.perf_counter()
        if started_here:
            self._start(kind)
        self._ready[kind].wait()
        self.records[kind].waited_s += time.perf_counter() - waited_from
        if kind in self._errors:
            raise self._errors[kind]
        return self._pools[kind]

    def is_warming(self, kind: str) -> bool:
        event = self._ready.get(kind)
        return event is not None and not event.is_set()

    def close_all(self) -> None:
        for event in list(self._ready.values()):
            event.wait()  # a pool still warming is closed once started, never left behind
        for kind, pool in list(self._pools.items()):
            try:
                stats = pool.stats()
                self.records[kind].stats = {
                    "requests_served": stats.requests,
                    "crashes": stats.crashes,
                    "restarts": stats.restarts,
                    "breaker_state": stats.breaker_state,
                    "start_strategy": getattr(stats, "start_strategy", None),
                }
            except Exception as exc:  # stats are best effort; closing is not
                log.warning("could not read %s pool stats: %s", kind, exc)
            pool.close()
        self._pools.clear()
