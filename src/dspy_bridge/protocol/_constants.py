"""Protocol constants both ends share (kept free of pydantic so the worker can import them)."""

from __future__ import annotations

__all__ = ["ALLOWED_MODULES_ENV", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = "1.0"

#: Comma-separated module-path prefixes a real worker may import user modules from (``PoolConfig.allowed_modules``).
#: The pool sets it in every worker's environment (spawned or forked); absent or empty = none allowed.
ALLOWED_MODULES_ENV = "DSPY_BRIDGE_ALLOWED_MODULES"
