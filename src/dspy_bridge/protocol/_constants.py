"""Protocol constants both ends share (kept free of pydantic so the worker can import them)."""

from __future__ import annotations

__all__ = ["PROTOCOL_VERSION"]

PROTOCOL_VERSION = "1.0"
