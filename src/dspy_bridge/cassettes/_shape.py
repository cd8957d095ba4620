"""Is parsed cassette data well formed? A hand-written check of the schema in ``_models``, without pydantic.

It is conservative: ``True`` only for data the pydantic models certainly accept (exact types, string keys);
anything it doubts is handed to the models, which either accept it after all or explain what is wrong with
a position. So a valid cassette never imports pydantic, and errors read exactly as before.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from typing import Any

from dspy_bridge.protocol._taxonomy import ErrorType

__all__ = ["well_formed"]

_TOP = frozenset({"version", "meta", "interactions"})
_INTERACTION = frozenset({"request", "response"})
_REQUEST = frozenset({"command", "session", "program", "model", "args"})
_RESPONSE = frozenset({"ok", "result", "error", "chunks"})
_ERROR = frozenset({"type", "message", "retryable", "details"})
_CHUNK = frozenset({"field", "text"})
_ERROR_TYPES = frozenset(item.value for item in ErrorType)


def _str_or_none(value: Any) -> bool:
    return value is None or type(value) is str


def _str_keyed(value: Any) -> bool:
    return type(value) is dict and all(type(key) is str for key in value)


def _meta(meta: Any) -> bool:
    return (
        _str_keyed(meta)
        and type(meta.get("created")) is str
        and type(meta.get("dspy_bridge_version")) is str
        and _str_or_none(meta.get("dspy_version"))
        and _str_or_none(meta.get("model"))
        and type(meta.get("recorded_against", "")) is str
    )


def _request(request: Any) -> bool:
    if type(request) is not dict or not request.keys() <= _REQUEST:
        return False
    command = request.get("command")
    program = request.get("program")
    return (
        type(command) is str
        and command != ""
        and _str_or_none(request.get("session"))
        and (program is None or _str_keyed(program))
        and _str_or_none(request.get("model"))
        and _str_keyed(request.get("args", {}))
    )


def _error(error: Any) -> bool:
    if type(error) is not dict or not error.keys() <= _ERROR:
        return False
    details = error.get("details")
    kind = error.get("type")
    return (
        type(kind) is str
        and kind in _ERROR_TYPES
        and type(error.get("message")) is str
        and type(error.get("retryable", False)) is bool
        and (details is None or _str_keyed(details))
    )


def _chunk(chunk: Any) -> bool:
    return type(chunk) is dict and chunk.keys() == _CHUNK and type(chunk["field"]) is str and type(chunk["text"]) is str


def _response(response: Any) -> bool:
    if type(response) is not dict or not response.keys() <= _RESPONSE:
        return False
    ok = response.get("ok")
    error = response.get("error")
    chunks = response.get("chunks")
    if type(ok) is not bool or (ok and error is not None) or (not ok and error is None):
        return False
    if error is not None and not _error(error):
        return False
    return chunks is None or (type(chunks) is list and all(_chunk(chunk) for chunk in chunks))


def well_formed(data: Any) -> bool:
    """``True`` if ``data`` (a parsed cassette) certainly matches the schema; ``False`` means "ask pydantic"."""
    if type(data) is not dict or not data.keys() <= _TOP:
        return False
    if type(data.get("version")) is not int or not _meta(data.get("meta")):
        return False
    interactions = data.get("interactions", [])
    if type(interactions) is not list:
        return False
    for item in interactions:
        if type(item) is not dict or item.keys() != _INTERACTION:
            return False
        if not _request(item["request"]) or not _response(item["response"]):
            return False
    return True
