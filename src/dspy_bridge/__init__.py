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
    "SecretLeak",
    "SyncPool",
    "UsageError",
    "VersionMismatch",
    "WorkerCrashed",
    "WorkerError",
    "WorkerStartupFailed",
    "__version__",
]

_LAZY = {
    "Bridge": "dspy_bridge._client",
    "Pool": "dspy_bridge.pool",
    "PoolConfig": "dspy_bridge.pool",
    "SyncPool": "dspy_bridge.pool",
    "Cassette": "dspy_bridge.cassettes",
    "RecordMode": "dspy_bridge._modes",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'dspy_bridge' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
