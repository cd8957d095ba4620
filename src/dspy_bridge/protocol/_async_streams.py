"""Asyncio frame reader/writer over a subprocess's streams (the pool side).

Drives the same sans-IO ``FrameDecoder`` as the blocking pair; ``None`` means a clean end of stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from dspy_bridge.protocol._codec import Codec
from dspy_bridge.protocol._frames import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame

__all__ = ["AsyncFrameReader", "AsyncFrameWriter"]

_CHUNK = 256 * 1024


class AsyncFrameReader:
    """Reads decoded messages from an ``asyncio.StreamReader``."""

    def __init__(
        self, reader: asyncio.StreamReader, codec: Codec, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        self.reader = reader
        self.codec = codec
        self.decoder = FrameDecoder(max_frame_size)
        self._ready: deque[bytes] = deque()

    async def read(self) -> dict[str, Any] | None:
        """The next message, or ``None`` at a clean end of stream."""
        while not self._ready:
            chunk = await self.reader.read(_CHUNK)
            if not chunk:
                self.decoder.check_eof()
                return None
            self._ready.extend(self.decoder.feed(chunk))
        return self.codec.loads(self._ready.popleft())


class AsyncFrameWriter:
    """Writes whole frames to an ``asyncio.StreamWriter``; ``drain`` applies back-pressure."""

    def __init__(
        self, writer: asyncio.StreamWriter, codec: Codec, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        self.writer = writer
        self.codec = codec
        self.max_frame_size = max_frame_size

    def write_nowait(self, message: dict[str, Any]) -> None:
        self.writer.write(encode_frame(self.codec.dumps(message), self.max_frame_size))

    async def write(self, message: dict[str, Any]) -> None:
        self.write_nowait(message)
        await self.writer.drain()
