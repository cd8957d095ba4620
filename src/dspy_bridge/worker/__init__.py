"""Worker processes: one loop (``_loop.serve``), two handler sets (real DSPy, mock cassette).

The worker never imports the pool. Heavy imports (dspy) happen only in real mode, at start.
"""

from __future__ import annotations

from dspy_bridge.worker._base import BaseHandlers, HandlerFailure
from dspy_bridge.worker._main import build_handlers, run_worker

__all__ = ["BaseHandlers", "HandlerFailure", "build_handlers", "run_worker"]
