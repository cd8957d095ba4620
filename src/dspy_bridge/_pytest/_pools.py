"""One shared pool per mode per pytest process, started lazily or warmed in the background.

The seed started 6–8 workers per test, one at a time. Here a process owns at most one mock pool and one
real pool for the whole run; a real pool starts in a background thread right after collection when any
selected test needs it, so it warms while mock tests run. Every start is timed so the terminal summary
can say how much wall time went to starting workers and how much tests actually waited for it.

Real pools run with the connect guard on (``PoolConfig.allowed_hosts``): their workers may reach the hosts
of ``bridge_allowed_hosts`` from the start, and the cassette proxy from the moment it exists — the proxy
starts lazily (with the first real test), usually after the pool, so ``allow_hosts`` sends its address to
every worker then (the pool keeps it as pool-wide state, so replacements get it before any request).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspy_bridge.pool import SyncPool

__all__ = ["BridgePools", "PoolRecord", "env_names", "parse_hosts"]

log = logging.getLogger("dspy_bridge.pytest")

_POOL_MODE = {"mock": "mock", "integration": "real"}
RUN_DAEMON_IDLE_S = 120.0  # a run-wide zygote outlives a crashed controller by at most this long


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


def parse_hosts(text: str | list[str] | None, source: str = "bridge_allowed_hosts") -> list[str]:
    """``"a:1, b"`` (commas or spaces) or a list → checked ``host:port``/``host`` entries; a bad one is a UsageError."""
    import pytest

    from dspy_bridge.protocol._commands import CommandError, allow_hosts_args

    if text is None:
        return []
    entries = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    try:
        return list(allow_hosts_args(entries)["hosts"])
    except CommandError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None


class BridgePools:
    def __init__(
        self,
        workers: int,
        strategy: str,
        env: dict[str, str] | None = None,
        *,
        worker_id_prefix: str = "",
        secret_env: str | tuple[str, ...] | list[str] | None = None,
        allowed_hosts: list[str] | None = None,
        run_dir: Path | None = None,
        allowed_modules: str | tuple[str, ...] | list[str] | None = None,
        request_timeout: float | None = None,
    ) -> None:
        self.workers = workers
        self.strategy = strategy
        self.env = dict(env or {})
        self.secret_env = env_names(secret_env)  # ini bridge_secret_env: more names workers never inherit
        self.allowed_modules = env_names(allowed_modules)  # ini bridge_allowed_modules: user modules workers import
        self.worker_id_prefix = worker_id_prefix  # "gw0-" under xdist: worker ids unique across processes
        self.run_dir = run_dir  # xdist: the run's private directory, where one zygote serves every process
        self.request_timeout = request_timeout  # the real pool's, when set (a recording run); else the default
        self.allowed_hosts = list(allowed_hosts or [])  # real pools: the guard is on; these plus the proxy
        self._late_hosts: list[str] = []  # allowed after the real pool's config was built (the proxy)
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
            options["allowed_hosts"] = [*self.allowed_hosts, *self._late_hosts]
            if self.request_timeout is not None:
                options["request_timeout"] = self.request_timeout
        else:
            # A replayed retryable error must fail the test as recorded, not consume the next recording.
            options["retries"] = 0
        return PoolConfig(**options)

    def _launcher(self, kind: str, config: Any) -> Any:
        """Under xdist, real workers fork from ONE zygote for the whole run (a daemon in the run's directory,
        started by whichever process needs it first, stopped by the controller); else the pool's own choice."""
        if kind != "integration" or self.run_dir is None or config.start_strategy == "spawn":
            return None
        from dspy_bridge.pool._daemon import daemon_start
        from dspy_bridge.pool._zygote import ZygoteLauncher

        info = daemon_start(
            directory=self.run_dir,
            idle_timeout=RUN_DAEMON_IDLE_S,
            extra_preload=config.preload_modules,
            secret_env=self.secret_env,
        )
        if not info.running:
            log.warning("no run-wide zygote (%s); this process starts its own", info)
            return None
        return ZygoteLauncher(config, daemon="require", runtime_dir=self.run_dir)

    def _start(self, kind: str) -> None:
        from dspy_bridge.pool import SyncPool

        record = self.records[kind]
        try:
            with self._lock:
                config = self._config(kind)
            pool = SyncPool(config, launcher=self._launcher(kind, config))
            pool.start()
            with self._lock:
                self._pools[kind] = pool
                late = [host for host in self._late_hosts if host not in (config.allowed_hosts or [])]
            if late:
                pool.allow_hosts(late)
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

    def allow_hosts(self, hosts: list[str]) -> None:
        """Let the real pool's workers also reach ``hosts`` — now if it runs, else from its start."""
        with self._lock:
            self._late_hosts.extend(host for host in hosts if host not in self._late_hosts)
            pool = self._pools.get("integration")
        if pool is not None:
            pool.allow_hosts(hosts)

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
