"""dspy-bridge: run DSPy programs in a pool of worker processes, and test them against mock workers.

The public surface is small: ``Pool`` (and ``PoolConfig``), ``Cassette``, ``RecordMode``, the
exceptions and ``__version__``. Everything loads lazily so that ``python -m dspy_bridge.worker
--mode mock`` imports neither pydantic nor the pool.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs a mock worker ~10 ms

from dspy_bridge._exceptions import (
    BridgeError,
    CassetteCorrupt,
    CassetteError,
    CassetteMiss,
    CircuitOpen,
    FrameTooLarge,
    HandlerError,
    MalformedFrame,
    PoolClosed,
    PoolError,
    ProtocolError,
    RemoteTraceback,
    RequestTimeout,
    SecretLeak,
    UsageError,
    VersionMismatch,
    WorkerCrashed,
    WorkerError,
    WorkerStartupFailed,
)
from dspy_bridge._version import __version__

if TYPE_CHECKING:
    from typing import Any

    from dspy_bridge._client import Bridge
    from dspy_bridge._modes import RecordMode
    from dspy_bridge._result import Result
    from dspy_bridge.cassettes import Cassette
    from dspy_bridge.pool import Pool, PoolConfig, SyncPool

__all__ = [
    "Bridge",
    "BridgeError",
    "Cassette",
    "CassetteCorrupt",
    "CassetteError",
    "CassetteMiss",
    "CircuitOpen",
    "FrameTooLarge",
    "HandlerError",
    "MalformedFrame",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolError",
    "ProtocolError",
    "RecordMode",
    "RemoteTraceback",
    "RequestTimeout",
    "Result",
    "SecretLeak",
    "SyncPool",
    "UsageError",
    "VersionMismatch",
    "WorkerCrashed",
    "WorkerError",
    "WorkerStartupFailed",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """The heavy names load on first use, each by a plain import (so the import graph sees it)."""
    if name == "Bridge":
        from dspy_bridge._client import Bridge

        return Bridge
    if name == "Result":
        from dspy_bridge._result import Result

        return Result
    if name in ("Pool", "PoolConfig", "SyncPool"):
        from dspy_bridge import pool

        return getattr(pool, name)
    if name == "Cassette":
        from dspy_bridge.cassettes import Cassette

        return Cassette
    if name == "RecordMode":
        from dspy_bridge._modes import RecordMode  # a leaf: no pydantic for the plugin's sake

        return RecordMode
    raise AttributeError(f"module 'dspy_bridge' has no attribute {name!r}")
