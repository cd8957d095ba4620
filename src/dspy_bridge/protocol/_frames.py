"""Sans-IO framing: a 4-byte big-endian unsigned length, then the payload.

Both the asyncio readers of the pool and the blocking reads of the worker drive the same
``FrameDecoder``; it never does I/O and never allocates more than the configured maximum.
"""

from __future__ import annotations

import struct

from dspy_bridge._exceptions import FrameTooLarge, MalformedFrame

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "HEADER_SIZE", "FrameDecoder", "encode_frame"]

DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
HEADER_SIZE = 4
_HEADER = struct.Struct(">I")


def encode_frame(payload: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Prefix ``payload`` with its length; refuse payloads the peer would reject anyway."""
    if len(payload) > max_frame_size:
        raise FrameTooLarge(
            f"refusing to send a {len(payload)}-byte frame: the maximum is {max_frame_size} bytes; "
            "send less data per request or raise max_frame_size on both ends"
        )
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Accumulates bytes with ``feed`` and returns every whole frame payload they complete."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._expected: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the payloads of all frames now complete (possibly none)."""
        self._buffer += data
        frames: list[bytes] = []
        while True:
            if self._expected is None:
                if len(self._buffer) < HEADER_SIZE:
                    return frames
                (length,) = _HEADER.unpack_from(self._buffer)
                if length > self.max_frame_size:
                    raise FrameTooLarge(
                        f"incoming frame announces {length} bytes, above the maximum of "
                        f"{self.max_frame_size}; the stream is not a dspy-bridge stream or the peer "
                        "uses a larger max_frame_size"
                    )
                del self._buffer[:HEADER_SIZE]
                self._expected = length
            if len(self._buffer) < self._expected:
                return frames
            frames.append(bytes(self._buffer[: self._expected]))
            del self._buffer[: self._expected]
            self._expected = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer) + (HEADER_SIZE if self._expected is not None else 0)

    def check_eof(self) -> None:
        """Call at end of stream: raise if it stopped in the middle of a frame."""
        if self._expected is not None:
            raise MalformedFrame(
                f"stream ended inside a frame: got {len(self._buffer)} of {self._expected} payload bytes "
                "(the peer died or closed the pipe mid-write)"
            )
        if self._buffer:
            raise MalformedFrame(
                f"stream ended inside a frame header: got {len(self._buffer)} of {HEADER_SIZE} length bytes"
            )
