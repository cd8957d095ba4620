"""Streaming on the host side: the items a stream yields, ``Pool.stream`` and the blocking iterator.

    Pool.stream ── request("execute_program", {..., stream: true}, on_chunk=queue.put_nowait) ── one task
        │                     │ WorkerHandle reader: Chunk frame ─▶ on_chunk (in order, loop thread)
        │                     └ Response ─▶ the task's result (retries, timeouts, breaker as for any request)
        ▼
    async for item in ...:  StreamChunk(field, text) … StreamChunk, then StreamEnd(result)   or the error

The request path is the ordinary one (``Pool.request`` with ``on_chunk``), so every pool rule holds:
``timeout`` bounds each attempt from send to final Response (a slow consumer never trips it: chunks are
queued, not back-pressured), a worker that dies mid-stream fails it with ``WorkerCrashed``, closing the pool
fails it with ``PoolClosed``, and a retryable error is retried only while no chunk has been delivered
(``CountingSink``), so a consumer never sees a chunk twice. Only workers whose Hello lists ``stream``
are asked (``no_stream``). Only streamed requests pay for the queue and the task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue as queue_module
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dspy_bridge._exceptions import UsageError
from dspy_bridge.pool._config import UNSET, Unset
from dspy_bridge.pool._errors import usage_errors
from dspy_bridge.pool._worker import ChunkCallback
from dspy_bridge.protocol import _commands as commands

if TYPE_CHECKING:
    from dspy_bridge.pool._worker import WorkerHandle

__all__ = [
    "ChunkCallback",
    "CountingSink",
    "StreamChunk",
    "StreamEnd",
    "StreamEvent",
    "StreamingMixin",
    "iterate_blocking",
    "no_stream",
    "stream_args",
    "stream_events",
]


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One piece of output field ``field``, in the order the worker made it (as DSPy's ``StreamResponse``)."""

    field: str
    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last item of a stream: the whole ``execute_program`` result (``outputs``, ``usage``, …)."""

    result: dict[str, Any]

    @property
    def outputs(self) -> dict[str, Any]:
        outputs: dict[str, Any] = self.result.get("outputs") or {}
        return outputs


StreamEvent = StreamChunk | StreamEnd
_DONE = object()


class CountingSink:
    """Passes chunks on and counts them: an attempt that delivered one is never retried."""

    __slots__ = ("delivered", "on_chunk")

    def __init__(self, on_chunk: ChunkCallback) -> None:
        self.on_chunk = on_chunk
        self.delivered = 0

    def __call__(self, field: str, text: str) -> None:
        self.delivered += 1
        self.on_chunk(field, text)


def no_stream(handle: WorkerHandle) -> UsageError:
    mode = handle.hello.mode if handle.hello is not None else "?"
    return UsageError(
        f"worker {handle.worker_id} ({mode}) cannot stream: its hello does not list the 'stream' capability "
        "(an older dspy-bridge worker?); use execute() instead, or run workers of this dspy-bridge version"
    )


def stream_args(program_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """``execute_program`` args asking for chunk frames (``UsageError`` on bad arguments)."""
    with usage_errors():
        return {**commands.execute_args(program_id, inputs), "stream": True}


class Requester(Protocol):
    """What the Pool's command and streaming mixins need of it: its ``request``."""

    def request(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
        on_chunk: ChunkCallback | None = None,
    ) -> Awaitable[Any]: ...


async def stream_events(
    request: Callable[..., Awaitable[Any]],
    args: dict[str, Any],
    *,
    session_id: str | None,
    context: dict[str, Any] | None,
    timeout: float | Unset | None,
) -> AsyncIterator[StreamEvent]:
    """Send one streamed ``execute_program`` through ``request`` and yield its chunks, then its end."""
    items: asyncio.Queue[Any] = asyncio.Queue()

    def on_chunk(field: str, text: str) -> None:
        items.put_nowait(StreamChunk(field, text))

    task = asyncio.ensure_future(
        request("execute_program", args, session_id=session_id, context=context, timeout=timeout, on_chunk=on_chunk)
    )
    task.add_done_callback(lambda _: items.put_nowait(_DONE))
    try:
        while True:
            item = await items.get()
            if item is _DONE:
                yield StreamEnd(task.result())
                return
            yield item
    finally:
        if not task.done():
            task.cancel()  # the consumer left early: abandon the request (its slot frees when it answers)
        elif not task.cancelled():
            task.exception()  # retrieved, whether or not the consumer got that far


class StreamingMixin:
    """``Pool.stream`` (kept here so the coordinator stays one screenful shorter)."""

    def stream(
        self: Requester,
        program_id: str,
        inputs: dict[str, Any],
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
    ) -> AsyncIterator[StreamEvent]:
        """Run a program streaming: ``StreamChunk(field, text)`` items in order, then one ``StreamEnd(result)``.

        Usage::

            async for item in pool.stream(program_id, {"question": "…"}, session_id="t1"):
                if isinstance(item, StreamChunk):
                    print(item.field, item.text)
                else:
                    outputs = item.outputs

        As ``execute`` otherwise: a timeout (``RequestTimeout``), a worker dying (``WorkerCrashed``), the pool
        closing (``PoolClosed``) or an error Response (``HandlerError``) end the iteration by raising, after the
        chunks that came before. A retryable error is retried only before the first chunk. ``UsageError`` if
        the worker lacks the ``stream`` capability. Leaving the loop early abandons the request.
        """
        return stream_events(
            self.request, stream_args(program_id, inputs), session_id=session_id, context=context, timeout=timeout
        )


def iterate_blocking(submit: Callable[[ChunkCallback], concurrent.futures.Future[Any]]) -> Iterator[StreamEvent]:
    """A blocking iterator over one streamed request: ``submit(on_chunk)`` starts it on the pool's loop.

    Chunks cross threads through a queue; the final result (or the error) follows them. Leaving the loop
    early cancels the request.
    """
    items: queue_module.SimpleQueue[Any] = queue_module.SimpleQueue()

    def on_chunk(field: str, text: str) -> None:
        items.put(StreamChunk(field, text))

    future = submit(on_chunk)
    future.add_done_callback(lambda _: items.put(_DONE))
    try:
        while True:
            item = items.get()
            if item is _DONE:
                yield StreamEnd(future.result())
                return
            yield item
    finally:
        if not future.done():
            future.cancel()
