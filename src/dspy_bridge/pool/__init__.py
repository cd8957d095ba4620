"""The host side of dspy-bridge: a pool of worker processes (asyncio ``Pool``, blocking ``SyncPool``).

See ``_pool.py`` for the data flow; ``PoolConfig`` documents every option.
"""

from __future__ import annotations

from dspy_bridge.pool._breaker import BreakerState, CircuitBreaker
from dspy_bridge.pool._config import UNSET, PoolConfig, Unset
from dspy_bridge.pool._pool import Pool, PoolState
from dspy_bridge.pool._spawn import (
    Launcher,
    SpawnLauncher,
    WorkerProcess,
    build_worker_command,
    default_command_prefix,
    worker_environment,
)
from dspy_bridge.pool._stats import EVENT_KINDS, PoolEvent, PoolStats, WorkerStats
from dspy_bridge.pool._streaming import StreamChunk, StreamEnd, StreamEvent
from dspy_bridge.pool._sync import SyncPool
from dspy_bridge.pool._worker import WorkerHandle, WorkerState

__all__ = [
    "EVENT_KINDS",
    "UNSET",
    "BreakerState",
    "CircuitBreaker",
    "Launcher",
    "Pool",
    "PoolConfig",
    "PoolEvent",
    "PoolState",
    "PoolStats",
    "SpawnLauncher",
    "StreamChunk",
    "StreamEnd",
    "StreamEvent",
    "SyncPool",
    "Unset",
    "WorkerHandle",
    "WorkerProcess",
    "WorkerState",
    "WorkerStats",
    "build_worker_command",
    "default_command_prefix",
    "worker_environment",
]
