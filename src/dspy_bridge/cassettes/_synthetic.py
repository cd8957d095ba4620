"""Deterministic, typed stand-in answers for programs that have no recording yet (opt-in).

Like DSPex's hash mocks, but every value has the type the signature asks for: the same program
definition and inputs always give the same outputs (a SHA-256 of their canonical JSON, never
Python's salted ``hash``), on every machine and in every process. Values are drawn from each output
field's JSON Schema (``protocol._schema.generate``): the recorded one when the cassette has it
(pydantic models included), else the one derived from the type text. Plain stdlib: a mock worker may
import this without paying for pydantic or YAML.
"""

from __future__ import annotations

import hashlib

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

from dspy_bridge.protocol._programs import canonical_json
from dspy_bridge.protocol._schema import generate, schema_for_type

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


def synthetic_value(type_text: str, name: str, stream: _Stream, schema: dict[str, Any] | None = None) -> Any:
    """One value of ``type_text`` (any type of the grammar), or of ``schema`` when given (it wins)."""
    return generate(schema if schema else schema_for_type(type_text), stream, name)


def synthetic_answer(
    definition: dict[str, Any],
    outputs: Iterable[tuple[str, str] | tuple[str, str, dict[str, Any] | None]],
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """A result map ``{outputs, output_types, usage, source}`` for ``definition`` run on ``inputs``.

    ``outputs`` are ``(name, type)`` pairs from the parsed signature, or ``(name, type, schema)``
    with the field's JSON Schema. ``chain_of_thought`` programs also get a ``reasoning`` output
    first, as DSPy's ``ChainOfThought`` adds one.
    """
    stream = _Stream(canonical_json({"program": definition, "inputs": inputs}))
    values: dict[str, Any] = {}
    if definition.get("program_type") == "chain_of_thought":
        values["reasoning"] = f"synthetic reasoning {stream.word()}: no recording exists for these inputs"
    types: dict[str, str] = {"reasoning": "str"} if values else {}
    for name, type_text, *schema in outputs:
        values[name] = synthetic_value(type_text, name, stream, schema[0] if schema else None)
        types[name] = type_text
    return {"outputs": values, "output_types": types, "usage": {"synthetic": True}, "source": "synthetic"}
