"""Payload codecs: msgpack maps (default) and JSON (for debugging and DSPex-style hosts).

A codec turns one frame payload into one ``dict`` and back. Anything that is not a map with
string keys is a ``MalformedFrame``: the reader never crashes on hostile bytes.
"""

from __future__ import annotations

import msgpack

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any, Literal

    CodecName = Literal["msgpack", "json"]

from dspy_bridge._exceptions import MalformedFrame

__all__ = ["CODECS", "Codec", "clip", "get_codec"]

QUOTE_LIMIT = 512  # how much of an offending input any error message or log line may quote


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (saying how much was cut) and made ASCII-safe.

    Error replies and log lines quote hostile input through this, so no reply outgrows the frame
    limit and no lone surrogate makes the reply itself unencodable.
    """
    if len(text) > limit:
        text = f"{text[:limit]}... [{len(text) - limit} more characters]"
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class Codec:
    """Encode/decode one payload; ``name`` is what goes on the command line and in Hello."""

    name: str = ""

    def dumps(self, message: dict[str, Any]) -> bytes:
        """Encode ``message``, or raise ``MalformedFrame`` if this codec cannot carry it (a lone surrogate
        or ``NaN`` in JSON, an int outside int64/uint64, nesting too deep, a type with no wire form)."""
        try:
            return self._dumps(message)
        except Exception as exc:  # every encoder failure means the same thing here
            raise MalformedFrame(f"cannot encode this message as {self.name}: {clip(repr(exc))}") from None

    def _dumps(self, message: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _loads(self, payload: bytes) -> Any:
        raise NotImplementedError

    def loads(self, payload: bytes) -> dict[str, Any]:
        """Decode ``payload`` into a map with string keys, or raise ``MalformedFrame``."""
        try:
            value = self._loads(payload)
        except Exception as exc:  # every decoder failure means the same thing here
            raise MalformedFrame(
                f"undecodable {self.name} payload ({len(payload)} bytes): {clip(repr(exc))}; "
                f"check that both ends use --codec {self.name}"
            ) from None
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise MalformedFrame(
                f"{self.name} payload decoded to {type(value).__name__}, expected a map with string keys"
            )
        return value


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")


# The encodings of a timestamp (extension -1), which msgpack decodes without calling ext_hook.
_TIMESTAMP_MARKS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _has_ext(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_ext(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_ext(item) for item in value)
    return isinstance(value, msgpack.Timestamp | msgpack.ExtType)


class MsgpackCodec(Codec):
    name = "msgpack"

    def _dumps(self, message: dict[str, Any]) -> bytes:
        return msgpack.packb(message, use_bin_type=True, datetime=False)  # type: ignore[no-any-return]

    def _loads(self, payload: bytes) -> Any:
        # strict_map_key=False: int keys are rejected by the shape check with a clearer message.
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=_refuse_ext)
        if any(mark in payload for mark in _TIMESTAMP_MARKS) and _has_ext(value):  # a scan only when it may hold one
            raise ValueError("msgpack extension type -1 (timestamp) is not part of the protocol")
        return value


class JsonCodec(Codec):
    name = "json"

    def _dumps(self, message: dict[str, Any]) -> bytes:
        import json

        # allow_nan=False: the spec forbids NaN/Infinity; strict UTF-8: a lone surrogate is refused.
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")

    def _loads(self, payload: bytes) -> Any:
        import json

        return json.loads(payload.decode("utf-8"))


CODECS: dict[str, Codec] = {"msgpack": MsgpackCodec(), "json": JsonCodec()}


def get_codec(name: str) -> Codec:
    """Return the codec called ``name``, or explain which names exist."""
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; choose one of {sorted(CODECS)}") from None
