"""The heartbeat: find an idle worker that stopped answering (SIGSTOP, a deadlock) before a request does.

Every ``heartbeat_interval`` seconds each worker that holds nothing (no request, no reservation) gets a
``ping`` on a reserved slot, so no user request can land on it meanwhile. No answer within
``heartbeat_timeout`` takes the ordinary timeout path: the worker is killed and replaced. Busy workers are
never pinged (their requests' own deadlines watch them), so the heartbeat stays off the hot path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from dspy_bridge._exceptions import BridgeError

if TYPE_CHECKING:
    from dspy_bridge.pool._worker import WorkerHandle

__all__ = ["HeartbeatMixin"]

log = logging.getLogger("dspy_bridge.pool")


class HeartbeatMixin:
    """Mixed into ``Pool``; uses its slots, supervisor and ``_call``."""

    _heartbeat_task: asyncio.Task[None] | None = None

    def _start_heartbeat(self) -> None:
        interval = self.config.heartbeat_interval  # type: ignore[attr-defined]
        if interval is not None and self._heartbeat_task is None:
            self._heartbeat_task = asyncio.get_running_loop().create_task(
                self._heartbeat(interval), name="pool-heartbeat"
            )

    async def _stop_heartbeat(self) -> None:
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _heartbeat(self, interval: float) -> None:
        while self.running:  # type: ignore[attr-defined]
            await asyncio.sleep(interval)
            idle = [
                handle
                for handle in self._supervisor.workers  # type: ignore[attr-defined]
                if handle.accepts_work() and self._slots.load(handle) == 0  # type: ignore[attr-defined]
            ]
            if idle and self.running:  # type: ignore[attr-defined]
                await asyncio.gather(*(self._beat(handle) for handle in idle))

    async def _beat(self, handle: WorkerHandle) -> None:
        slots: Any = self._slots  # type: ignore[attr-defined]
        if not handle.accepts_work() or slots.load(handle) != 0:
            return
        slots.reserve(handle)
        timeout = self.config.heartbeat_timeout  # type: ignore[attr-defined]
        try:
            await self._call(handle, "ping", {}, None, None, timeout)  # type: ignore[attr-defined]
        except BridgeError as exc:  # RequestTimeout: the worker was killed and will be replaced
            self.emit("heartbeat_failed", handle, error=type(exc).__name__)  # type: ignore[attr-defined]
            log.warning("worker %s (pid %d) failed its heartbeat: %s", handle.worker_id, handle.pid, exc)
