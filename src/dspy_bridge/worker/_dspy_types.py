"""Python values and types on the real worker's side of the wire.

``python_type`` turns a field's type text (the protocol's grammar) into the type DSPy builds a
signature with; ``plain`` turns whatever a DSPy program returns into msgpack/JSON-safe data;
``numbers`` keeps the token counts of a usage map. Kept apart from the handler set so types can
grow (pydantic models, History, Image) without touching how programs run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, time
from enum import Enum
from typing import Any, Literal

from dspy_bridge.protocol._signature import literal_choices
from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.worker._base import HandlerFailure

__all__ = ["numbers", "plain", "python_type"]

_SIMPLE_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
    "list[str]": list[str],
    "list[int]": list[int],
    "list[float]": list[float],
}
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack can carry


def python_type(type_text: str) -> Any:
    """The real Python type for a field's type text (``Literal[...]`` via ``typing.Literal``)."""
    if type_text in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[type_text]
    choices = literal_choices(type_text)
    if choices:
        return Literal[tuple(choices)]
    raise HandlerFailure(ErrorType.INVALID_REQUEST, f"unsupported field type {type_text!r}")


def plain(value: Any) -> Any:
    """A msgpack/JSON-safe copy of ``value``: pydantic models, enums, tuples and dates become plain data."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return str(value)  # str subclasses (DSPy's Reasoning, str enums) become plain str
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic models, without importing pydantic here
        return plain(model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    return str(value)


def numbers(usage: Mapping[str, Any]) -> dict[str, int | float]:
    """Token counts only (DSPy also reports ``None`` detail fields and nested dicts)."""
    return {
        key: value for key, value in usage.items() if isinstance(value, int | float) and not isinstance(value, bool)
    }
