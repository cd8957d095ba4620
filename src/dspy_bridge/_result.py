"""``Result``: everything one ``execute_program`` returned, typed (``Bridge.execute(..., full=True)``).

The worker always sends the whole result (docs/programs-contract.md); ``Bridge.execute`` returns only its
``outputs`` unless asked for ``full=True``. ``Result.from_response`` reads the plain map ``Pool.execute``
returns, so the three faces share one reading. A mock worker's answer is what was recorded: a field the
recording lacks (an old cassette has no ``tool_calls``) comes back empty, never invented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Result"]


@dataclass(frozen=True)
class Result:
    """One program run: outputs, alternative completions (n > 1), usage per model, cost, calls, trace, tools."""

    outputs: dict[str, Any]
    completions: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    cost: float | None = None
    lm_calls: int | None = None
    trace: list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    source: str = "lm"
    elapsed_ms: float | None = field(default=None, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_response(cls, result: dict[str, Any]) -> Result:
        """Read an ``execute_program`` result map (unknown keys stay in ``raw``)."""
        cost = result.get("cost")
        calls = result.get("lm_calls")
        return cls(
            outputs=dict(result.get("outputs") or {}),
            completions=list(result.get("completions") or []),
            usage=dict(result.get("usage") or {}),
            cost=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
            lm_calls=calls if isinstance(calls, int) and not isinstance(calls, bool) else None,
            trace=list(result["trace"]) if isinstance(result.get("trace"), list) else None,
            tool_calls=list(result.get("tool_calls") or []),
            source=str(result.get("source", "lm")),
            elapsed_ms=result.get("elapsed_ms"),
            raw=dict(result),
        )

    def __getitem__(self, name: str) -> Any:
        """``result["answer"]``: an output field, as with the plain outputs map."""
        return self.outputs[name]
