"""Deterministic, typed stand-in answers for programs that have no recording yet (opt-in).

Like DSPex's hash mocks, but every value has the type the signature asks for: the same program
definition and inputs always give the same outputs (a SHA-256 of their canonical JSON, never
Python's salted ``hash``), on every machine and in every process. Plain stdlib: a mock worker may
import this without paying for pydantic or YAML.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from dspy_bridge.protocol._programs import canonical_json
from dspy_bridge.protocol._signature import literal_choices

__all__ = ["synthetic_answer", "synthetic_value"]


class _Stream:
    """An endless, reproducible stream of integers derived from one seed text."""

    def __init__(self, seed: str) -> None:
        self._seed = seed.encode()
        self._counter = 0
        self._buffer: Iterator[int] = iter(())

    def next(self, bound: int) -> int:
        """A number in ``range(bound)``."""
        for value in self._buffer:
            return value % bound
        digest = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
        self._counter += 1
        self._buffer = (int.from_bytes(digest[i : i + 4], "big") for i in range(0, len(digest), 4))
        return self.next(bound)

    def word(self) -> str:
        return f"{self.next(16**6):06x}"


def synthetic_value(type_text: str, name: str, stream: _Stream) -> Any:
    """One value of ``type_text`` (``str``, ``int``, ``float``, ``bool``, ``list[...]``, ``dict``, ``Literal``)."""
    choices = literal_choices(type_text)
    if choices is not None:
        return choices[stream.next(len(choices))]
    kind = type_text.replace(" ", "")
    if kind == "int":
        return stream.next(100)
    if kind == "float":
        return stream.next(10_000) / 100
    if kind == "bool":
        return stream.next(2) == 1
    if kind.startswith("list"):
        item_type = kind[5:-1] if kind.startswith("list[") else "str"
        return [synthetic_value(item_type, f"{name} item", stream) for _ in range(2 + stream.next(2))]
    if kind == "dict":
        return {f"key_{stream.word()}": f"value {stream.word()}"}
    return f"synthetic {name} {stream.word()}"


def synthetic_answer(
    definition: dict[str, Any], outputs: Iterable[tuple[str, str]], inputs: dict[str, Any]
) -> dict[str, Any]:
    """A result map ``{outputs, usage, source}`` for ``definition`` run on ``inputs``.

    ``outputs`` are ``(name, type)`` pairs from the parsed signature. ``chain_of_thought``
    programs also get a ``reasoning`` output first, as DSPy's ``ChainOfThought`` adds one.
    """
    stream = _Stream(canonical_json({"program": definition, "inputs": inputs}))
    values: dict[str, Any] = {}
    if definition.get("program_type") == "chain_of_thought":
        values["reasoning"] = f"synthetic reasoning {stream.word()}: no recording exists for these inputs"
    for name, type_text in outputs:
        values[name] = synthetic_value(type_text, name, stream)
    return {"outputs": values, "usage": {}, "source": "synthetic"}
