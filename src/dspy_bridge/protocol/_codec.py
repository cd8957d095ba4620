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

__all__ = ["CODECS", "Codec", "get_codec"]


class Codec:
    """Encode/decode one payload; ``name`` is what goes on the command line and in Hello."""

    name: str = ""

    def dumps(self, message: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _loads(self, payload: bytes) -> Any:
        raise NotImplementedError

    def loads(self, payload: bytes) -> dict[str, Any]:
        """Decode ``payload`` into a map with string keys, or raise ``MalformedFrame``."""
        try:
            value = self._loads(payload)
        except Exception as exc:  # every decoder failure means the same thing here
            raise MalformedFrame(
                f"undecodable {self.name} payload ({len(payload)} bytes): {exc!r}; "
                f"check that both ends use --codec {self.name}"
            ) from exc
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise MalformedFrame(
                f"{self.name} payload decoded to {type(value).__name__}, expected a map with string keys"
            )
        return value


class MsgpackCodec(Codec):
    name = "msgpack"

    def dumps(self, message: dict[str, Any]) -> bytes:
        return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]

    def _loads(self, payload: bytes) -> Any:
        # strict_map_key=False: int keys are rejected by the shape check with a clearer message.
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)


class JsonCodec(Codec):
    name = "json"

    def dumps(self, message: dict[str, Any]) -> bytes:
        import json

        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()

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
