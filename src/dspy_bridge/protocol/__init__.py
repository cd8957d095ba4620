"""The wire contract between a host and its workers: frames, codecs, messages, program ids, signatures.

Imports nothing else of ours but the leaf ``dspy_bridge._exceptions``. The pydantic message
models load lazily, so the worker can use frames and codecs without paying for pydantic.
"""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing would cost a mock worker ~10 ms at start

from dspy_bridge.protocol._codec import CODECS, Codec, get_codec
from dspy_bridge.protocol._constants import PROTOCOL_VERSION
from dspy_bridge.protocol._frames import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from dspy_bridge.protocol._programs import canonical_program, normalize_signature, program_id_for
from dspy_bridge.protocol._taxonomy import ErrorType

if TYPE_CHECKING:
    from typing import Any

    from dspy_bridge.protocol._messages import (
        Chunk,
        ErrorInfo,
        Goodbye,
        Hello,
        Request,
        Response,
        parse_request,
        parse_worker_message,
    )

__all__ = [
    "CODECS",
    "DEFAULT_MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "Chunk",
    "Codec",
    "ErrorInfo",
    "ErrorType",
    "FrameDecoder",
    "Goodbye",
    "Hello",
    "Request",
    "Response",
    "canonical_program",
    "encode_frame",
    "get_codec",
    "normalize_signature",
    "parse_request",
    "parse_worker_message",
    "program_id_for",
]

_LAZY = {
    "Chunk",
    "ErrorInfo",
    "Goodbye",
    "Hello",
    "Request",
    "Response",
    "parse_request",
    "parse_worker_message",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from dspy_bridge.protocol import _messages

        return getattr(_messages, name)
    raise AttributeError(f"module 'dspy_bridge.protocol' has no attribute {name!r}")
