"""Blocking frame reader/writer over raw file descriptors (the worker side).

Kept apart from the asyncio pair (``_async_streams``) so a worker never imports asyncio.
Both drive the same sans-IO ``FrameDecoder``; ``None`` means a clean end of stream.
"""

from __future__ import annotations

import os
import threading
from collections import deque

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

from dspy_bridge.protocol._codec import Codec
from dspy_bridge.protocol._frames import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame

__all__ = ["FrameReader", "FrameWriter"]

_CHUNK = 256 * 1024


class FrameReader:
    """Blocking reads from a file descriptor; one decoded message per ``read()``."""

    def __init__(self, fd: int, codec: Codec, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.fd = fd
        self.codec = codec
        self.decoder = FrameDecoder(max_frame_size)
        self._ready: deque[bytes] = deque()

    def read_payload(self) -> bytes | None:
        """The next whole payload, or ``None`` at a clean end of stream (raises if cut mid-frame)."""
        while not self._ready:
            chunk = os.read(self.fd, _CHUNK)
            if not chunk:
                self.decoder.check_eof()
                return None
            self._ready.extend(self.decoder.feed(chunk))
        return self._ready.popleft()

    @property
    def has_ready(self) -> bool:
        """Whole payloads are already read and waiting: the next ``read_payload`` will not block."""
        return bool(self._ready)

    def read(self) -> dict[str, Any] | None:
        payload = self.read_payload()
        return None if payload is None else self.codec.loads(payload)


class FrameWriter:
    """Blocking, thread-safe whole-frame writes to a file descriptor."""

    def __init__(self, fd: int, codec: Codec, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.fd = fd
        self.codec = codec
        self.max_frame_size = max_frame_size
        self._lock = threading.Lock()

    def write(self, message: dict[str, Any]) -> None:
        self.write_payload(self.codec.dumps(message))

    def write_payload(self, payload: bytes) -> None:
        self.write_frames(encode_frame(payload, self.max_frame_size))

    def write_frames(self, frames: bytes) -> None:
        """Whole frames already encoded (several joined: one syscall for a batch)."""
        data = memoryview(frames)
        with self._lock:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
